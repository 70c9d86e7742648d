"""CRL encoding (RFC 5280 5): cryptography builds and signs, we only choose the content."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from pki.keys import Signer


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: str


def build_crl(
    *,
    issuer: x509.Certificate,
    signer: Signer,
    entries: Iterable[RevokedEntry],
    number: int,
    this_update: datetime,
    next_update: datetime,
    hash_name: str,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update.replace(microsecond=0))
        .next_update(next_update.replace(microsecond=0))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at.replace(microsecond=0))
        )
        if entry.reason != x509.ReasonFlags.unspecified.value:
            revoked = revoked.add_extension(
                x509.CRLReason(x509.ReasonFlags(entry.reason)), critical=False
            )
        builder = builder.add_revoked_certificate(revoked.build())
    return signer.sign_crl(builder, hash_name)
