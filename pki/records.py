"""What the CA remembers: stations, authorities, certificates. Plain frozen values."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.serials import serial_hex

STATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,48}$")  # OCPP identity: URL-safe, <= 48


class CertificateStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"  # derived from notAfter, never stored


class CertificateSource(StrEnum):
    ISSUED = "issued"
    OBSERVED = "observed"


class AuthorityRole(StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    OCSP_SIGNER = "ocsp-signer"
    CSMS_SERVER = "csms-server"


REVOCATION_REASONS = tuple(
    r.value for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)
)


@dataclass(frozen=True)
class Station:
    id: str
    serial_number: str
    secc_id: str | None
    security_profile: int
    password_hash: str | None
    created_at: datetime
    allow_expired: bool = False
    """Admit this station with an expired certificate, so that it can renew it (OCPP
    A00.FR.429): its Boot is answered Pending until it has."""


@dataclass(frozen=True)
class IssuerName:
    """An issuer's name as certificate records keep it. Issuing CAs compute it once
    instead of parsing it out of every certificate they sign."""

    dn: str
    hash: str
    """SHA-256 of the DER name: with the serial, what identifies a certificate (the
    OCSP CertID and OCPP CertificateHashData name certificates this way)."""

    @classmethod
    def of(cls, name: x509.Name) -> IssuerName:
        return cls(name.rfc4514_string(), hashlib.sha256(name.public_bytes()).hexdigest())


@dataclass(frozen=True)
class CertificateRecord:
    serial: int
    issuer_dn: str
    issuer_ca: str | None
    subject_dn: str
    profile: str | None
    station_id: str | None
    not_before: datetime
    not_after: datetime
    renew_after: datetime
    status: CertificateStatus
    source: CertificateSource
    der: bytes
    fingerprint_sha256: str
    issuer_name_hash: str
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    """When a station presented this certificate at the TLS handshake (None: never)."""

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    def pem(self) -> str:
        return self.certificate().public_bytes(serialization.Encoding.PEM).decode()

    def effective_status(self, now: datetime) -> CertificateStatus:
        if self.status is CertificateStatus.VALID and now >= self.not_after:
            return CertificateStatus.EXPIRED
        return self.status

    @classmethod
    def from_certificate(
        cls,
        certificate: x509.Certificate,
        *,
        renew_after: datetime,
        source: CertificateSource,
        issuer_ca: str | None,
        profile: str | None,
        station_id: str | None,
        issuer_name: IssuerName | None = None,
        subject: x509.Name | None = None,
        validity: tuple[datetime, datetime] | None = None,
    ) -> CertificateRecord:
        """``issuer_name``, ``subject`` and ``validity`` save parsing them out of
        ``certificate`` when the caller knows them (the CA issuing); they must be the
        certificate's own."""
        der = certificate.public_bytes(serialization.Encoding.DER)
        issuer = issuer_name or IssuerName.of(certificate.issuer)
        return cls(
            serial=certificate.serial_number,
            issuer_dn=issuer.dn,
            issuer_ca=issuer_ca,
            subject_dn=(certificate.subject if subject is None else subject).rfc4514_string(),
            profile=profile,
            station_id=station_id,
            not_before=certificate.not_valid_before_utc if validity is None else validity[0],
            not_after=certificate.not_valid_after_utc if validity is None else validity[1],
            renew_after=renew_after,
            status=CertificateStatus.VALID,
            source=source,
            der=der,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            issuer_name_hash=issuer.hash,
        )


@dataclass(frozen=True)
class RevocationState:
    """What OCSP needs of a certificate record, and no more (it is read per request)."""

    status: CertificateStatus
    source: CertificateSource
    revoked_at: datetime | None
    reason: str | None


@dataclass(frozen=True)
class Authority:
    """A certificate the CA itself holds a key for: a CA, an OCSP signer, a server cert."""

    name: str
    role: AuthorityRole
    profile: str
    issuer: str | None
    key_name: str
    certificate_der: bytes
    created_at: datetime

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)


class RolloverState(StrEnum):
    OPEN = "open"
    """The next root exists and is being installed on stations; the old one is in force."""
    SWITCHED = "switched"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Rollover:
    """A root CA key rollover: the next root (its own key and a distinct name), and the
    link certificate -- the next root's name and key, signed by the root in force -- that
    stations checking AdditionalRootCertificateCheck need (OCPP M05.FR.09-16)."""

    id: int
    authority: str
    generation: int
    state: RolloverState
    key_name: str
    certificate_der: bytes
    link_der: bytes
    previous_der: bytes
    """The root in force when the rollover started: the link certificate's issuer."""
    started_at: datetime
    switched_at: datetime | None = None

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    def link(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.link_der)

    def previous(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.previous_der)


@dataclass(frozen=True)
class CertificateQuery:
    """Filters of `cert list`; None means no filter."""

    station_id: str | None = None
    station_ids: tuple[str, ...] | None = None
    """Any of these stations (a batch of `pkictl renew`)."""
    profile: str | None = None
    expiring_before: datetime | None = None
    serial: int | None = None
    serial_prefix: str | None = None
    """Serials (lower-case hex, as `serial_hex` writes them) starting with this."""
    limit: int | None = None


class TrustRole(StrEnum):
    STATION_CA = "station-ca"
    """Issues station TLS client certificates we did not issue (a factory CA)."""
    MO_ROOT = "mo-root"
    """An eMobility operator's root: contract certificates (ISO 15118, C07) under it."""
    V2G_ROOT = "v2g-root"
    """A V2G root of another PKI (e.g. Hubject's): contract chains may end there too."""

    @property
    def is_root(self) -> bool:
        return self is not TrustRole.STATION_CA


@dataclass(frozen=True)
class TrustAnchor:
    """A CA certificate the operator trusts for a role; we hold no key for it."""

    role: TrustRole
    der: bytes
    added_at: datetime

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def fingerprint_sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()
