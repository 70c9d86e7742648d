"""Admitting a station's connection: gather the facts, let the decision table decide.

Runs before the websocket upgrade, once per connection attempt. Every certificate a
station presents is recorded -- as `observed` when the CA did not issue it -- so that
certificates we never issued (factory certificates) are watched for expiry too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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
from csms.domain.limits import ConnectionThrottle, Lockout
from pki.audit import AuditEvent
from pki.clock import Clock
from pki.credentials import hash_password, verify_password
from pki.policy import RenewalRule
from pki.records import CertificateRecord, CertificateSource, CertificateStatus, Station
from pki.renewal import renewal_due_at
from pki.store import Store

LOG = logging.getLogger("pkictl.gate")
SIGNERS_REMEMBERED = 50_000
"""Certificates whose issuing CA the gate remembers (about 100 bytes each): more than
reconnect in one storm. Past it the oldest half is forgotten."""
REFUSED_ACTION = "connection.refused"
THROTTLED_ACTION = "connection.throttled"
OBSERVED_ACTION = "certificate.observed"


@dataclass(frozen=True)
class ConnectionRequest:
    station_id: str
    transport: Transport
    peer_certificate_der: bytes | None
    """The client certificate TLS validated up to a trusted station CA (None: none)."""
    basic_auth: tuple[str, str] | None
    """User name and password of an Authorization: Basic header."""
    remote: str


@dataclass(frozen=True)
class Admission:
    decision: Decision
    station: Station | None
    certificate: CertificateRecord | None


class ConnectionGate:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        organization: str,
        observed_renewal: RenewalRule,
        station_cas: Sequence[x509.Certificate],
        throttle: ConnectionThrottle | None = None,
    ) -> None:
        """``observed_renewal``: when a certificate we did not issue becomes due.
        ``station_cas``: the CAs TLS trusts for station certificates."""
        self._store = store
        self._clock = clock
        self._organization = organization
        self._observed_renewal = observed_renewal
        self._throttle = throttle or ConnectionThrottle()
        self._station_cas = tuple(station_cas)
        self._signers: dict[str, x509.Certificate | None] = {}
        """Which station CA signed a certificate, by its SHA-256 fingerprint."""
        self.refusals: Counter[str] = Counter()
        """Refusals since start, by reason (shown on /health)."""

    async def admit(self, request: ConnectionRequest) -> Admission:
        now = self._clock.now()
        address = request.remote.rpartition(":")[0] or request.remote
        password = request.peer_certificate_der is None  # profile 1 or 2: guessable
        if self._throttle.blocked(address, request.station_id, password=password, now=now):
            self.refusals[Refusal.RATE_LIMITED.value] += 1
            return Admission(
                Decision(HttpStatus.TOO_MANY_REQUESTS, Refusal.RATE_LIMITED), None, None
            )
        station = await self._store.get_station(request.station_id)
        stored = None
        presented = None
        if request.peer_certificate_der is not None:
            certificate = x509.load_der_x509_certificate(request.peer_certificate_der)
            stored = await self._record_presented(certificate, station, request)
            presented = PresentedCertificate(
                common_names=_values(certificate, NameOID.COMMON_NAME),
                organizations=_values(certificate, NameOID.ORGANIZATION_NAME),
                not_before=certificate.not_valid_before_utc,
                not_after=certificate.not_valid_after_utc,
                revoked=stored.status is CertificateStatus.REVOKED,
                issuer_valid=self._issuer_valid(certificate, stored.fingerprint_sha256, now),
                claims_ca=claims_ca(certificate),
                issued_here=stored.source is CertificateSource.ISSUED,
                issued_to=stored.station_id,
            )
        decision = decide(
            HandshakeFacts(
                station=_registered(station),
                transport=request.transport,
                certificate=presented,
                credentials_given=request.basic_auth is not None,
                credentials_valid=await self._password_ok(request, station, presented),
                organization=self._organization,
                now=now,
            )
        )
        if decision.accepted:
            self._throttle.admitted(request.station_id)
            LOG.info(
                "station %s admitted from %s (profile %s%s)",
                request.station_id,
                request.remote,
                decision.security_profile,
                ", expired certificate: Boot pending" if decision.boot_pending else "",
            )
        else:
            guessed = password and decision.status is HttpStatus.UNAUTHORIZED
            lockouts = self._throttle.refused(
                address, request.station_id, password=guessed, now=now
            )
            self.refusals[str(decision.refusal)] += 1
            await self._record_refusal(request, decision, stored, now)
            for lockout in lockouts:
                await self._record_lockout(request, lockout, now)
        return Admission(decision, station, stored)

    def _issuer_valid(self, certificate: x509.Certificate, fingerprint: str, now: datetime) -> bool:
        """Whether the station CA that signed ``certificate`` is valid now. TLS has
        checked the signature but, by design, no dates (A00.FR.429 needs an expired
        leaf to reach the decision); an expired CA must not pass with it."""
        if fingerprint in self._signers:
            ca = self._signers[fingerprint]
        else:
            ca = self._signer_of(certificate)
            if len(self._signers) >= SIGNERS_REMEMBERED:
                for forgotten in list(self._signers)[: SIGNERS_REMEMBERED // 2]:
                    del self._signers[forgotten]
            self._signers[fingerprint] = ca
        return ca is not None and ca.not_valid_before_utc <= now < ca.not_valid_after_utc

    def _signer_of(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """The station CA whose key signed ``certificate`` (a signature check: the one
        that costs, so a reconnecting station's answer is remembered)."""
        for ca in self._station_cas:
            if ca.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None

    async def _record_refusal(
        self,
        request: ConnectionRequest,
        decision: Decision,
        certificate: CertificateRecord | None,
        now: datetime,
    ) -> None:
        """Logged, and kept in the audit log (`pkictl events list`): a refused station is
        either misconfigured or someone else."""
        LOG.warning(
            "station %s refused from %s: %s", request.station_id, request.remote, decision.refusal
        )
        await self._store.append_audit(
            AuditEvent(
                REFUSED_ACTION,
                f"remote:{request.remote}",
                f"station:{request.station_id}",
                "refused",
                {
                    "reason": str(decision.refusal),
                    "http_status": int(decision.status),
                    "transport": str(request.transport),
                    "remote": request.remote,
                    "certificate_serial": certificate.serial_hex if certificate else None,
                },
            ),
            now,
        )

    async def _record_lockout(
        self, request: ConnectionRequest, lockout: Lockout, now: datetime
    ) -> None:
        """A station id or an address locked out of password attempts: logged and
        audited once, when it starts (the 429s that follow are only counted)."""
        LOG.warning(
            "password attempts for %s %s locked out until %s (%d failures; last from %s)",
            lockout.rule, lockout.key, lockout.until.isoformat(timespec="seconds"),
            lockout.failures, request.remote,
        )  # fmt: skip
        target = f"station:{lockout.key}" if lockout.rule == "station" else f"address:{lockout.key}"
        await self._store.append_audit(
            AuditEvent(
                THROTTLED_ACTION, f"remote:{request.remote}", target, "locked",
                {"reason": f"{lockout.rule}-locked-out", "failures": lockout.failures,
                 "until": lockout.until.isoformat(), "remote": request.remote,
                 "station": request.station_id},
            ),
            now,
        )  # fmt: skip

    async def _record_presented(
        self, certificate: x509.Certificate, station: Station | None, request: ConnectionRequest
    ) -> CertificateRecord:
        record = CertificateRecord.from_certificate(
            certificate,
            renew_after=renewal_due_at(
                certificate.not_valid_before_utc,
                certificate.not_valid_after_utc,
                self._observed_renewal,
            ),
            source=CertificateSource.OBSERVED,
            issuer_ca=None,
            profile=None,
            station_id=station.id if station else None,
        )
        event = AuditEvent(
            OBSERVED_ACTION,
            f"remote:{request.remote}",
            f"station:{request.station_id}",
            "ok",
            {
                "serial": record.serial_hex,
                "issuer": record.issuer_dn,
                "subject": record.subject_dn,
                "not_after": record.not_after.isoformat(),
                "remote": request.remote,
            },
        )
        return await self._store.record_presented(record, event, self._clock.now())

    async def _password_ok(
        self,
        request: ConnectionRequest,
        station: Station | None,
        presented: PresentedCertificate | None,
    ) -> bool:
        """Checked only when the decision needs it: scrypt is slow on purpose, and runs
        off the event loop."""
        if request.basic_auth is None or presented is not None:
            return False
        user, password = request.basic_auth
        if station is None or user != station.id or station.password_hash is None:
            # as slow as a wrong password, so that timing does not tell who exists (ADR 5)
            await asyncio.to_thread(verify_password, password, _unmatchable_hash())
            return False
        return await asyncio.to_thread(verify_password, password, station.password_hash)


def claims_ca(certificate: x509.Certificate) -> bool:
    """Whether the certificate says it is a CA's: basicConstraints CA:TRUE, or keyUsage
    keyCertSign (RFC 5280 4.2.1.3: only with CA:TRUE). Read from the leaf as presented;
    an extension that does not parse counts as a claim (refused rather than guessed)."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        return True
    else:
        if constraints.value.ca:
            return True
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return False
    except ValueError:
        return True
    return usage.value.key_cert_sign


@functools.cache
def _unmatchable_hash() -> str:
    """A password hash no password is checked against but to spend the same time."""
    return hash_password(secrets.token_urlsafe(18))  # 24 characters


def _values(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> tuple[str, ...]:
    return tuple(str(a.value) for a in certificate.subject.get_attributes_for_oid(oid))


def _registered(station: Station | None) -> RegisteredStation | None:
    if station is None:
        return None
    return RegisteredStation(
        station.serial_number, station.security_profile, station.allow_expired, station.id
    )
