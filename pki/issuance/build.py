"""Building a certificate from a profile: fixed extensions, bounded validity, signing.

Only the profile decides the extensions; nothing from a request is copied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from pki.errors import IssuanceRefused, ReasonCode
from pki.keys import Signer, describe_public_key
from pki.policy import Profile

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
) -> tuple[datetime, datetime]:
    """notBefore backdated (errata: never in the future), notAfter capped by the issuer."""
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
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length),
            critical=True,
        )
        .add_extension(_key_usage(profile.key_usage_for(algorithm)), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer.certificate is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.signer.public_key()),
            critical=False,
        )
    if profile.extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([EKU_OIDS[n] for n in profile.extended_key_usage]),
            critical=False,
        )
    if profile.kind == "ocsp-signer":
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_alt_names(hosts)), critical=False
        )
    if profile.revocation_info and urls is not None and issuer.certificate is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(urls.ocsp),
                    )
                ]
            ),
            critical=False,
        ).add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(urls.crl(issuer.name))],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return issuer.signer.sign_certificate(builder, profile.signature_hash)
