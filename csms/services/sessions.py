"""Who is connected, and how their BootNotification is answered.

In memory for now: the connection registry moves to the database with the multi-node
issue. A station admitted with an expired certificate (A00.FR.429) is answered Pending
until it has renewed; everyone else Accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pki.clock import Clock

HEARTBEAT_INTERVAL_S = 300
PENDING_RETRY_S = 60


@dataclass(frozen=True)
class BootAnswer:
    accepted: bool
    interval: int
    at: datetime


@dataclass
class OnlineStation:
    station_id: str
    security_profile: int
    boot_pending: bool
    remote: str
    connected_at: datetime
    last_seen: datetime


class SessionService:
    def __init__(self, clock: Clock, heartbeat_interval: int = HEARTBEAT_INTERVAL_S) -> None:
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._online: dict[str, OnlineStation] = {}

    def connected(
        self, station_id: str, *, security_profile: int, boot_pending: bool, remote: str
    ) -> None:
        now = self._clock.now()
        self._online[station_id] = OnlineStation(
            station_id, security_profile, boot_pending, remote, now, now
        )

    def disconnected(self, station_id: str) -> None:
        self._online.pop(station_id, None)

    def online(self) -> list[OnlineStation]:
        return sorted(self._online.values(), key=lambda s: s.station_id)

    def boot(self, station_id: str) -> BootAnswer:
        station = self._seen(station_id)
        if station.boot_pending:
            return BootAnswer(False, PENDING_RETRY_S, station.last_seen)
        return BootAnswer(True, self._heartbeat_interval, station.last_seen)

    def heartbeat(self, station_id: str) -> datetime:
        return self._seen(station_id).last_seen

    def _seen(self, station_id: str) -> OnlineStation:
        station = self._online[station_id]
        station.last_seen = self._clock.now()
        return station
