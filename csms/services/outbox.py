"""Calls from the CSMS to stations, through a durable outbox.

Services that need a station to do something (TriggerMessage, CertificateSigned, ...)
see only `CallMaker.enqueue`: the call is written to the database and delivered when
the station is connected -- at once if it is, when it comes back if not; a call in
flight when its node stopped or was lost is sent again by the node that holds the
station next (ADR 13). One call in flight per station; each ends answered, failed
(CALLERROR) or timed out, with the answer kept.

Delivery is woken in-process when a call is queued on this node; calls queued by the
CLI or another node wake it through `csms.db.notify` (NOTIFY on PostgreSQL, a Unix
datagram on SQLite), and are found by one poll per interval for all connected stations
anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from csms.domain.outbox import CallEvent, CallState, advance
from pki.clock import Clock

LOG = logging.getLogger("pkictl.outbox")
RESPONSE_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 2.0


@dataclass(frozen=True)
class OutboxItem:
    id: int
    station_id: str
    action: str
    payload: dict[str, Any]
    state: CallState
    attempts: int
    created_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    response: dict[str, Any] | None = None
    error: str | None = None


class OutboxStore(Protocol):
    async def add(
        self, station_id: str, action: str, payload: str, at: datetime, *, announce: bool = True
    ) -> int:
        """Queue a call. ``announce``: wake the other nodes (NOTIFY, a datagram) -- not
        needed when the caller's node holds the station and delivers it itself."""
        ...

    async def oldest_queued(self, station_id: str) -> OutboxItem | None: ...
    async def move(
        self,
        item_id: int,
        from_state: CallState,
        to_state: CallState,
        at: datetime,
        *,
        response: str | None = None,
        error: str | None = None,
        node_id: str | None = None,
    ) -> bool:
        """Change the item's state if it is still in ``from_state``; False otherwise.
        ``node_id``: the node sending it (to SENT), so that its calls in flight are
        queued again if it is lost."""
        ...

    async def stations_with_queued(self, station_ids: Sequence[str]) -> list[str]:
        """Those of ``station_ids`` with at least one queued call."""
        ...

    async def list(self, station_id: str | None, limit: int) -> list[OutboxItem]: ...


class CallMaker(Protocol):
    """The narrow way services ask a station to do something."""

    async def enqueue(self, station_id: str, action: str, payload: Mapping[str, Any]) -> int: ...


class CallRejected(Exception):
    """The station answered CALLERROR."""


class StationGone(Exception):
    """The connection closed before the answer came."""


Sender = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends one call (action, snake_case payload) and returns the answer's payload."""
Listener = Callable[[OutboxItem], Awaitable[None]]


@dataclass
class Outbox:
    """Connected stations are attached with their Sender; a delivery task runs only while
    a station has calls to deliver, so an idle station costs a dict entry, not a task."""

    store: OutboxStore
    clock: Clock
    response_timeout: float = RESPONSE_TIMEOUT_S
    poll_interval: float = POLL_INTERVAL_S
    node_id: str | None = None
    """This node (ADR 13): recorded on each call it sends."""
    _senders: dict[str, Sender] = field(default_factory=dict)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _woken: set[str] = field(default_factory=set)
    _listeners: dict[str, list[Listener]] = field(default_factory=dict)

    async def enqueue(self, station_id: str, action: str, payload: Mapping[str, Any]) -> int:
        # a station connected here is woken here; telling the other nodes would wake
        # each of them for nothing (a stale connection's call is found by the poll)
        item_id = await self.store.add(
            station_id, action, json.dumps(dict(payload), sort_keys=True), self.clock.now(),
            announce=station_id not in self._senders,
        )  # fmt: skip
        self._wake(station_id)
        return item_id

    async def list(self, station_id: str | None = None, limit: int = 50) -> list[OutboxItem]:
        return await self.store.list(station_id, limit)

    def listen(self, action: str, listener: Listener) -> None:
        """Call ``listener`` with each ``action`` call this node ends (answered, failed or
        timed out), once its outcome is stored."""
        self._listeners.setdefault(action, []).append(listener)

    def attach(self, station_id: str, send: Sender) -> None:
        """The station is connected: deliver what is queued for it, and what comes."""
        self._senders[station_id] = send
        self._wake(station_id)

    async def detach(self, station_id: str, send: Sender) -> None:
        """The station's connection ended (its Sender now fails at once). The delivery
        ends by itself -- a call in flight goes back to the queue -- and is awaited, not
        cancelled, so that no database write is cut off. A newer connection of the same
        station (already attached) keeps its delivery."""
        if self._senders.get(station_id) != send:  # a bound method is a new object each time
            return
        del self._senders[station_id]
        delivery = self._running.get(station_id)
        if delivery is not None:
            await asyncio.gather(delivery, return_exceptions=True)

    async def watch(self, stop: asyncio.Event) -> None:
        """Wake the delivery of connected stations that have calls queued elsewhere (the
        CLI, another node): one query per poll interval, whatever the fleet size. Ends
        when ``stop`` is set -- between queries, never cancelled in the middle of one."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            if stop.is_set() or not self._senders:
                continue
            try:
                queued = await self.store.stations_with_queued(list(self._senders))
            except Exception:  # the next round tries again; a dead watcher would stall all
                LOG.exception("outbox: looking for calls queued elsewhere failed")
                continue
            for station_id in queued:
                self._wake(station_id)

    def wake(self, station_id: str) -> None:
        """A call was queued for the station elsewhere (another node, the CLI)."""
        self._wake(station_id)

    def _wake(self, station_id: str) -> None:
        if station_id not in self._senders:
            return  # delivered when it connects
        if station_id in self._running:
            self._woken.add(station_id)  # the running delivery looks again before it ends
        else:
            self._running[station_id] = asyncio.create_task(self._deliver(station_id))

    async def _deliver(self, station_id: str) -> None:
        """Deliver the station's queued calls one at a time, then end."""
        try:
            while (send := self._senders.get(station_id)) is not None:
                self._woken.discard(station_id)
                item = await self.store.oldest_queued(station_id)
                if item is None:
                    if station_id in self._woken:
                        continue  # queued while we looked
                    return
                gone = not await self._call(item, send)
                if gone and self._senders.get(station_id) == send:
                    return  # no newer connection to deliver to
        except Exception:  # the watcher wakes it again within a poll interval
            LOG.exception("outbox: delivery to %s failed", station_id)
        finally:
            if self._running.get(station_id) is asyncio.current_task():
                del self._running[station_id]
            self._woken.discard(station_id)

    async def _call(self, item: OutboxItem, send: Sender) -> bool:
        """One delivery; False when the station went away meanwhile."""
        if not await self._move(item, CallEvent.SEND):
            return True  # another deliverer took it
        try:
            response = await asyncio.wait_for(
                send(item.action, item.payload), self.response_timeout
            )
        except StationGone:
            await self._move(item, CallEvent.DISCONNECT, from_state=CallState.SENT)
            return False
        except asyncio.CancelledError:  # the session ended mid-call: send it again later
            await self._move(item, CallEvent.DISCONNECT, from_state=CallState.SENT)
            raise
        except CallRejected as rejected:
            LOG.warning(
                "station %s rejected %s #%d: %s", item.station_id, item.action, item.id, rejected
            )
            await self._finish(item, CallEvent.CALL_ERROR, error=str(rejected))
        except TimeoutError:
            LOG.warning("station %s did not answer %s #%d", item.station_id, item.action, item.id)
            error = f"no answer within {self.response_timeout:g} s"
            await self._finish(item, CallEvent.TIMEOUT, error=error)
        else:
            await self._finish(item, CallEvent.ANSWER, response=response)
        return True

    async def _finish(
        self,
        item: OutboxItem,
        event: CallEvent,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Keep the outcome, then tell the service that asked for the call."""
        stored = None if response is None else json.dumps(response, sort_keys=True, default=str)
        if not await self._move(
            item, event, from_state=CallState.SENT, response=stored, error=error
        ):
            return
        ended = replace(item, state=advance(CallState.SENT, event), response=response, error=error)
        for listener in self._listeners.get(item.action, ()):
            try:
                await listener(ended)
            except Exception:  # one service's failure must not stop the deliveries
                LOG.exception("outbox: handling the outcome of %s #%d failed", item.action, item.id)

    async def _move(
        self,
        item: OutboxItem,
        event: CallEvent,
        *,
        from_state: CallState | None = None,
        response: str | None = None,
        error: str | None = None,
    ) -> bool:
        state = from_state or item.state
        return await self.store.move(
            item.id, state, advance(state, event), self.clock.now(), response=response,
            error=error, node_id=self.node_id,
        )  # fmt: skip
