"""Building a certificate from a profile: fixed extensions, bounded validity, signing.

Only the profile decides the extensions; nothing from a request is copied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from pki.errors import IssuanceRefused, ReasonCode
from pki.keys import Signer, describe_public_key
from pki.policy import Profile
from pki.records import IssuerName

EKU_OIDS = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}


@dataclass(frozen=True)
class Issuer:
    """What signing needs to know of the issuing CA. ``certificate`` is None only while
    a self-signed root signs itself."""

    name: str
    certificate: x509.Certificate | None
    signer: Signer

    _extensions: dict[
        tuple[str, str, RevocationUrls | None, tuple[str, ...]],
        tuple[Profile, tuple[Extensions, Extensions]],
    ] = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def issuer_name(self) -> IssuerName | None:
        """The issuer name of the certificates this CA signs (None while self-signing)."""
        return IssuerName.of(self.certificate.subject) if self.certificate else None

    def extensions_for(
        self,
        profile: Profile,
        algorithm: str,
        urls: RevocationUrls | None,
        hosts: tuple[str, ...],
    ) -> tuple[Extensions, Extensions]:
        """The profile's fixed extensions for this issuer, built once: they are the same
        for every certificate the issuer signs under that profile."""
        key = (profile.name, algorithm, urls, hosts)
        cached = self._extensions.get(key)
        if cached is None or cached[0] is not profile:
            cached = (profile, _fixed_extensions(profile, self, algorithm, urls, hosts))
            self._extensions[key] = cached
        return cached[1]


@dataclass(frozen=True)
class RevocationUrls:
    """Where relying parties find revocation status; from the CA's base URL."""

    base_url: str

    @property
    def ocsp(self) -> str:
        return f"{self.base_url.rstrip('/')}/ocsp"

    def crl(self, issuer_name: str) -> str:
        return f"{self.base_url.rstrip('/')}/crl/{issuer_name}.crl"


def validity_window(
    profile: Profile,
    now: datetime,
    requested_days: int | None,
    issuer_not_after: datetime | None,
    *,
    spread_seed: int | None = None,
) -> tuple[datetime, datetime]:
    """notBefore backdated (errata: never in the future), notAfter capped by the issuer.

    With ``spread_seed`` (the serial) and no requested validity, notAfter comes up to
    the profile's `validity_spread_days` earlier, by an amount the seed fixes: the
    same certificate always gets the same validity, and a batch gets them spread."""
    days = profile.validity_days if requested_days is None else requested_days
    if not 0 < days <= profile.max_validity_days:
        raise IssuanceRefused(
            ReasonCode.VALIDITY_INVALID,
            f"validity of {days} days is outside 1..{profile.max_validity_days} for "
            f"profile {profile.name}",
            field="days",
        )
    whole_seconds = now.replace(microsecond=0)
    not_before = whole_seconds - timedelta(seconds=profile.backdate_seconds)
    not_after = whole_seconds + timedelta(days=days)
    if spread_seed is not None and requested_days is None and profile.validity_spread_days:
        not_after -= timedelta(seconds=spread_seed % (profile.validity_spread_days * 86400))
    if issuer_not_after is not None and not_after > issuer_not_after:
        not_after = issuer_not_after
    # Against the exact instant, not the truncated one: an issuer whose notAfter fell
    # earlier in the current second has expired, and must not sign.
    if not_after <= now:
        raise IssuanceRefused(
            ReasonCode.ISSUER_UNAVAILABLE,
            f"issuer of profile {profile.name} has expired ({issuer_not_after})",
            field="issuer",
        )
    return not_before, not_after


def _key_usage(names: Sequence[str]) -> x509.KeyUsage:
    chosen = set(names)
    return x509.KeyUsage(
        digital_signature="digitalSignature" in chosen,
        content_commitment="nonRepudiation" in chosen,
        key_encipherment="keyEncipherment" in chosen,
        data_encipherment="dataEncipherment" in chosen,
        key_agreement="keyAgreement" in chosen,
        key_cert_sign="keyCertSign" in chosen,
        crl_sign="cRLSign" in chosen,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


Extensions = tuple[tuple[x509.ExtensionType, bool], ...]


def _fixed_extensions(
    profile: Profile,
    issuer: Issuer,
    algorithm: str,
    urls: RevocationUrls | None,
    hosts: Sequence[str],
) -> tuple[Extensions, Extensions]:
    """The extensions a profile gives every certificate of ``issuer``: those before
    and those after the per-certificate subjectKeyIdentifier."""
    before: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length), True),
        (_key_usage(profile.key_usage_for(algorithm)), True),
    ]
    after: list[tuple[x509.ExtensionType, bool]] = []
    if issuer.certificate is not None:
        after.append(
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.signer.public_key()), False)
        )
    if profile.extended_key_usage:
        after.append(
            (x509.ExtendedKeyUsage([EKU_OIDS[n] for n in profile.extended_key_usage]), False)
        )
    if profile.kind == "ocsp-signer":
        after.append((x509.OCSPNoCheck(), False))
    if hosts:
        after.append((x509.SubjectAlternativeName(_alt_names(hosts)), False))
    if profile.revocation_info and urls is not None and issuer.certificate is not None:
        ocsp = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
        )
        crl = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl(issuer.name))],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        after.append((x509.AuthorityInformationAccess([ocsp]), False))
        after.append((x509.CRLDistributionPoints([crl]), False))
    return tuple(before), tuple(after)


def build_and_sign(
    *,
    profile: Profile,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: Issuer,
    serial: int,
    validity: tuple[datetime, datetime],
    urls: RevocationUrls | None,
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    issuer_name = issuer.certificate.subject if issuer.certificate else subject
    algorithm = describe_public_key(public_key).split(":")[0]
    before, after = issuer.extensions_for(profile, algorithm, urls, tuple(hosts))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
    )
    for extension, critical in before:
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    )
    for extension, critical in after:
        builder = builder.add_extension(extension, critical=critical)
    return issuer.signer.sign_certificate(builder, profile.signature_hash)
