"""CA certificates the operator trusts beyond the ones this CA made: a manufacturer's
factory CA whose station certificates should be admitted (and then replaced by ours),
and the MO and V2G roots that contract certificates (ISO 15118) must lead to."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.errors import InputError
from pki.records import TrustAnchor, TrustRole
from pki.store import Store


class TrustService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(self, role: TrustRole, pem: bytes, actor: str) -> TrustAnchor:
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise InputError("file: not a PEM certificate") from None
        if len(certificates) != 1:
            raise InputError(f"file: holds {len(certificates)} certificates; give one CA per call")
        (certificate,) = certificates
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise InputError("file: not a CA certificate (basicConstraints CA:TRUE is required)")
        if role.is_root and not _self_signed(certificate):
            raise InputError(f"file: a {role.value} must be a self-signed root certificate")
        now = self._clock.now()
        if certificate.not_valid_after_utc <= now:
            raise InputError(
                f"file: the CA certificate expired at {certificate.not_valid_after_utc}"
            )
        anchor = TrustAnchor(role, certificate.public_bytes(Encoding.DER), now)
        await self._store.add_trust_anchor(
            anchor,
            AuditEvent(
                "trust.added",
                actor,
                f"trust:{role.value}",
                "ok",
                {
                    "subject": certificate.subject.rfc4514_string(),
                    "fingerprint_sha256": anchor.fingerprint_sha256,
                    "not_after": certificate.not_valid_after_utc.isoformat(),
                },
            ),
            now,
        )
        return anchor

    async def contract_roots(self) -> list[x509.Certificate]:
        """The roots contract certificate chains may end at (C07)."""
        return [a.certificate() for a in await self._store.trust_anchors() if a.role.is_root]

    async def list(self, role: TrustRole | None = None) -> list[TrustAnchor]:
        return await self._store.trust_anchors(role)


def _self_signed(certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(certificate)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
