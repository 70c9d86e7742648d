"""Checks on a certificate signing request, each a small function that raises
IssuanceRefused with a reason code and the field it is about."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pki.errors import IssuanceRefused, ReasonCode
from pki.keys import describe_public_key
from pki.policy import KeyPolicy

MAX_CSR_CHARS = 5500  # OCPP SignCertificateRequest.csr maxLength
PEM_HEADER = "-----BEGIN CERTIFICATE REQUEST-----"
MIN_EC_BITS = 224


def parse_csr(pem: str) -> x509.CertificateSigningRequest:
    if len(pem) > MAX_CSR_CHARS:
        raise IssuanceRefused(
            ReasonCode.CSR_TOO_LARGE,
            f"CSR is {len(pem)} characters; OCPP allows at most {MAX_CSR_CHARS}",
            field="csr",
        )
    if PEM_HEADER not in pem:
        raise IssuanceRefused(
            ReasonCode.CSR_NOT_PEM, f"CSR is not PEM (no '{PEM_HEADER}' line)", field="csr"
        )
    try:
        return x509.load_pem_x509_csr(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise IssuanceRefused(
            ReasonCode.CSR_NOT_PEM, f"CSR cannot be parsed: {exc}", field="csr"
        ) from None


def check_proof_of_possession(csr: x509.CertificateSigningRequest) -> None:
    """The CSR must be signed by the key it carries: the requester holds that key."""
    try:
        valid = csr.is_signature_valid
    except Exception:  # noqa: BLE001 -- any failure to verify is a failed verification
        valid = False
    if not valid:
        raise IssuanceRefused(
            ReasonCode.CSR_BAD_SIGNATURE,
            "CSR signature does not verify with its public key (no proof of possession)",
            field="csr.signature",
        )


def check_key(key: CertificatePublicKeyTypes, policy: KeyPolicy) -> None:
    described = describe_public_key(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in policy.ec_curves:
            return
        if key.key_size < MIN_EC_BITS:
            raise IssuanceRefused(
                ReasonCode.KEY_TOO_WEAK,
                f"EC key on {key.curve.name} ({key.key_size} bits) is too weak; "
                f"allowed: {policy.describe()}",
                field="csr.publicKey",
            )
    elif isinstance(key, rsa.RSAPublicKey) and policy.rsa_min_bits is not None:
        if key.key_size >= policy.rsa_min_bits:
            return
        raise IssuanceRefused(
            ReasonCode.KEY_TOO_WEAK,
            f"RSA key of {key.key_size} bits is too weak; allowed: {policy.describe()}",
            field="csr.publicKey",
        )
    raise IssuanceRefused(
        ReasonCode.KEY_TYPE_NOT_ALLOWED,
        f"key type {described} is not allowed by this profile; allowed: {policy.describe()}",
        field="csr.publicKey",
    )


def check_no_ca_request(csr: x509.CertificateSigningRequest) -> None:
    """CSR extensions are never copied; one asking to be a CA is refused outright,
    since it can only come from a confused or hostile requester."""
    try:
        extensions = csr.extensions
    except ValueError as exc:
        raise IssuanceRefused(
            ReasonCode.CSR_NOT_PEM,
            f"CSR extensions cannot be parsed: {exc}",
            field="csr.extensions",
        ) from None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise IssuanceRefused(
                ReasonCode.CA_REQUESTED,
                "CSR asks for basicConstraints CA:TRUE",
                field="csr.extensions.basicConstraints",
            )
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise IssuanceRefused(
                ReasonCode.CA_REQUESTED,
                "CSR asks for keyCertSign/cRLSign key usage",
                field="csr.extensions.keyUsage",
            )
