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
from enum import StrEnum
from typing import Any, Protocol

from csms.domain.outbox import CallEvent, CallState, advance
from pki.clock import Clock

LOG = logging.getLogger("pkictl.outbox")
RESPONSE_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 2.0
BOOT_GRACE_S = 3.0
BOOT_NOTIFICATION = "BootNotification"
PENDING_ALLOWED = frozenset(
    {"GetVariables", "SetVariables", "GetBaseReport", "GetReport", "TriggerMessage",
     "CertificateSigned"}
)  # fmt: skip
"""What a station whose boot was answered Pending may be sent (B02.FR.01: retrieve
information -- B06 GetVariables, B07 GetBaseReport, B08 GetReport -- or change its
configuration, B05 SetVariables; B02.FR.02/B02.FR.04: TriggerMessage), and the
certificate renewal a Pending station is admitted for (A00.FR.429, errata 2025:
a station with an expired certificate is answered Pending and renewed at once, so
its CertificateSigned goes out too)."""


class Registration(StrEnum):
    """Where a connected station's boot stands, as far as calls to it are concerned."""

    WAITING = "waiting"
    """Just connected: a booting station sends BootNotification first (B01.FR.08), one
    that only reconnected sends anything else, or nothing for a while -- held until
    its first message, or BOOT_GRACE_S."""
    BOOTING = "booting"
    """Its BootNotification is not answered yet: nothing is sent (B02.FR.02)."""
    PENDING = "pending"
    """Answered Pending: only PENDING_ALLOWED goes out (B02.FR.01)."""
    ACCEPTED = "accepted"


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

    async def oldest_queued(
        self, station_id: str, actions: frozenset[str] | None = None
    ) -> OutboxItem | None:
        """The station's oldest queued call (of ``actions`` only, if given)."""
        ...

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
    boot_grace: float = BOOT_GRACE_S
    """How long a station attached ``waiting_for_boot`` that says nothing is waited for
    before it is taken as booted already (it only reconnected)."""
    _registration: dict[str, Registration] = field(default_factory=dict)
    _grace: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

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

    def attach(self, station_id: str, send: Sender, *, waiting_for_boot: bool = False) -> None:
        """The station is connected: deliver what is queued for it, and what comes.
        ``waiting_for_boot`` (a new connection): nothing goes out before its boot is
        answered Accepted -- only what B02 allows if Pending -- or, if its first message
        is not a BootNotification (or none comes within `boot_grace`), it was booted
        already; see `heard`, `booted`."""
        self._senders[station_id] = send
        if (timer := self._grace.pop(station_id, None)) is not None:
            timer.cancel()
        if waiting_for_boot:
            self._registration[station_id] = Registration.WAITING
            self._grace[station_id] = asyncio.get_running_loop().call_later(
                self.boot_grace, self._grace_over, station_id, send
            )
        else:
            self._registration.pop(station_id, None)
        self._wake(station_id)

    def heard(self, station_id: str, send: Sender, action: str) -> None:
        """The station's connection ``send`` sent a CALL of ``action``: a BootNotification
        holds its calls until it is answered; anything else first means it had booted."""
        if self._senders.get(station_id) != send:
            return  # an older connection's last words
        if action == BOOT_NOTIFICATION:
            self._set(station_id, Registration.BOOTING)
        elif self._registration.get(station_id) is Registration.WAITING:
            self._set(station_id, Registration.ACCEPTED)

    def booted(self, station_id: str, send: Sender, *, accepted: bool) -> None:
        """The BootNotificationResponse has been sent (Accepted or Pending)."""
        if self._senders.get(station_id) == send:
            self._set(station_id, Registration.ACCEPTED if accepted else Registration.PENDING)

    def registration(self, station_id: str) -> Registration:
        return self._registration.get(station_id, Registration.ACCEPTED)

    def _grace_over(self, station_id: str, send: Sender) -> None:
        if self._senders.get(station_id) == send:
            self._grace.pop(station_id, None)
            if self._registration.get(station_id) is Registration.WAITING:
                self._set(station_id, Registration.ACCEPTED)

    def _set(self, station_id: str, registration: Registration) -> None:
        if registration is not Registration.WAITING and (
            timer := self._grace.pop(station_id, None)
        ):
            timer.cancel()
        if registration is Registration.ACCEPTED:
            self._registration.pop(station_id, None)
        else:
            self._registration[station_id] = registration
        self._wake(station_id)

    async def withdraw(self, station_id: str, reason: str) -> int:
        """Fail every call queued for ``station_id`` with ``reason`` (it was removed: a
        station registered again under its id must not receive them). How many."""
        withdrawn = 0
        while (item := await self.store.oldest_queued(station_id)) is not None:
            to_state = advance(CallState.QUEUED, CallEvent.WITHDRAW)
            if await self.store.move(item.id, CallState.QUEUED, to_state, self.clock.now(),
                                     error=reason):  # fmt: skip
                withdrawn += 1
        if withdrawn:
            LOG.info("%s: %d queued call(s) withdrawn: %s", station_id, withdrawn, reason)
        return withdrawn

    async def detach(self, station_id: str, send: Sender) -> None:
        """The station's connection ended (its Sender now fails at once). The delivery
        ends by itself -- a call in flight goes back to the queue -- and is awaited, not
        cancelled, so that no database write is cut off. A newer connection of the same
        station (already attached) keeps its delivery."""
        if self._senders.get(station_id) != send:  # a bound method is a new object each time
            return
        del self._senders[station_id]
        self._registration.pop(station_id, None)
        if (timer := self._grace.pop(station_id, None)) is not None:
            timer.cancel()
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
        if self._registration.get(station_id) in (Registration.WAITING, Registration.BOOTING):
            return  # delivered once its boot is answered
        if station_id in self._running:
            self._woken.add(station_id)  # the running delivery looks again before it ends
        else:
            self._running[station_id] = asyncio.create_task(self._deliver(station_id))

    async def _deliver(self, station_id: str) -> None:
        """Deliver the station's queued calls one at a time, then end."""
        try:
            while (send := self._senders.get(station_id)) is not None:
                self._woken.discard(station_id)
                registration = self.registration(station_id)
                if registration in (Registration.WAITING, Registration.BOOTING):
                    return  # woken again once its boot is answered
                allowed = PENDING_ALLOWED if registration is Registration.PENDING else None
                item = await self.store.oldest_queued(station_id, allowed)
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
