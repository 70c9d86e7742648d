"""Key specifications and the Signer / KeyStore Protocols.

CA keys are only ever used through a Signer, so that a hardware (PKCS#11) backend can
replace the encrypted-file backend without touching the issuance code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509 import ocsp

from pki.errors import ConflictError, KeyAccessError

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp224r1": ec.SECP224R1,
    "secp192r1": ec.SECP192R1,
}

SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

HASHES: dict[str, type[SignatureHash]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class KeySpec:
    """A key type: ``ec:<curve>`` or ``rsa:<bits>``."""

    algorithm: Literal["ec", "rsa"]
    curve: str | None = None
    bits: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        algorithm, sep, param = text.partition(":")
        if not sep or not param:
            raise ValueError(f"key spec {text!r} is not 'ec:<curve>' or 'rsa:<bits>'")
        if algorithm == "ec":
            if param not in CURVES:
                raise ValueError(f"unknown curve {param!r} (known: {', '.join(CURVES)})")
            return cls("ec", curve=param)
        if algorithm == "rsa":
            if not param.isdigit() or int(param) < 1024:
                raise ValueError(f"RSA size {param!r} is not a number of bits >= 1024")
            return cls("rsa", bits=int(param))
        raise ValueError(f"unknown key algorithm {algorithm!r} (known: ec, rsa)")

    def __str__(self) -> str:
        return f"ec:{self.curve}" if self.algorithm == "ec" else f"rsa:{self.bits}"

    def generate(self) -> PrivateKeyTypes:
        if self.algorithm == "ec":
            assert self.curve is not None
            return ec.generate_private_key(CURVES[self.curve]())
        assert self.bits is not None
        return rsa.generate_private_key(public_exponent=65537, key_size=self.bits)


def describe_public_key(key: CertificatePublicKeyTypes) -> str:
    """The KeySpec text of a public key, or a plain description of an unsupported one."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec:{key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa:{key.key_size}"
    return type(key).__name__


def signature_parameters(
    key: PrivateKeyTypes, hash_name: str
) -> tuple[SignatureHash, padding.PSS | None]:
    """Hash and padding for signing with ``key``: RSA always signs RSA-PSS (A00.FR.5xx)."""
    algorithm = HASHES[hash_name]()
    if isinstance(key, rsa.RSAPrivateKey):
        return algorithm, padding.PSS(
            mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH
        )
    return algorithm, None


class Signer(Protocol):
    """A CA key, usable only to sign; the private key never leaves the backend."""

    @property
    def name(self) -> str: ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...

    def sign_certificate(
        self, builder: x509.CertificateBuilder, hash_name: str
    ) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder, hash_name: str
    ) -> x509.CertificateRevocationList: ...

    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, hash_name: str
    ) -> ocsp.OCSPResponse: ...


class KeyStore(Protocol):
    """Creates and opens named CA keys."""

    def create(self, name: str, spec: KeySpec) -> Signer:
        """Generate and persist a new key; refuses to overwrite an existing one."""
        ...

    def open(self, name: str) -> Signer:
        """A Signer for an existing key; raises KeyAccessError when it cannot be used."""
        ...

    def replace(self, name: str, spec: KeySpec) -> Signer:
        """A new key under an existing name: for the CSMS's TLS server keys, rotated at
        each renewal (never a CA key: a CA's key is its identity)."""
        ...


class InMemorySigner:
    """A Signer over a key object held in memory: the file backend's unit of work,
    and the whole backend for tests that run the CA in memory."""

    def __init__(self, name: str, key: PrivateKeyTypes) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError(f"unsupported CA key type {type(key).__name__}")
        self._name = name
        self._key = key

    @property
    def name(self) -> str:
        return self._name

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    def sign_certificate(
        self, builder: x509.CertificateBuilder, hash_name: str
    ) -> x509.Certificate:
        algorithm, rsa_padding = signature_parameters(self._key, hash_name)
        return builder.sign(self._key, algorithm, rsa_padding=rsa_padding)

    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, hash_name: str
    ) -> ocsp.OCSPResponse:
        # OCSP responses are signed PKCS#1 v1.5 for RSA: the builder takes no padding,
        # and the OCSP signers of the default policy are ECDSA anyway.
        return builder.sign(self._key, HASHES[hash_name]())

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder, hash_name: str
    ) -> x509.CertificateRevocationList:
        algorithm, rsa_padding = signature_parameters(self._key, hash_name)
        return builder.sign(self._key, algorithm, rsa_padding=rsa_padding)


class MemoryKeyStore:
    """KeyStore that keeps keys in a dict; the whole CA can run in memory with it."""

    def __init__(self) -> None:
        self._signers: dict[str, InMemorySigner] = {}

    def create(self, name: str, spec: KeySpec) -> Signer:
        if name in self._signers:
            raise ConflictError(f"key {name!r} exists")
        self._signers[name] = InMemorySigner(name, spec.generate())
        return self._signers[name]

    def open(self, name: str) -> Signer:
        try:
            return self._signers[name]
        except KeyError:
            raise KeyAccessError(f"no key named {name!r}") from None

    def replace(self, name: str, spec: KeySpec) -> Signer:
        self.open(name)
        self._signers[name] = InMemorySigner(name, spec.generate())
        return self._signers[name]
