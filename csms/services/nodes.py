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

A busy node is not a lost one. On a loaded machine a node's loop, or its database, can
be starved for longer than a lease while the process is alive and working; declaring it
lost then puts its stations offline and sends its calls again for nothing. So silence is
judged with two allowances (issue #22, item 28):

- a node whose own heartbeat came late (its loop or its database was starved) does not
  judge others by silence that round: what starved it most likely starved them too;
- a node of this host whose process is still running is given ``SAME_HOST_LEASES``
  leases of silence, not one: a killed one is seen at once by its pid, so patience
  costs nothing there. (A pid reused by another process only makes that wait longer.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
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
SAME_HOST_LEASES = 4
"""Leases of silence a node of this host is given while its process runs."""


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
        self,
        silent_since: datetime | None,
        at: datetime,
        *,
        sweep: bool,
        dead: Sequence[str] = (),
        patient: Sequence[str] = (),
        patient_since: datetime | None = None,
    ) -> list[str]:
        """Declare lost every live node silent since before ``silent_since`` (None: judge
        no node by silence): its stations offline, its calls in flight queued again, in
        one transaction. The ids this call declared lost (one caller wins each).
        ``dead``: nodes known to be gone whatever their heartbeat says. ``patient``:
        nodes judged by ``patient_since`` instead. ``sweep``: also the stations and
        calls of any node not live, and of none (rows older than nodes)."""
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
    monotonic: Callable[[], float] = time.monotonic
    """Real elapsed time, to tell a starved heartbeat (the app clock may be simulated)."""
    _last_beat: float | None = field(default=None, init=False)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)

    async def start(self) -> None:
        """Declare lost the nodes that went silent (a previous run of this one killed),
        then register."""
        now = self.clock.now()
        await self._reap(now, sweep=True)
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
        started = self.monotonic()
        now = self.clock.now()
        if await self.store.heartbeat(self.node_id, now, now + self.lease):
            LOG.warning("node %s had been declared lost (silent > %g s): claiming its "
                        "stations again", self.node_id, self.lease_s)  # fmt: skip
            for revive in self.revived:
                await revive()
        done, previous = self.monotonic(), self._last_beat
        self._last_beat = done
        late = done - started > self.heartbeat_s or (
            previous is not None and started - previous > 2 * self.heartbeat_s
        )
        if late:
            LOG.info("node %s: its own heartbeat came late (a busy machine): no node is "
                     "judged by its silence this round", self.node_id)  # fmt: skip
        await self._reap(now, sweep=False, judge_silence=not late)

    async def lead(self, name: str = LIFECYCLE_LEASE) -> bool:
        """Hold lease ``name`` (taken if free or expired, kept by the heartbeat)."""
        now = self.clock.now()
        return await self.store.take_lease(name, self.node_id, now, now + self.lease)

    async def stop(self) -> None:
        await self.store.stop(self.node_id, self.clock.now())

    async def _others_here(self) -> tuple[list[str], list[str]]:
        """Live-looking nodes of other processes of this host: (dead, running). One whose
        process is gone (killed) is declared lost at once instead of after its lease;
        one whose process runs is given ``SAME_HOST_LEASES`` leases. Assumes hosts have
        distinct names (containers do)."""
        host = socket.gethostname()
        dead: list[str] = []
        running: list[str] = []
        for node in await self.list():
            if node.host == host and node.pid != os.getpid():
                (running if _running(node.pid) else dead).append(node.id)
        return dead, running

    async def _reap(self, now: datetime, *, sweep: bool, judge_silence: bool = True) -> None:
        dead, running = await self._others_here()
        lost_nodes = await self.store.reap(
            now - self.lease if judge_silence else None, now, sweep=sweep, dead=dead,
            patient=running, patient_since=now - SAME_HOST_LEASES * self.lease,
        )  # fmt: skip
        for lost in lost_nodes:
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
