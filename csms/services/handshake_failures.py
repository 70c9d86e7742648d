"""Failed TLS handshakes, recorded like every other refusal.

A connection refused at the TLS layer never reaches the handshake gate: a client
certificate OpenSSL does not trust (self-signed, from an unknown CA), a TLS version or
suite the policy does not speak, a station that does not trust our server certificate.
Each is logged (WARNING), kept in the audit log as ``tls.refused`` (`pkictl events
list`) and counted in `/health` refusals by reason, with the peer address, OpenSSL's
reason and, for a certificate OpenSSL refused, its subject, issuer, serial and SHA-256
fingerprint. OCPP A00.FR.403-408: a station certificate whose path does not validate is
refused and a security event logged in the CSMS -- this is that record.

A flood must not flood the log or the audit chain: per address and per minute the first
failure is recorded in full, the rest counted and summarised once the minute is over
(one line, one event). At most ``ADDRESSES_TRACKED`` addresses are tracked at a time;
past that, failures from further addresses share one summary ("other addresses").
`/health` counts every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from csms.domain.text import printable
from pki.audit import AuditEvent
from pki.clock import Clock
from pki.store import Store

LOG = logging.getLogger("pkictl.tls")
TLS_REFUSED_ACTION = "tls.refused"
WINDOW = timedelta(minutes=1)
"""Per address: the first failure in this window is recorded, the rest summarised."""
ADDRESSES_TRACKED = 4096
"""Addresses with an open window at a time (a few hundred bytes each)."""
OTHER_ADDRESSES = "other addresses"
PENDING_EVENTS = 10_000
"""Audit events waiting to be written; past it the oldest are dropped (and said so)."""
TEXT_LIMIT = 512
"""Characters kept of a certificate's subject or issuer and of OpenSSL's message."""
_REASON = re.compile(r"[A-Z0-9_]{1,64}")
_SSL_C_LINE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


@dataclass(frozen=True)
class FailedHandshake:
    """What the transport knows of a TLS handshake that failed."""

    remote: str
    """``host:port`` of the peer."""
    address: str
    """The peer's host address: failures are aggregated by it."""
    reason: str | None
    """OpenSSL's reason code, e.g. ``CERTIFICATE_VERIFY_FAILED``, ``UNSUPPORTED_PROTOCOL``."""
    message: str
    """OpenSSL's message as the ssl module reports it."""
    verify_error: str | None = None
    """For a refused certificate: OpenSSL's verification error (and its depth)."""
    certificate_der: bytes | None = None
    """The client certificate OpenSSL refused, as presented."""

    @property
    def refusal(self) -> str:
        """The reason as counted in `/health` and shown by `events list`."""
        reason = self.reason if self.reason and _REASON.fullmatch(self.reason) else "HANDSHAKE"
        return "tls-" + reason.lower().replace("_", "-")


def certificate_facts(der: bytes) -> dict[str, str]:
    """Subject, issuer, serial (hex) and SHA-256 fingerprint of a presented certificate;
    the fingerprint alone when it does not parse."""
    facts = {"sha256": hashlib.sha256(der).hexdigest()}
    try:
        certificate = x509.load_der_x509_certificate(der)
        facts["subject"] = certificate.subject.rfc4514_string()[:TEXT_LIMIT]
        facts["issuer"] = certificate.issuer.rfc4514_string()[:TEXT_LIMIT]
        facts["serial"] = format(certificate.serial_number, "x")
    except ValueError as exc:
        facts["unparsed"] = str(exc)[:TEXT_LIMIT]
    return facts


@dataclass
class _Window:
    started: datetime
    address: str
    more: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class HandshakeFailures:
    """Records failed handshakes (``record``, called by the transport on the event loop)
    and writes their audit events in the background (``running``)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        refusals: Counter[str],
        *,
        window: timedelta | None = None,
        capacity: int = ADDRESSES_TRACKED,
    ) -> None:
        """``refusals``: the counter `/health` shows (the gate's), counted into."""
        self._store = store
        self._clock = clock
        self.refusals = refusals
        self._window = window or WINDOW
        self._capacity = capacity
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        """Open windows by address, oldest first (all are equally long)."""
        self._pending: deque[tuple[AuditEvent, datetime]] = deque(maxlen=PENDING_EVENTS)
        self._wake = asyncio.Event()
        self.dropped = 0

    @property
    def tracked(self) -> int:
        """Addresses with an open window (bounded by ``capacity`` + 1)."""
        return len(self._windows)

    def record(self, failure: FailedHandshake) -> None:
        now = self._clock.now()
        refusal = failure.refusal
        self.refusals[refusal] += 1
        self.expire(now)
        key = failure.address
        if key not in self._windows and len(self._windows) >= self._capacity:
            key = OTHER_ADDRESSES
        window = self._windows.get(key)
        if window is not None:
            window.more += 1
            window.reasons[refusal] += 1
            return
        self._windows[key] = _Window(now, key)
        self._first(failure, refusal, now, overflow=key == OTHER_ADDRESSES)

    def expire(self, now: datetime | None = None, *, everything: bool = False) -> None:
        """Summarise the windows that are over (all of them with ``everything``)."""
        now = now or self._clock.now()
        while self._windows:
            window = next(iter(self._windows.values()))
            if not everything and window.started + self._window > now:
                break
            del self._windows[window.address]
            if window.more:
                self._summary(window, now)

    def _first(
        self, failure: FailedHandshake, refusal: str, now: datetime, *, overflow: bool
    ) -> None:
        facts = certificate_facts(failure.certificate_der) if failure.certificate_der else None
        message = _SSL_C_LINE.sub("", failure.message)[:TEXT_LIMIT]
        LOG.warning(
            "TLS handshake from %s failed: %s%s%s",
            failure.remote,
            printable(message),
            "" if facts is None else "; certificate " + printable(_describe(facts)),
            f"; more than {self._capacity} addresses failing: the rest are summarised together"
            if overflow
            else "",
        )
        self._audit(
            AuditEvent(
                TLS_REFUSED_ACTION,
                f"remote:{failure.remote}",
                f"remote:{failure.address}",
                "refused",
                {
                    "reason": refusal,
                    "openssl": message,
                    "verify_error": failure.verify_error,
                    "remote": failure.remote,
                    "certificate": facts,
                },
            ),
            now,
        )

    def _summary(self, window: _Window, now: datetime) -> None:
        reasons = ", ".join(f"{reason} x{count}" for reason, count in window.reasons.most_common())
        LOG.warning(
            "TLS handshakes from %s: %d more failed in the %d s after the first (%s)",
            window.address,
            window.more,
            int(self._window.total_seconds()),
            reasons,
        )
        self._audit(
            AuditEvent(
                TLS_REFUSED_ACTION,
                f"remote:{window.address}",
                f"remote:{window.address}",
                "refused",
                {
                    "reason": window.reasons.most_common(1)[0][0],
                    "repeated": window.more,
                    "reasons": dict(window.reasons),
                    "since": window.started.isoformat(),
                    "remote": window.address,
                },
            ),
            now,
        )

    def _audit(self, event: AuditEvent, at: datetime) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                LOG.error(
                    "%d failed-handshake events not kept: the database is behind", self.dropped
                )
        self._pending.append((event, at))
        self._wake.set()

    async def write_pending(self) -> None:
        """Write the queued audit events, oldest first."""
        while self._pending:
            item = self._pending[0]  # removed once written: a cancelled write is retried
            try:
                await self._store.append_audit(*item)
            except Exception:
                LOG.exception("failed-handshake event not kept: %s", item[0].detail.get("reason"))
            if self._pending and self._pending[0] is item:
                self._pending.popleft()

    async def _run(self) -> None:
        tick = min(self._window.total_seconds() / 4, 10.0)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            self.expire()
            await self.write_pending()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HandshakeFailures]:
        """Write events in the background while inside; at exit summarise every open
        window and write what is left."""
        task = asyncio.create_task(self._run(), name="failed TLS handshakes")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.expire(everything=True)
            await self.write_pending()


def _describe(facts: dict[str, str]) -> str:
    if "subject" not in facts:
        return f"sha256 {facts['sha256']} (unparsed: {facts.get('unparsed')})"
    return (
        f"subject {facts['subject']!s}, issuer {facts['issuer']}, serial {facts['serial']}, "
        f"sha256 {facts['sha256']}"
    )
