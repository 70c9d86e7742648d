"""OCPP CertificateHashData: how stations and the CSMS name a certificate.

Accept leniently (either hex case, leading zeros in the serial), emit strictly
(lower-case hex, serial without leading zeros) -- OCPP-SECURITY.md, M03/M04. What a
station reported is also kept exactly as it was sent (`as_reported`): a
DeleteCertificateRequest names the certificate with the station's own bytes (M04: the
station looks the hash data up as it reported it; stations seen compare them
case-sensitively and answer NotFound to a lower-cased serialNumber). Comparisons (to
our CAs) use the normalised fields only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pki.serials import serial_hex

HASH_ALGORITHMS = {"SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}
OCPP_FIELDS = ("hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber")
MAX_FIELD = 128  # identifierString 128 (issuerNameHash, issuerKeyHash); serialNumber 40


@dataclass(frozen=True)
class CertificateHashData:
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str
    reported: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)
    """The four fields exactly as the station sent them (None: made here); not compared."""

    @classmethod
    def from_ocpp(cls, data: Mapping[str, object]) -> CertificateHashData:
        """Parse an OCPP CertificateHashDataType, normalising what the spec lets vary, and
        keep the fields as sent (`as_reported`)."""
        raw = {key: data.get(key) for key in OCPP_FIELDS}
        for key, value in raw.items():
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            if len(value) > MAX_FIELD:
                raise ValueError(f"{key}: {len(value)} characters, at most {MAX_FIELD}")
        algorithm = str(data.get("hashAlgorithm", "")).upper()
        if algorithm not in HASH_ALGORITHMS:
            raise ValueError(f"hashAlgorithm {algorithm!r} is not one of SHA256, SHA384, SHA512")
        size = hashlib.new(HASH_ALGORITHMS[algorithm]).digest_size * 2
        fields = {}
        for key in ("issuerNameHash", "issuerKeyHash"):
            value = str(data.get(key, "")).strip().lower()
            if len(value) != size or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(f"{key} must be {size} hex digits for {algorithm}")
            fields[key] = value
        serial = str(data.get("serialNumber", "")).strip().lower()
        if not serial or len(serial) > 40 or any(c not in "0123456789abcdef" for c in serial):
            raise ValueError("serialNumber must be 1 to 40 hex digits")
        return cls(
            hash_algorithm=algorithm,
            issuer_name_hash=fields["issuerNameHash"],
            issuer_key_hash=fields["issuerKeyHash"],
            serial_number=serial_hex(int(serial, 16)),
            reported=tuple((key, str(value)) for key, value in raw.items()),
        )

    def as_reported(self) -> dict[str, str]:
        """The hash data as the station reported it, byte for byte (strict form if it was
        made here): what a DeleteCertificateRequest must send back."""
        return dict(self.reported) if self.reported is not None else self.to_ocpp()

    def to_ocpp(self) -> dict[str, str]:
        return {
            "hashAlgorithm": self.hash_algorithm,
            "issuerNameHash": self.issuer_name_hash,
            "issuerKeyHash": self.issuer_key_hash,
            "serialNumber": self.serial_number,
        }


def public_key_bits(key: CertificatePublicKeyTypes) -> bytes:
    """The value of the subjectPublicKey BIT STRING, as OCSP CertID hashes it (RFC 6960)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise TypeError(f"unsupported issuer key type {type(key).__name__}")


def hash_data_for(
    certificate: x509.Certificate,
    issuer_public_key: CertificatePublicKeyTypes,
    algorithm: str = "SHA256",
) -> CertificateHashData:
    name = HASH_ALGORITHMS[algorithm]
    return CertificateHashData(
        hash_algorithm=algorithm,
        issuer_name_hash=hashlib.new(name, certificate.issuer.public_bytes()).hexdigest(),
        issuer_key_hash=hashlib.new(name, public_key_bits(issuer_public_key)).hexdigest(),
        serial_number=serial_hex(certificate.serial_number),
    )
