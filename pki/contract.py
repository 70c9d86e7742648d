"""ISO 15118 contract certificates (OCPP C07): is this PEM chain a valid contract for
this eMAID, under the MO and V2G roots we trust? Pure: the caller supplies the roots,
the time, and (separately) the certificate's revocation status.

Path validation is cryptography's verifier (issuers must be CAs, path lengths, validity,
signatures), with the ISO 15118-2 rules on top: a P-256 key signed with ECDSA/SHA-256,
DC=MO in the leaf, at most three certificates below the root, and CN = the eMAID the
station presented. What went wrong is told apart as OCPP's AuthorizeCertificateStatus
needs it: expired, a signature that does not verify, or a chain that does not lead to
a trusted root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

MAX_BELOW_ROOT = 3  # contract certificate and up to two MO sub-CAs
_SEPARATORS = re.compile(r"[-*\s]")


class ContractOutcome(StrEnum):
    """OCPP AuthorizeCertificateStatusEnumType, as far as the chain decides it."""

    ACCEPTED = "Accepted"
    SIGNATURE_ERROR = "SignatureError"
    CERTIFICATE_EXPIRED = "CertificateExpired"
    CERT_CHAIN_ERROR = "CertChainError"
    NO_CERTIFICATE = "NoCertificateAvailable"


@dataclass(frozen=True)
class ContractCheck:
    outcome: ContractOutcome
    reason: str
    chain: tuple[x509.Certificate, ...] = ()
    """On ACCEPTED: contract certificate first, up to and including the trusted root."""


def normalized_emaid(value: str) -> str:
    """eMAIDs compare without separators and case ("DE-ABC-C12345678-9" is
    "DEABCC123456789")."""
    return _SEPARATORS.sub("", value).upper()


def check_contract(
    pem_chain: str, emaid: str, roots: list[x509.Certificate], now: datetime
) -> ContractCheck:
    try:
        certificates = x509.load_pem_x509_certificates(pem_chain.encode()) if pem_chain else []
    except ValueError as exc:
        return ContractCheck(ContractOutcome.CERT_CHAIN_ERROR, f"not a PEM chain: {exc}")
    if not certificates:
        return ContractCheck(ContractOutcome.NO_CERTIFICATE, "no certificate given")
    leaf, intermediates = certificates[0], certificates[1:]
    refused = _refusal(certificates, emaid, roots, now)
    if refused is not None:
        return refused
    ca_policy = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder().store(Store(roots)).time(now).max_chain_depth(MAX_BELOW_ROOT - 1)
        .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
        .build_client_verifier()
    )  # fmt: skip
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return ContractCheck(ContractOutcome.CERT_CHAIN_ERROR, f"no path to a trusted root: {exc}")
    return ContractCheck(ContractOutcome.ACCEPTED, "valid", tuple(verified.chain))


def _refusal(
    certificates: list[x509.Certificate], emaid: str, roots: list[x509.Certificate],
    now: datetime,
) -> ContractCheck | None:  # fmt: skip
    """What is wrong before the path is even looked for, told apart for OCPP."""
    problem = _iso15118_problem(certificates[0], certificates[1:], emaid)
    if problem is not None:
        return ContractCheck(ContractOutcome.CERT_CHAIN_ERROR, problem)
    for certificate in certificates:
        if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
            return ContractCheck(
                ContractOutcome.CERTIFICATE_EXPIRED,
                f"{certificate.subject.rfc4514_string()} is valid "
                f"{certificate.not_valid_before_utc} to {certificate.not_valid_after_utc}",
            )
    bad_signature = _bad_signature(certificates, roots)
    if bad_signature is not None:
        return ContractCheck(ContractOutcome.SIGNATURE_ERROR, bad_signature)
    if not roots:
        return ContractCheck(ContractOutcome.CERT_CHAIN_ERROR, "no MO or V2G root is trusted")
    return None


def _iso15118_problem(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], emaid: str
) -> str | None:
    below_root = 1 + sum(1 for c in intermediates if c.subject != c.issuer)  # a root may come
    if below_root > MAX_BELOW_ROOT:
        return f"{below_root} certificates below the root; at most {MAX_BELOW_ROOT}"
    for certificate in (leaf, *intermediates):
        key = certificate.public_key()
        name = certificate.subject.rfc4514_string()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            return f"{name}: the key is not P-256 (ISO 15118-2)"
        if certificate.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
            return f"{name}: not signed with ECDSA/SHA-256 (ISO 15118-2)"
    return _leaf_problem(leaf, emaid)


def _leaf_problem(leaf: x509.Certificate, emaid: str) -> str | None:
    try:
        is_ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        return "the contract certificate is a CA certificate"
    dc = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)]
    if "MO" not in dc:
        return "the contract certificate's subject has no DC=MO"
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    if normalized_emaid(common_name) != normalized_emaid(emaid):
        return f"the contract certificate is for {common_name!r}, not the idToken {emaid!r}"
    return None


def _bad_signature(
    certificates: list[x509.Certificate], roots: list[x509.Certificate]
) -> str | None:
    """A certificate whose named issuer (the next in the chain, or a trusted root with
    its issuer's name) did not make its signature."""
    for index, certificate in enumerate(certificates):
        candidates = certificates[index + 1 : index + 2] or [
            r for r in roots if r.subject == certificate.issuer
        ]
        for issuer in candidates:
            if issuer.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(issuer)
            except InvalidSignature:
                return f"the signature of {certificate.subject.rfc4514_string()} does not verify"
            except (ValueError, TypeError):
                continue  # not this issuer's algorithm: the path check says more
    return None
