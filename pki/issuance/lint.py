"""Checks on the signed certificate before it is recorded and released.

A certificate that fails here was never seen by anyone: it is discarded and the
request is refused, so a wrong policy cannot leak non-conforming certificates.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from pki.errors import IssuanceRefused, ReasonCode
from pki.policy import Profile

ISO15118_MAX_DER_BYTES = 800


def lint_issued(certificate: x509.Certificate, profile: Profile) -> None:
    if not profile.iso15118:
        return
    size = len(certificate.public_bytes(serialization.Encoding.DER))
    if size > ISO15118_MAX_DER_BYTES:
        raise IssuanceRefused(
            ReasonCode.ISO15118_VIOLATION,
            f"certificate is {size} bytes DER; ISO 15118-2 allows {ISO15118_MAX_DER_BYTES}",
            field="certificate.size",
        )
    key = certificate.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
        raise IssuanceRefused(
            ReasonCode.ISO15118_VIOLATION,
            "ISO 15118-2 requires a secp256r1 key",
            field="certificate.publicKey",
        )
    if certificate.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise IssuanceRefused(
            ReasonCode.ISO15118_VIOLATION,
            "ISO 15118-2 requires ecdsa-with-SHA256",
            field="certificate.signatureAlgorithm",
        )
    if not certificate.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT):
        raise IssuanceRefused(
            ReasonCode.ISO15118_VIOLATION,
            "ISO 15118-2 certificates need a DC attribute",
            field="certificate.subject.DC",
        )
