"""Who may open an OCPP connection: the handshake decision as one pure function.

The transport gathers facts (which port, the client certificate TLS already validated
up to a trusted station CA, the Basic-auth credentials and whether they verified, the
registered station) and this module decides. No I/O, no clock: the table of cases in
tests/unit/test_handshake.py is the specification.

Order of the checks for a certificate (OCPP A00.FR.403-408, 429): registered station ->
not revoked -> an end-entity certificate, not a CA's -> its issuing station CA within
its validity -> the certificate within its validity (an expired one only for stations
flagged allow-expired, then Boot answers Pending and renewal starts at once) -> CN
equals the registered serial number -> a certificate this CA issued was issued to this
station -> O equals the CSO organization -> the station is configured for security
profile 3. A station configured for profile 3 is never admitted over profile 1 or 2,
whatever password it knows.

The serial number binds a certificate to a station only while one station holds it: a
certificate this CA issued names its station in its record, and admits that station
only -- not another registered later with the same serial (after `station remove
--keep-certificates`, say). Certificates we did not issue (a factory CA's) have no such
record: for them the serial binding is all there is (serials are unique among stations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum


class Transport(StrEnum):
    TLS = "tls"  # wss://, profiles 2 and 3
    PLAIN = "plain"  # ws://, profile 1 only


class Refusal(StrEnum):
    """Why a connection was refused; stable codes for the event log and metrics."""

    UNKNOWN_STATION = "unknown-station"
    CERTIFICATE_REQUIRED = "certificate-required"
    CERTIFICATE_REVOKED = "certificate-revoked"
    CERTIFICATE_IS_CA = "certificate-is-ca"
    """A client certificate that claims to be a CA (basicConstraints CA:TRUE, or
    keyCertSign): a station's is an end-entity certificate (RFC 5280 4.2.1.9, 4.2.1.3;
    OCPP TC_A_08_CSMS, an invalid client certificate). Only a trusted CA that
    mis-issues (a factory CA) can produce one; TLS lets it through."""
    ISSUER_EXPIRED = "issuer-expired"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
    SERIAL_MISMATCH = "serial-mismatch"
    ISSUED_TO_ANOTHER_STATION = "issued-to-another-station"
    ORGANIZATION_MISMATCH = "organization-mismatch"
    PROFILE_MISMATCH = "profile-mismatch"
    CREDENTIALS_REQUIRED = "credentials-required"
    BAD_CREDENTIALS = "bad-credentials"
    RATE_LIMITED = "rate-limited"
    """Too many refusals from the address lately: decided before any fact is gathered
    (`csms.domain.limits`), never by `decide`."""


class HttpStatus(IntEnum):
    SWITCHING_PROTOCOLS = 101
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class PresentedCertificate:
    """The client certificate, as TLS handed it over after validating its chain."""

    common_names: tuple[str, ...]
    organizations: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    revoked: bool
    issuer_valid: bool = True
    """The station CA that issued it is within its own validity (TLS checked the
    signatures of the chain, not its dates: see csms.transport.tls)."""
    claims_ca: bool = False
    """basicConstraints CA:TRUE or keyUsage keyCertSign."""
    issued_here: bool = False
    """This CA issued it (its record says so), as opposed to one we only observed."""
    issued_to: str | None = None
    """The station the record says this CA issued it to (when ``issued_here``)."""


@dataclass(frozen=True)
class RegisteredStation:
    """What the registry says about the station id of the URL."""

    serial_number: str
    security_profile: int
    allow_expired: bool = False
    id: str | None = None
    """The station id (the URL's last segment)."""


@dataclass(frozen=True)
class HandshakeFacts:
    station: RegisteredStation | None
    transport: Transport
    certificate: PresentedCertificate | None
    credentials_given: bool
    """An Authorization: Basic header whose user name is the URL's station id."""
    credentials_valid: bool
    organization: str
    now: datetime


@dataclass(frozen=True)
class Decision:
    status: HttpStatus
    refusal: Refusal | None = None
    security_profile: int | None = None
    boot_pending: bool = False
    """Admitted with an expired certificate: BootNotification is answered Pending and the
    certificate is renewed before anything else (A00.FR.429)."""

    @property
    def accepted(self) -> bool:
        return self.refusal is None


# The rules in the order they are checked: the first that holds refuses the connection.
# (refusal, HTTP status, condition)
CertificateRule = tuple[
    Refusal, HttpStatus, Callable[[PresentedCertificate, RegisteredStation, HandshakeFacts], bool]
]
PasswordRule = tuple[Refusal, HttpStatus, Callable[[RegisteredStation, HandshakeFacts], bool]]

FORBIDDEN, UNAUTHORIZED = HttpStatus.FORBIDDEN, HttpStatus.UNAUTHORIZED

CERTIFICATE_RULES: tuple[CertificateRule, ...] = (
    (Refusal.CERTIFICATE_REVOKED, FORBIDDEN, lambda c, s, f: c.revoked),
    (Refusal.CERTIFICATE_IS_CA, FORBIDDEN, lambda c, s, f: c.claims_ca),
    (Refusal.ISSUER_EXPIRED, FORBIDDEN, lambda c, s, f: not c.issuer_valid),
    (Refusal.CERTIFICATE_NOT_YET_VALID, FORBIDDEN, lambda c, s, f: f.now < c.not_before),
    (
        Refusal.CERTIFICATE_EXPIRED,
        FORBIDDEN,
        lambda c, s, f: f.now >= c.not_after and not s.allow_expired,
    ),
    (Refusal.SERIAL_MISMATCH, FORBIDDEN, lambda c, s, f: c.common_names != (s.serial_number,)),
    (
        Refusal.ISSUED_TO_ANOTHER_STATION,
        FORBIDDEN,
        lambda c, s, f: c.issued_here and c.issued_to != s.id,
    ),
    (
        Refusal.ORGANIZATION_MISMATCH,
        FORBIDDEN,
        lambda c, s, f: c.organizations != (f.organization,),
    ),
    (Refusal.PROFILE_MISMATCH, FORBIDDEN, lambda c, s, f: s.security_profile != 3),
)

PASSWORD_RULES: tuple[PasswordRule, ...] = (
    (Refusal.CERTIFICATE_REQUIRED, FORBIDDEN, lambda s, f: s.security_profile == 3),
    (
        Refusal.PROFILE_MISMATCH,
        FORBIDDEN,
        lambda s, f: s.security_profile != _password_profile(f.transport),
    ),
    (Refusal.CREDENTIALS_REQUIRED, UNAUTHORIZED, lambda s, f: not f.credentials_given),
    (Refusal.BAD_CREDENTIALS, UNAUTHORIZED, lambda s, f: not f.credentials_valid),
)


def _password_profile(transport: Transport) -> int:
    return 1 if transport is Transport.PLAIN else 2


def decide(facts: HandshakeFacts) -> Decision:
    station = facts.station
    if station is None:
        # Basic auth answers 401 either way, so an unknown id and a wrong password look
        # alike to a guesser; a certificate holder learns nothing it could use.
        status = FORBIDDEN if facts.certificate else UNAUTHORIZED
        return Decision(status, Refusal.UNKNOWN_STATION)
    certificate = facts.certificate
    if certificate is not None:
        for refusal, status, refuses in CERTIFICATE_RULES:
            if refuses(certificate, station, facts):
                return Decision(status, refusal)
        expired = facts.now >= certificate.not_after  # admitted: only if allow-expired
        return Decision(HttpStatus.SWITCHING_PROTOCOLS, security_profile=3, boot_pending=expired)
    for refusal, status, refuses_password in PASSWORD_RULES:
        if refuses_password(station, facts):
            return Decision(status, refusal)
    return Decision(
        HttpStatus.SWITCHING_PROTOCOLS, security_profile=_password_profile(facts.transport)
    )
