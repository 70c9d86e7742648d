"""Who is connected, and how their BootNotification is answered.

A station admitted with an expired certificate (A00.FR.429) is answered Pending until
it has renewed; everyone else Accepted. Sessions are kept in memory for the messages
and written through to the database for `pkictl station list` -- `last_seen` at most
once a minute per station, so heartbeats do not turn into a write each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from pki.clock import Clock

HEARTBEAT_INTERVAL_S = 300
CLOSED_ACTION = "connection.closed"
"""Audited when the CSMS ends a station's session for a security reason (its
certificate revoked)."""
PENDING_RETRY_S = 60
SEEN_WRITE_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionRecord:
    station_id: str
    online: bool
    security_profile: int
    remote: str
    boot_pending: bool
    certificate_serial: str | None
    certificate_not_after: datetime | None
    connected_at: datetime
    last_seen: datetime
    node_id: str | None = None
    """The node holding the connection (ADR 13)."""


class SessionStore(Protocol):
    async def save(self, record: SessionRecord) -> None:
        """Insert or replace the station's session row."""
        ...

    async def seen(self, station_id: str, at: datetime) -> None: ...
    async def offline(self, station_id: str, node_id: str | None, at: datetime) -> None:
        """The connection ``node_id`` held ended -- unless the station has connected to
        another node meanwhile."""
        ...

    async def held_elsewhere(self, station_ids: list[str], node_id: str) -> list[str]:
        """Those of ``station_ids`` whose session row names another node."""
        ...

    async def revoked_serials(self, serials: list[str]) -> set[str]:
        """Those of the certificate ``serials`` (hex) that are revoked."""
        ...

    async def list(self) -> list[SessionRecord]: ...


@dataclass(frozen=True)
class BootAnswer:
    accepted: bool
    interval: int
    at: datetime


class SessionService:
    def __init__(
        self,
        store: SessionStore,
        clock: Clock,
        heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
        node_id: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._node_id = node_id
        self._online: dict[str, SessionRecord] = {}
        self._written: dict[str, datetime] = {}

    async def moved_elsewhere(self) -> list[str]:
        """Stations this node holds a connection of that have connected to another node
        since (a half-open socket here; ADR 13): their connection here is stale."""
        if self._node_id is None or not self._online:
            return []
        return await self._store.held_elsewhere(sorted(self._online), self._node_id)

    async def revoked(self) -> list[SessionRecord]:
        """Sessions on this node whose station presented a certificate revoked since
        (by any process: the CLI, the daemon, another node), read from the database."""
        presented = {r.certificate_serial: r for r in self._online.values() if r.certificate_serial}
        if not presented:
            return []
        revoked = await self._store.revoked_serials(sorted(presented))
        return [record for serial, record in presented.items() if serial in revoked]

    async def reclaim(self) -> None:
        """This node had been declared lost (its stations put offline): they are not."""
        for record in list(self._online.values()):
            await self._store.save(record)

    async def connected(
        self,
        station_id: str,
        *,
        security_profile: int,
        boot_pending: bool,
        remote: str,
        certificate_serial: str | None,
        certificate_not_after: datetime | None,
    ) -> None:
        now = self._clock.now()
        record = SessionRecord(
            station_id, True, security_profile, remote, boot_pending,
            certificate_serial, certificate_not_after, now, now, self._node_id,
        )  # fmt: skip
        self._online[station_id] = record
        self._written[station_id] = now
        await self._store.save(record)

    async def disconnected(self, station_id: str) -> None:
        self._online.pop(station_id, None)
        self._written.pop(station_id, None)
        await self._store.offline(station_id, self._node_id, self._clock.now())

    def online(self) -> list[SessionRecord]:
        return sorted(self._online.values(), key=lambda s: s.station_id)

    async def boot(self, station_id: str) -> BootAnswer:
        session = await self.seen(station_id)
        if session.boot_pending:
            return BootAnswer(False, PENDING_RETRY_S, session.last_seen)
        return BootAnswer(True, self._heartbeat_interval, session.last_seen)

    async def seen(self, station_id: str) -> SessionRecord:
        """A message from the station: it is alive now."""
        now = self._clock.now()
        session = replace(self._online[station_id], last_seen=now)
        self._online[station_id] = session
        if now - self._written.get(station_id, now) >= SEEN_WRITE_INTERVAL:
            self._written[station_id] = now
            await self._store.seen(station_id, now)
        return session
