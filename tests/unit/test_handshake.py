"""The handshake decision, as a table: every row is one case of OCPP A00.FR.403-408/429
and of the profile 1/2 rules. The table is the specification of `csms.domain.handshake`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from csms.domain.handshake import (
    Decision,
    HandshakeFacts,
    HttpStatus,
    PresentedCertificate,
    Refusal,
    RegisteredStation,
    Transport,
    decide,
)
from csms.services.gate import claims_ca

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ORG = "Example CPO"
SERIAL = "SN-0001"

GOOD_CERT = PresentedCertificate(
    common_names=(SERIAL,),
    organizations=(ORG,),
    not_before=NOW - timedelta(days=10),
    not_after=NOW + timedelta(days=355),
    revoked=False,
)
EXPIRED = replace(GOOD_CERT, not_after=NOW - timedelta(seconds=1))
P3 = RegisteredStation(SERIAL, 3, id="CS001")
ISSUED_TO_CS001 = replace(GOOD_CERT, issued_here=True, issued_to="CS001")
P3_ALLOW_EXPIRED = RegisteredStation(SERIAL, 3, allow_expired=True)
P2 = RegisteredStation(SERIAL, 2)
P1 = RegisteredStation(SERIAL, 1)


def facts(
    station: RegisteredStation | None = P3,
    certificate: PresentedCertificate | None = GOOD_CERT,
    transport: Transport = Transport.TLS,
    credentials: str | None = None,
) -> HandshakeFacts:
    """``credentials``: None (no Authorization header), "good" or "bad"."""
    return HandshakeFacts(
        station=station,
        transport=transport,
        certificate=certificate,
        credentials_given=credentials is not None,
        credentials_valid=credentials == "good",
        organization=ORG,
        now=NOW,
    )


ADMIT_3 = Decision(HttpStatus.SWITCHING_PROTOCOLS, security_profile=3)
FORBIDDEN = HttpStatus.FORBIDDEN
UNAUTHORIZED = HttpStatus.UNAUTHORIZED

CASES: dict[str, tuple[HandshakeFacts, Decision]] = {
    # --- profile 3: mutual TLS ---------------------------------------------------------
    "p3 good certificate": (facts(), ADMIT_3),
    "p3 good certificate, a password too": (facts(credentials="good"), ADMIT_3),
    "p3 unregistered station id": (
        facts(station=None),
        Decision(FORBIDDEN, Refusal.UNKNOWN_STATION),
    ),
    "p3 revoked": (
        facts(certificate=replace(GOOD_CERT, revoked=True)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_REVOKED),
    ),
    "p3 a CA certificate as the client certificate (RFC 5280, TC_A_08)": (
        facts(certificate=replace(GOOD_CERT, claims_ca=True)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_IS_CA),
    ),
    "p3 a CA certificate, expired, allow-expired: still refused": (
        facts(P3_ALLOW_EXPIRED, replace(EXPIRED, claims_ca=True)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_IS_CA),
    ),
    "p3 a CA certificate this CA issued to this station: still refused": (
        facts(certificate=replace(ISSUED_TO_CS001, claims_ca=True)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_IS_CA),
    ),
    "p3 issued by a station CA that has expired": (
        facts(certificate=replace(GOOD_CERT, issuer_valid=False)),
        Decision(FORBIDDEN, Refusal.ISSUER_EXPIRED),
    ),
    "p3 expired CA: allow-expired covers the station's certificate only": (
        facts(P3_ALLOW_EXPIRED, replace(EXPIRED, issuer_valid=False)),
        Decision(FORBIDDEN, Refusal.ISSUER_EXPIRED),
    ),
    "p3 revoked beats allow-expired": (
        facts(P3_ALLOW_EXPIRED, replace(EXPIRED, revoked=True)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_REVOKED),
    ),
    "p3 expired": (facts(certificate=EXPIRED), Decision(FORBIDDEN, Refusal.CERTIFICATE_EXPIRED)),
    "p3 expired at exactly notAfter": (
        facts(certificate=replace(GOOD_CERT, not_after=NOW)),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_EXPIRED),
    ),
    "p3 expired, station allowed: admitted, Boot pending (A00.FR.429)": (
        facts(P3_ALLOW_EXPIRED, EXPIRED),
        Decision(HttpStatus.SWITCHING_PROTOCOLS, security_profile=3, boot_pending=True),
    ),
    "p3 valid certificate on an allow-expired station: not pending": (
        facts(P3_ALLOW_EXPIRED),
        ADMIT_3,
    ),
    "p3 expired, allowed, but someone else's serial": (
        facts(P3_ALLOW_EXPIRED, replace(EXPIRED, common_names=("SN-9999",))),
        Decision(FORBIDDEN, Refusal.SERIAL_MISMATCH),
    ),
    "p3 not yet valid": (
        facts(certificate=replace(GOOD_CERT, not_before=NOW + timedelta(seconds=1))),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_NOT_YET_VALID),
    ),
    # --- a certificate this CA issued admits the station it was issued to, only ------
    "p3 issued by this CA to this station": (facts(certificate=ISSUED_TO_CS001), ADMIT_3),
    "p3 issued by this CA to another station that had the same serial": (
        facts(replace(P3, id="CS007"), ISSUED_TO_CS001),
        Decision(FORBIDDEN, Refusal.ISSUED_TO_ANOTHER_STATION),
    ),
    "p3 issued by this CA to no station": (
        facts(certificate=replace(ISSUED_TO_CS001, issued_to=None)),
        Decision(FORBIDDEN, Refusal.ISSUED_TO_ANOTHER_STATION),
    ),
    "p3 issued to another station, expired, allowed: still refused": (
        facts(
            replace(P3_ALLOW_EXPIRED, id="CS007"),
            replace(EXPIRED, issued_here=True, issued_to="CS001"),
        ),
        Decision(FORBIDDEN, Refusal.ISSUED_TO_ANOTHER_STATION),
    ),
    "p3 not issued here (a factory CA's): the serial binds it": (
        facts(replace(P3, id="CS007"), replace(GOOD_CERT, issued_to="CS001")),
        ADMIT_3,
    ),
    "p3 CN is another station's serial": (
        facts(certificate=replace(GOOD_CERT, common_names=("SN-9999",))),
        Decision(FORBIDDEN, Refusal.SERIAL_MISMATCH),
    ),
    "p3 CN differs in case": (
        facts(certificate=replace(GOOD_CERT, common_names=(SERIAL.lower(),))),
        Decision(FORBIDDEN, Refusal.SERIAL_MISMATCH),
    ),
    "p3 no CN": (
        facts(certificate=replace(GOOD_CERT, common_names=())),
        Decision(FORBIDDEN, Refusal.SERIAL_MISMATCH),
    ),
    "p3 two CNs, one of them right": (
        facts(certificate=replace(GOOD_CERT, common_names=(SERIAL, "SN-9999"))),
        Decision(FORBIDDEN, Refusal.SERIAL_MISMATCH),
    ),
    "p3 O of another CSO": (
        facts(certificate=replace(GOOD_CERT, organizations=("Other CPO",))),
        Decision(FORBIDDEN, Refusal.ORGANIZATION_MISMATCH),
    ),
    "p3 no O": (
        facts(certificate=replace(GOOD_CERT, organizations=())),
        Decision(FORBIDDEN, Refusal.ORGANIZATION_MISMATCH),
    ),
    "p3 certificate from a station registered for profile 2": (
        facts(station=P2),
        Decision(FORBIDDEN, Refusal.PROFILE_MISMATCH),
    ),
    "p3 station over TLS without a certificate": (
        facts(certificate=None),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_REQUIRED),
    ),
    # --- a profile-3 station is never admitted over profile 1 or 2 ---------------------
    "p3 station with the right password over TLS (profile 2)": (
        facts(certificate=None, credentials="good"),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_REQUIRED),
    ),
    "p3 station with the right password over plain ws (profile 1)": (
        facts(certificate=None, transport=Transport.PLAIN, credentials="good"),
        Decision(FORBIDDEN, Refusal.CERTIFICATE_REQUIRED),
    ),
    # --- profile 2: TLS + Basic auth ---------------------------------------------------
    "p2 good password": (
        facts(P2, None, credentials="good"),
        Decision(HttpStatus.SWITCHING_PROTOCOLS, security_profile=2),
    ),
    "p2 wrong password": (
        facts(P2, None, credentials="bad"),
        Decision(UNAUTHORIZED, Refusal.BAD_CREDENTIALS),
    ),
    "p2 no password": (
        facts(P2, None),
        Decision(UNAUTHORIZED, Refusal.CREDENTIALS_REQUIRED),
    ),
    "p2 station over plain ws (downgrade to profile 1)": (
        facts(P2, None, Transport.PLAIN, "good"),
        Decision(FORBIDDEN, Refusal.PROFILE_MISMATCH),
    ),
    "p2 unknown station id: 401 like a wrong password": (
        facts(None, None, credentials="good"),
        Decision(UNAUTHORIZED, Refusal.UNKNOWN_STATION),
    ),
    # --- profile 1: plain ws + Basic auth ----------------------------------------------
    "p1 good password": (
        facts(P1, None, Transport.PLAIN, "good"),
        Decision(HttpStatus.SWITCHING_PROTOCOLS, security_profile=1),
    ),
    "p1 wrong password": (
        facts(P1, None, Transport.PLAIN, "bad"),
        Decision(UNAUTHORIZED, Refusal.BAD_CREDENTIALS),
    ),
    "p1 station over TLS": (
        facts(P1, None, Transport.TLS, "good"),
        Decision(FORBIDDEN, Refusal.PROFILE_MISMATCH),
    ),
    "p1 unknown station id over plain ws": (
        facts(None, None, Transport.PLAIN, "bad"),
        Decision(UNAUTHORIZED, Refusal.UNKNOWN_STATION),
    ),
}


@pytest.mark.parametrize(("given", "expected"), list(CASES.values()), ids=list(CASES))
def test_handshake_decision(given: HandshakeFacts, expected: Decision) -> None:
    decision = decide(given)
    assert decision == expected
    assert decision.accepted is (expected.refusal is None)


def test_every_refusal_and_profile_appears_in_the_table() -> None:
    refusals = {d.refusal for _, d in CASES.values()}
    assert refusals == {None, *Refusal} - {Refusal.RATE_LIMITED}  # the limiter's, not decide's
    assert {d.security_profile for _, d in CASES.values() if d.accepted} == {1, 2, 3}


# --- the fact the gate reads off the presented leaf: does it claim to be a CA? ---------


def leaf_with(*extensions: x509.ExtensionType) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERIAL)])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
    )  # fmt: skip
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def usage(*, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=True, key_cert_sign=key_cert_sign,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extensions", "claims"),
    [
        ((), False),
        ((x509.BasicConstraints(ca=False, path_length=None),), False),
        ((x509.BasicConstraints(ca=False, path_length=None), usage(key_cert_sign=False)), False),
        ((x509.BasicConstraints(ca=True, path_length=None),), True),
        ((x509.BasicConstraints(ca=True, path_length=0), usage(key_cert_sign=True)), True),
        ((usage(key_cert_sign=True),), True),  # keyCertSign without CA:TRUE: still a claim
    ],
)
def test_a_leaf_claiming_to_be_a_ca_is_told_apart(
    extensions: tuple[x509.ExtensionType, ...], claims: bool
) -> None:
    assert claims_ca(leaf_with(*extensions)) is claims
