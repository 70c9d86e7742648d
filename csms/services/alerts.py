"""Alerts: what an operator must act on (a renewal that failed, or that will not be tried
again). Logged at ERROR with an ALERT prefix for log-based alerting, and kept for
`pkictl alerts list`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pki.clock import Clock

LOG = logging.getLogger("pkictl.alerts")


@dataclass(frozen=True)
class Alert:
    id: int
    code: str
    station_id: str | None
    message: str
    raised_at: datetime


class AlertStore(Protocol):
    async def add(
        self,
        code: str,
        station_id: str | None,
        message: str,
        at: datetime,
        once_key: str | None = None,
    ) -> int | None:
        """The new alert's id; None if ``once_key`` was raised before (nothing added)."""
        ...

    async def list(self, station_id: str | None, limit: int) -> list[Alert]: ...


@dataclass(frozen=True)
class Alerts:
    store: AlertStore
    clock: Clock

    async def raise_alert(self, code: str, station_id: str | None, message: str) -> None:
        LOG.error("ALERT %s %s: %s", code, station_id or "-", message)
        await self.store.add(code, station_id, message, self.clock.now())

    async def raise_once(
        self, code: str, station_id: str | None, message: str, key: str, *, warning: bool = False
    ) -> bool:
        """Raise the alert unless one with ``key`` was raised before; whether it was new.
        ``warning``: logged at WARNING rather than ERROR (still with the ALERT prefix)."""
        if await self.store.add(code, station_id, message, self.clock.now(), once_key=key) is None:
            return False
        LOG.log(logging.WARNING if warning else logging.ERROR, "ALERT %s %s: %s", code,
                station_id or "-", message)  # fmt: skip
        return True

    async def list(self, station_id: str | None = None, limit: int = 100) -> list[Alert]:
        return await self.store.list(station_id, limit)
