"""Reports stations send without expecting anything back -- StatusNotification,
NotifyEvent, NotifyReport, FirmwareStatusNotification, LogStatusNotification -- stored
as received, for `pkictl station reports` and for the issues that act on them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pki.clock import Clock


@dataclass(frozen=True)
class Report:
    station_id: str
    action: str
    received_at: datetime
    payload: str
    """The message as received (snake_case keys), JSON."""


class ReportStore(Protocol):
    async def add(self, report: Report) -> None: ...
    async def list(self, station_id: str, limit: int) -> list[Report]:
        """The most recent ``limit`` reports of the station, oldest first."""
        ...


class ReportService:
    def __init__(self, store: ReportStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def received(self, station_id: str, action: str, payload: Mapping[str, Any]) -> None:
        await self._store.add(
            Report(
                station_id,
                action,
                self._clock.now(),
                json.dumps(payload, sort_keys=True, default=str),
            )
        )

    async def list(self, station_id: str, limit: int = 50) -> list[Report]:
        return await self._store.list(station_id, limit)
