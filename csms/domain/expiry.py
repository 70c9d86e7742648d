"""Which expiry alert a certificate still in use has earned: pure, time passed in.

Every certificate enters its warning window (90 days by default) and is normally renewed
within days of it, so the warning is for a certificate whose renewal is not
progressing: none started although its start (renewal point plus jitter) has passed,
the last one failed or was abandoned, or the one open waits for a station that is
offline. Critical levels (30 and 14 days by default) are for any certificate still in
use then -- but only levels below the certificate's renewal lead (notAfter minus its
start): a 60-day SECC certificate renewed 20 days before expiry is not critical at 30
days on every cycle. Each alert is raised once per certificate and level (the caller's
once-key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class ExpiryLevel(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class ExpiryThresholds:
    warning_days: int = 90
    critical_days: tuple[int, ...] = (30, 14)


@dataclass(frozen=True)
class RenewalProgress:
    """Where one certificate's renewal stands."""

    not_after: datetime
    starts_at: datetime
    """Its renewal point plus its jitter: when the daemon starts its renewal."""
    open_state: str | None = None
    """The state of the renewal open for it; None if none is open."""
    open_since: datetime | None = None
    """When the open renewal last moved."""
    last_failed: bool = False
    """No renewal is open and the last one ended failed (or was abandoned)."""
    online: bool = True
    """Its station is connected."""


@dataclass(frozen=True)
class ExpiryAlert:
    level: ExpiryLevel
    days: int
    """The threshold reached."""


def not_progressing(
    progress: RenewalProgress, now: datetime, stalled_after: timedelta
) -> str | None:
    """Why the certificate's renewal is not progressing, or None if it is (or is not
    due to start yet)."""
    if progress.open_state is None:
        if progress.last_failed:
            return "its last renewal failed"
        if now >= progress.starts_at:
            return f"no renewal started (due since {progress.starts_at:%Y-%m-%d %H:%M} UTC)"
        return None
    since = progress.open_since or now
    if not progress.online and now - since >= stalled_after:
        return f"its renewal is {progress.open_state} and the station is offline"
    return None


def expiry_alert(
    progress: RenewalProgress, now: datetime, thresholds: ExpiryThresholds,
    stalled_after: timedelta,
) -> ExpiryAlert | None:  # fmt: skip
    """The most severe alert the certificate has reached now, if any."""
    left = progress.not_after - now
    lead = progress.not_after - progress.starts_at
    for days in sorted(thresholds.critical_days):
        if left <= timedelta(days=days) and timedelta(days=days) < lead:
            return ExpiryAlert(ExpiryLevel.CRITICAL, days)
    if left <= timedelta(days=thresholds.warning_days) and not_progressing(
        progress, now, stalled_after
    ):
        return ExpiryAlert(ExpiryLevel.WARNING, thresholds.warning_days)
    return None
