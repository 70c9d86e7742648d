"""Outbox delivery over a real store: a delivery runs only while a station has calls,
calls queued at any moment are delivered once and in order, and a connection that ends
mid-call hands the call to the station's next connection.

The Sender (the station's side of the websocket) is the only stand-in: it records what
it is sent and answers as each test needs.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from csms.db.notify import wake_directory
from csms.db.outbox import SqlOutboxStore
from csms.domain.outbox import CallState
from csms.services.outbox import Outbox, StationGone
from pki.clock import FixedClock
from pki.store.sql import SqlStore

STATION = "CS001"


@pytest.fixture
async def outbox(sqlite_store: SqlStore, clock: FixedClock) -> Outbox:
    return Outbox(SqlOutboxStore(sqlite_store.database), clock, response_timeout=5.0)


class Station:
    """Answers Accepted; or, when `hold` is set, waits for `release` (its connection
    ending) and fails as a session does then."""

    def __init__(self, *, hold: bool = False) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.hold = hold
        self.release = asyncio.Event()
        self.got_call = asyncio.Event()

    async def send(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.received.append((action, payload))
        self.got_call.set()
        if self.hold:
            await self.release.wait()
            raise StationGone(STATION)
        return {"status": "Accepted"}


async def settled(outbox: Outbox, item_id: int, state: CallState) -> Any:
    for _ in range(200):
        found = next(i for i in await outbox.list(STATION) if i.id == item_id)
        if found.state is state:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"#{item_id} is {found.state}, never {state}")


async def idle(outbox: Outbox, baseline: int) -> None:
    """No delivery task is left once the queue is empty."""
    for _ in range(200):
        if len(asyncio.all_tasks()) == baseline:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(asyncio.all_tasks()) - baseline} tasks left running")


async def test_calls_queued_offline_are_delivered_at_attach_and_no_task_stays(
    outbox: Outbox,
) -> None:
    baseline = len(asyncio.all_tasks())
    first = await outbox.enqueue(STATION, "TriggerMessage", {"requested_message": "Heartbeat"})
    await asyncio.sleep(0.05)
    assert (await settled(outbox, first, CallState.QUEUED)).attempts == 0
    assert len(asyncio.all_tasks()) == baseline  # nothing runs for an offline station

    station = Station()
    outbox.attach(STATION, station.send)
    assert (await settled(outbox, first, CallState.ANSWERED)).response == {"status": "Accepted"}
    await idle(outbox, baseline)

    second = await outbox.enqueue(STATION, "Reset", {"type": "Immediate"})  # wakes it again
    await settled(outbox, second, CallState.ANSWERED)
    await idle(outbox, baseline)
    assert [action for action, _ in station.received] == ["TriggerMessage", "Reset"]
    await outbox.detach(STATION, station.send)


async def test_only_a_call_for_a_station_not_connected_here_wakes_the_other_nodes(
    outbox: Outbox, sqlite_store: SqlStore
) -> None:
    """On SQLite a queued call is announced by a datagram to each other serving process
    (csms.db.notify); the node holding the station delivers it itself, unannounced."""
    directory = wake_directory(sqlite_store.engine.url)
    assert directory is not None
    directory.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other_node:
        other_node.bind(str(directory / "1.sock"))
        other_node.setblocking(False)
        offline = await outbox.enqueue(STATION, "Reset", {"type": "Immediate"})
        assert other_node.recv(256) == STATION.encode()  # it may hold the station
        station = Station()
        outbox.attach(STATION, station.send)
        await settled(outbox, offline, CallState.ANSWERED)
        here = await outbox.enqueue(STATION, "Reset", {"type": "OnIdle"})
        await settled(outbox, here, CallState.ANSWERED)
        with pytest.raises(BlockingIOError):
            other_node.recv(256)  # nothing for the others to do
        await outbox.detach(STATION, station.send)


async def test_calls_queued_together_are_each_delivered_once_in_order(outbox: Outbox) -> None:
    station = Station()
    outbox.attach(STATION, station.send)
    ids = await asyncio.gather(
        *(outbox.enqueue(STATION, "Reset", {"type": "Immediate", "n": n}) for n in range(10))
    )
    for item_id in ids:
        await settled(outbox, item_id, CallState.ANSWERED)
    assert [payload["n"] for _, payload in station.received] == list(range(10))
    await outbox.detach(STATION, station.send)


async def test_a_connection_ending_mid_call_queues_the_call_again(outbox: Outbox) -> None:
    station = Station(hold=True)
    outbox.attach(STATION, station.send)
    item = await outbox.enqueue(STATION, "Reset", {"type": "Immediate"})
    await asyncio.wait_for(station.got_call.wait(), 5)
    station.release.set()  # the connection ended: the call in flight fails at once
    await asyncio.wait_for(outbox.detach(STATION, station.send), 5)
    assert (await settled(outbox, item, CallState.QUEUED)).attempts == 1


async def test_a_newer_connection_takes_over_the_call_its_predecessor_lost(
    outbox: Outbox,
) -> None:
    old, new = Station(hold=True), Station()
    outbox.attach(STATION, old.send)
    item = await outbox.enqueue(STATION, "Reset", {"type": "Immediate"})
    await asyncio.wait_for(old.got_call.wait(), 5)
    outbox.attach(STATION, new.send)  # the station reconnected before its old socket died
    await outbox.detach(STATION, old.send)  # the old session ends: no effect on the new one
    old.release.set()  # the old socket is gone: the call comes back and goes to the new one
    answered = await settled(outbox, item, CallState.ANSWERED)
    assert answered.attempts == 2
    assert len(new.received) == 1
    await outbox.detach(STATION, new.send)


async def test_a_new_connection_gets_its_calls_once_its_boot_is_answered(outbox: Outbox) -> None:
    """B02.FR.02: nothing before the BootNotification is answered; Pending lets through
    only what B02 allows (and the renewal of A00.FR.429); Accepted, everything, in order.
    A station that speaks first with anything else, or says nothing within the grace,
    had booted already (it only reconnected)."""
    install = await outbox.enqueue(STATION, "InstallCertificate", {"certificate": "x"})
    trigger = await outbox.enqueue(STATION, "TriggerMessage", {"requested_message": "Heartbeat"})
    station = Station()
    outbox.attach(STATION, station.send, waiting_for_boot=True)
    outbox.heard(STATION, station.send, "BootNotification")
    await asyncio.sleep(0.2)
    assert station.received == []  # its boot is not answered yet
    outbox.booted(STATION, station.send, accepted=False)
    await settled(outbox, trigger, CallState.ANSWERED)
    assert (await settled(outbox, install, CallState.QUEUED)).attempts == 0  # not in B02
    outbox.heard(STATION, station.send, "BootNotification")  # it boots again: Accepted
    outbox.booted(STATION, station.send, accepted=True)
    await settled(outbox, install, CallState.ANSWERED)
    assert [action for action, _ in station.received] == ["TriggerMessage", "InstallCertificate"]
    await outbox.detach(STATION, station.send)

    reconnected = Station()
    outbox.attach(STATION, reconnected.send, waiting_for_boot=True)
    again = await outbox.enqueue(STATION, "TriggerMessage", {"requested_message": "Heartbeat"})
    await asyncio.sleep(0.2)
    assert reconnected.received == []
    outbox.heard(STATION, reconnected.send, "Heartbeat")  # booted already
    await settled(outbox, again, CallState.ANSWERED)
    await outbox.detach(STATION, reconnected.send)

    silent = Station()
    quick = Outbox(outbox.store, outbox.clock, boot_grace=0.3)
    quick.attach(STATION, silent.send, waiting_for_boot=True)
    last = await quick.enqueue(STATION, "TriggerMessage", {"requested_message": "Heartbeat"})
    await settled(quick, last, CallState.ANSWERED)  # after the grace
    await quick.detach(STATION, silent.send)
