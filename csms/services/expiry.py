"""Expiry alerts and the view of the expiry window: no certificate expires unnoticed,
and the operator is not flooded (every certificate enters its 90-day window and is
normally renewed within days of it).

- `check` (each renewal scan): for each station certificate still in use (valid, not
  superseded) inside the warning window, the alert `certificate-expiring` its
  `csms.domain.expiry` level calls for -- a warning when its renewal is not progressing,
  critical at the critical levels whatever it does -- once per certificate and level
  (alerts.once_key, migration 0017). The key of the last critical level is the one the
  single 14-day alert had before, so an alert raised by an older version is not raised
  again.
- `upcoming`: what starts within a number of days, with `starts_at` (so a renewal
  deferred by its jitter is visible), and `window`: how the certificates of the
  warning window stand (`pkictl renew --due --dry-run`).

Thresholds: `[renewal] expiry_warning_days` (90), `expiry_critical_days` (30) and
`expiry_alert_days` (14) in pkictl.toml.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from csms.domain.expiry import (
    ExpiryLevel,
    ExpiryThresholds,
    RenewalProgress,
    expiry_alert,
    not_progressing,
)
from csms.domain.renewal import CertificateKind
from csms.services.alerts import Alerts
from csms.services.renewal_ports import Renewal, RenewalSettings
from pki.clock import Clock
from pki.records import CertificateRecord

QUERY_LIMIT = 100_000


class ExpiringCertificates(Protocol):
    async def expiring_in_use(self, within: timedelta, limit: int) -> list[CertificateRecord]: ...
    async def due_for_renewal(
        self, limit: int, by: datetime | None = None
    ) -> list[CertificateRecord]: ...


class RenewalRecords(Protocol):
    async def open_renewal(self, station_id: str, kind: CertificateKind) -> Renewal | None: ...
    async def failures_since_success(
        self, station_id: str, kind: CertificateKind
    ) -> list[datetime]: ...
    async def online(self, station_ids: Sequence[str]) -> set[str]: ...


def thresholds_of(settings: RenewalSettings) -> ExpiryThresholds:
    return ExpiryThresholds(
        settings.expiry_warning_days,
        tuple(sorted({settings.expiry_critical_days, settings.expiry_alert_days}, reverse=True)),
    )


@dataclass(frozen=True)
class Standing:
    record: CertificateRecord
    station_id: str
    kind: CertificateKind
    progress: RenewalProgress
    renewal: Renewal | None
    """The renewal open for it, if any."""


@dataclass(frozen=True)
class Upcoming:
    """A station certificate whose renewal starts within the days asked."""

    station_id: str
    kind: CertificateKind
    serial_hex: str
    starts_at: datetime
    not_after: datetime
    renewal: Renewal | None
    """The renewal open for the station and kind, if any."""


@dataclass(frozen=True)
class ExpiryWindow:
    """The station certificates in use inside the warning window, by where their
    renewal stands."""

    days: int
    in_use: int
    renewing: int
    """A renewal is open and progressing."""
    starts_later: int
    """Not due yet: its start (threshold plus jitter) is still ahead."""
    not_progressing: int
    """No renewal after its start, the last one failed, or its station is offline."""


@dataclass(frozen=True)
class ExpiryWatch:
    ca: ExpiringCertificates
    store: RenewalRecords
    alerts: Alerts
    clock: Clock
    settings: RenewalSettings
    starts_at: Callable[[CertificateRecord], datetime]
    kind_of: Callable[[CertificateRecord], CertificateKind | None]

    async def _progress(
        self, records: Sequence[CertificateRecord], *, every: bool = False
    ) -> list[Standing]:
        """Where the renewal of each of ``records`` (station certificates) stands. Its
        renewals are read only once its start has passed (or for ``every``): in the
        scan, most certificates of the window are not due yet, or being renewed."""
        now = self.clock.now()
        found: list[Standing] = []
        for record in records:
            kind = self.kind_of(record)
            if kind is None or record.station_id is None:
                continue
            progress = RenewalProgress(record.not_after, self.starts_at(record))
            renewal = None
            if every or progress.starts_at <= now:
                renewal = await self.store.open_renewal(record.station_id, kind)
                if renewal is not None:
                    progress = replace(
                        progress, open_state=renewal.state.value, open_since=renewal.updated_at
                    )
                elif await self.store.failures_since_success(record.station_id, kind):
                    progress = replace(progress, last_failed=True)
            found.append(Standing(record, record.station_id, kind, progress, renewal))
        # connected or not matters only for an open renewal that has not moved for a while
        stalled_after = timedelta(seconds=self.settings.retry_after_s)
        quiet = {
            s.station_id for s in found
            if s.progress.open_since is not None and now - s.progress.open_since >= stalled_after
        }  # fmt: skip
        online = await self.store.online(sorted(quiet)) if quiet else set()
        return [
            replace(s, progress=replace(s.progress, online=False))
            if s.station_id in quiet and s.station_id not in online else s
            for s in found
        ]  # fmt: skip

    async def check(self) -> int:
        """Raise the expiry alerts due now; how many were new."""
        thresholds = thresholds_of(self.settings)
        records = await self._candidates(thresholds)
        if not records:
            return 0
        now = self.clock.now()
        stalled_after = timedelta(seconds=self.settings.retry_after_s)
        raised = 0
        for standing in await self._progress(records):
            record, progress = standing.record, standing.progress
            alert = expiry_alert(progress, now, thresholds, stalled_after)
            if alert is None:
                continue
            message = (
                f"{alert.level.value}: certificate {record.serial_hex} expires "
                f"{record.not_after:%Y-%m-%d %H:%M} UTC (in {(record.not_after - now).days} "
                f"days) and is still in use; {_standing(standing, now, stalled_after)}"
            )
            last_level = alert.level is ExpiryLevel.CRITICAL and alert.days == min(
                thresholds.critical_days
            )
            prefix = "expiring" if last_level else f"expiring-{alert.level.value}-{alert.days}"
            raised += await self.alerts.raise_once(
                "certificate-expiring", standing.station_id, message,
                key=f"{prefix}:{record.issuer_name_hash[:16]}:{record.serial_hex}",
                warning=alert.level is ExpiryLevel.WARNING,
            )  # fmt: skip
        return raised

    async def _candidates(self, thresholds: ExpiryThresholds) -> list[CertificateRecord]:
        """The certificates that may have earned an alert, without reading the whole
        window on every scan (a quarter of a fleet of one-year certificates is always
        in it): those in use inside the largest critical level, and those inside the
        warning window whose renewal point has passed (a warning needs its start
        passed, which is at or after that point)."""
        now = self.clock.now()
        critical = timedelta(days=max(thresholds.critical_days))
        warning_until = now + timedelta(days=thresholds.warning_days)
        found = {
            (r.issuer_name_hash, r.serial_hex): r
            for r in await self.ca.expiring_in_use(critical, QUERY_LIMIT)
        }
        for record in await self.ca.due_for_renewal(QUERY_LIMIT):
            if now < record.not_after <= warning_until:
                found.setdefault((record.issuer_name_hash, record.serial_hex), record)
        return list(found.values())

    async def window(self) -> ExpiryWindow:
        days = self.settings.expiry_warning_days
        records = await self.ca.expiring_in_use(timedelta(days=days), QUERY_LIMIT)
        now = self.clock.now()
        stalled_after = timedelta(seconds=self.settings.retry_after_s)
        counts: Counter[str] = Counter()
        for standing in await self._progress(records, every=True):
            if not_progressing(standing.progress, now, stalled_after):
                counts["not_progressing"] += 1
            elif standing.renewal is not None:
                counts["renewing"] += 1
            else:
                counts["starts_later"] += 1
        return ExpiryWindow(
            days, sum(counts.values()), counts["renewing"], counts["starts_later"],
            counts["not_progressing"],
        )  # fmt: skip

    async def upcoming(self, within: timedelta) -> list[Upcoming]:
        """The station certificates in use whose renewal starts by now + ``within``
        (started ones included, with their open renewal), soonest start first."""
        by = self.clock.now() + within
        records = await self.ca.due_for_renewal(QUERY_LIMIT, by=by)
        found = [
            Upcoming(
                s.station_id,
                s.kind,
                s.record.serial_hex,
                s.progress.starts_at,
                s.record.not_after,
                s.renewal,
            )
            for s in await self._progress(records, every=True)
            if s.progress.starts_at <= by
        ]
        return sorted(found, key=lambda u: (u.starts_at, u.station_id, u.kind.value))


def _standing(standing: Standing, now: datetime, stalled_after: timedelta) -> str:
    """What an alert says of the certificate's renewal."""
    renewal = standing.renewal
    if renewal is None:
        return not_progressing(standing.progress, now, stalled_after) or "no renewal is open"
    offline = "" if standing.progress.online else " and the station is offline"
    return f"its renewal #{renewal.id} is {renewal.state.value}{offline}"
