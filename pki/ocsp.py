"""OCSP responses for the certificates of our own CAs (RFC 6960), pure: the caller
looks the certificate's status up and hands over the responder.

Each CA answers through its delegated OCSP signer (id-kp-OCSPSigning, ocsp-nocheck), so
no CA key signs online. A request names a certificate by a CertID -- the hashes of its
issuer's name and key and its serial -- in SHA-1 (what most clients send) or SHA-2;
the answer repeats the CertID as asked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from pki.hashdata import public_key_bits
from pki.keys import Signer

CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}  # fmt: skip
MAX_REQUEST_BYTES = 8192
CLOCK_SKEW = timedelta(minutes=5)
MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(hours=24)
MAX_SERIAL_OCTETS = 20  # RFC 5280 4.1.2.2: no serial we answer for is longer


class CertState(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # never issued by this CA


@dataclass(frozen=True)
class Status:
    state: CertState
    revoked_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Query:
    """One CertID asked about, and the request's nonce if it had one."""

    algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    nonce: bytes | None


class MalformedRequest(Exception):
    """Not an OCSP request we can answer: say malformedRequest."""


def parse_request(der: bytes) -> Query:
    if len(der) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"{len(der)} bytes; at most {MAX_REQUEST_BYTES}")
    try:
        request = ocsp.load_der_ocsp_request(der)  # refuses more than one CertID
        algorithm = request.hash_algorithm.name
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
    except (ValueError, TypeError) as exc:
        raise MalformedRequest(str(exc)) from None
    if algorithm not in CERT_ID_HASHES:
        raise MalformedRequest(f"CertID hash {algorithm} is not supported")
    if not 0 < request.serial_number < 1 << (8 * MAX_SERIAL_OCTETS):
        raise MalformedRequest("the serial number is not a positive number of at most 20 octets")
    return Query(algorithm, request.issuer_name_hash, request.issuer_key_hash,
                 request.serial_number, nonce)  # fmt: skip


@dataclass(frozen=True)
class Responder:
    """A CA of ours and the delegated signer that answers for it."""

    ca_name: str
    ca_certificate: x509.Certificate
    certificate: x509.Certificate
    signer: Signer
    hash_name: str = "sha256"

    @cached_property
    def issuer_name_hash(self) -> str:
        """How certificate records name this CA as issuer (SHA-256 of its DER name)."""
        return hashlib.sha256(self.ca_certificate.subject.public_bytes()).hexdigest()

    def cert_ids(self) -> list[tuple[str, bytes, bytes]]:
        return self.cert_ids_of(self.ca_certificate)

    @staticmethod
    def cert_ids_of(ca: x509.Certificate) -> list[tuple[str, bytes, bytes]]:
        """(algorithm, issuer name hash, issuer key hash) under every CertID hash."""
        name = ca.subject.public_bytes()
        key = public_key_bits(ca.public_key())
        return [(a, hashlib.new(a, name).digest(), hashlib.new(a, key).digest())
                for a in CERT_ID_HASHES]  # fmt: skip

    def respond(self, query: Query, status: Status, now: datetime, validity: timedelta) -> bytes:
        this_update = now.replace(microsecond=0)
        revoked = status.state is CertState.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial,
            algorithm=CERT_ID_HASHES[query.algorithm](),
            cert_status=ocsp.OCSPCertStatus[status.state.name],
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=status.revoked_at.replace(microsecond=0)
            if revoked and status.revoked_at else None,
            revocation_reason=x509.ReasonFlags(status.reason)
            if revoked and status.reason and status.reason != "unspecified" else None,
        )  # fmt: skip
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.certificate)
        builder = builder.certificates([self.certificate])
        if query.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
        response = self.signer.sign_ocsp_response(builder, self.hash_name)
        return response.public_bytes(Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


def ocsp_urls(certificate: x509.Certificate) -> list[str]:
    """The OCSP responder URLs in the certificate's AIA extension."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value) for d in access.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]  # fmt: skip


class UnusableResponse(Exception):
    """An OCSP response that cannot be relied on for this certificate; says why."""


def verified_status(
    der: bytes, certificate: x509.Certificate, issuer: x509.Certificate, now: datetime
) -> Status:
    """The status an OCSP response gives ``certificate``, once it is shown to be signed
    by ``issuer`` or by a responder ``issuer`` delegated (id-kp-OCSPSigning), to be about
    this certificate, and to be current."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise UnusableResponse(f"not an OCSP response: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise UnusableResponse(f"the responder said {response.response_status.name}")
    try:
        (single,) = list(response.responses)
    except ValueError:
        raise UnusableResponse("the response is not about exactly one certificate") from None
    expected = [c for c in Responder.cert_ids_of(issuer) if c[0] == single.hash_algorithm.name]
    about = (single.serial_number, single.issuer_name_hash, single.issuer_key_hash)
    if not expected or about != (certificate.serial_number, *expected[0][1:]):
        raise UnusableResponse("the response is about another certificate")
    _check_signer(response, issuer, now)
    if not current(single.this_update_utc, single.next_update_utc, now):
        raise UnusableResponse("the response is not current")
    state = CertState[single.certificate_status.name]
    reason = single.revocation_reason.value if single.revocation_reason else None
    return Status(state, single.revocation_time_utc, reason)


def current(this_update: datetime, next_update: datetime | None, now: datetime) -> bool:
    """Not from the future, not past its nextUpdate, and without one not older than
    MAX_AGE_WITHOUT_NEXT_UPDATE."""
    if this_update > now + CLOCK_SKEW:
        return False
    if next_update is None:
        return now - this_update <= MAX_AGE_WITHOUT_NEXT_UPDATE
    return now < next_update


def _check_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> None:
    signers = [issuer]
    for delegated in response.certificates:
        if not delegated.not_valid_before_utc <= now < delegated.not_valid_after_utc:
            continue
        try:
            delegated.verify_directly_issued_by(issuer)
            usage = delegated.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            signers.append(delegated)
    algorithm = response.signature_hash_algorithm
    for signer in signers:
        key = signer.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
                key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
            elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
                key.verify(response.signature, response.tbs_response_bytes,
                           padding.PKCS1v15(), algorithm)  # fmt: skip
            else:
                continue
        except InvalidSignature:
            continue
        return
    raise UnusableResponse("the response is not signed by the issuer or its OCSP responder")
