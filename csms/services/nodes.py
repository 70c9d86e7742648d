"""Several `pkictl serve` processes on one database: nodes, their heartbeats, and leases
for the work only one of them may do at a time (ADR 13).

Each serving process is a node with an id of its own, registered at start and
refreshed every few seconds. A node silent for longer than its lease is lost: the first
node to notice declares it so, in one transaction that puts its stations offline and
its calls in flight back in the queue (each is sent again by whichever node holds the
station next). The daemon's periodic work -- the renewal scan, server certificates,
CRLs -- runs on the node holding the "lifecycle" lease, kept by its heartbeat and free
for another node once it is lost. Everything a station itself starts runs on the node
holding its connection; the database's conditional updates keep concurrent nodes from
doing one step twice.

Time is the app's Clock on every node: nodes on several hosts need synchronized clocks
(NTP); a lease of 15 s tolerates a few seconds of skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pki.clock import Clock

LOG = logging.getLogger("pkictl.nodes")
HEARTBEAT_S = 5.0
LEASE_S = 15.0
LIFECYCLE_LEASE = "lifecycle"


@dataclass(frozen=True)
class NodeRecord:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    stop_reason: str | None = None
    """"stopped" (it said so) or "lost" (it went silent)."""
    stations: int = 0
    """Stations whose connection it holds (as listed)."""
    leases: tuple[str, ...] = ()
    """Leases it holds (as listed)."""


class NodeStore(Protocol):
    async def register(self, node: NodeRecord) -> None: ...
    async def heartbeat(self, node_id: str, at: datetime, lease_until: datetime) -> bool:
        """Refresh the node and the leases it holds; True if it had been declared lost
        meanwhile (it is live again)."""
        ...

    async def stop(self, node_id: str, at: datetime) -> None:
        """The node ends: stopped, its leases released."""
        ...

    async def reap(
        self, silent_since: datetime, at: datetime, *, sweep: bool, dead: Sequence[str] = ()
    ) -> list[str]:
        """Declare lost every live node silent since before ``silent_since``: its
        stations offline, its calls in flight queued again, in one transaction. The ids
        this call declared lost (one caller wins each). ``dead``: nodes known to be gone
        whatever their heartbeat says. ``sweep``: also the stations and calls of any node
        not live, and of none (rows older than nodes)."""
        ...

    async def take_lease(self, name: str, node_id: str, at: datetime, until: datetime) -> bool:
        """Hold lease ``name`` until ``until`` if it is free, expired or already ours."""
        ...

    async def list(self, *, include_stopped: bool, at: datetime) -> list[NodeRecord]: ...


def new_node_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class NodeService:
    store: NodeStore
    clock: Clock
    node_id: str = field(default_factory=new_node_id)
    heartbeat_s: float = HEARTBEAT_S
    lease_s: float = LEASE_S
    revived: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Called when this node learns it had been declared lost (a long pause): its
    sessions were put offline and must be claimed again."""

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)

    async def start(self) -> None:
        """Declare lost the nodes that went silent (a previous run of this one killed),
        then register."""
        now = self.clock.now()
        await self._reap(now, sweep=True, dead=await self._dead_here())
        await self.store.register(
            NodeRecord(self.node_id, socket.gethostname(), os.getpid(), now, now)
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat and look for lost nodes until ``stop`` is set (between rounds)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_s)
            if stop.is_set():
                return
            try:
                await self.beat()
            except Exception:  # the next round tries again; leases expire meanwhile
                LOG.exception("node %s: heartbeat failed", self.node_id)

    async def beat(self) -> None:
        now = self.clock.now()
        if await self.store.heartbeat(self.node_id, now, now + self.lease):
            LOG.warning("node %s had been declared lost (silent > %g s): claiming its "
                        "stations again", self.node_id, self.lease_s)  # fmt: skip
            for revive in self.revived:
                await revive()
        await self._reap(now, sweep=False, dead=await self._dead_here())

    async def lead(self, name: str = LIFECYCLE_LEASE) -> bool:
        """Hold lease ``name`` (taken if free or expired, kept by the heartbeat)."""
        now = self.clock.now()
        return await self.store.take_lease(name, self.node_id, now, now + self.lease)

    async def stop(self) -> None:
        await self.store.stop(self.node_id, self.clock.now())

    async def _dead_here(self) -> list[str]:
        """Live-looking nodes of this host whose process is gone (killed): declared lost at
        once instead of after their lease. A reused pid only means
        waiting for the lease. Assumes hosts have distinct names (containers do)."""
        host = socket.gethostname()
        return [
            node.id for node in await self.list()
            if node.host == host and node.pid != os.getpid() and not _running(node.pid)
        ]  # fmt: skip

    async def _reap(self, now: datetime, *, sweep: bool, dead: Sequence[str] = ()) -> None:
        for lost in await self.store.reap(now - self.lease, now, sweep=sweep, dead=dead):
            LOG.warning("node %s went silent: its stations are offline, its calls in "
                        "flight queued again", lost)  # fmt: skip

    async def list(self, *, include_stopped: bool = False) -> list[NodeRecord]:
        return await self.store.list(include_stopped=include_stopped, at=self.clock.now())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True
