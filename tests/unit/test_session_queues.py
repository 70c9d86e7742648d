"""A station's session holds a bounded amount for it whatever the station sends: answers
to calls never sent are dropped (not queued), and after-hooks run a few at a time."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from csms.protocol.session import MAX_AFTER_TASKS, SessionServices, StationSession
from csms.services.sessions import BootAnswer

BOOT = {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}


class Connection:
    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.sent_one = asyncio.Event()

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))
        self.sent_one.set()


class Scans:
    def __init__(self) -> None:
        self.running = 0
        self.release = asyncio.Event()

    async def scan(self, _station_id: str) -> None:
        self.running += 1
        await self.release.wait()
        self.running -= 1


def session(scans: Scans | None = None) -> tuple[StationSession, Connection]:
    async def boot(_station_id: str) -> BootAnswer:
        return BootAnswer(True, 300, datetime.now(UTC))

    services = SimpleNamespace(
        sessions=SimpleNamespace(boot=boot), renewals=scans or Scans(),
        security_events=None, tokens=None, transactions=None, reports=None,
        certificate_status=None, contracts=None, ev_certificates=None, data_transfers=None,
    )  # fmt: skip
    connection = Connection()
    return StationSession("CS001", connection, cast(SessionServices, services), 3), connection


async def test_answers_to_calls_never_sent_are_dropped_and_the_log_is_not_flooded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    station, _ = session()
    with caplog.at_level(logging.WARNING, "pkictl.session"):
        for number in range(1_000):
            await station.route_message(f'[3,"never-{number}",{{"x":1}}]')
            await station.route_message(f'[4,"never-e{number}","InternalError","",{{}}]')
    queue = station._response_queue._queue
    assert queue is None or queue.empty()
    assert 1 < len(caplog.records) <= 5  # the 1st, 10th, 100th, 1000th drop
    assert "answers to calls never sent dropped" in caplog.records[0].getMessage()


async def test_the_answer_to_the_call_in_flight_gets_through_once() -> None:
    station, connection = session()
    station._response_timeout = 30

    async def answer_when_sent() -> None:
        await connection.sent_one.wait()
        unique_id = connection.sent[0][1]
        await station.route_message(f'[3,"{unique_id}-not-it",{{"status":"Accepted"}}]')
        await station.route_message(f'[3,"{unique_id}",1,2]')  # malformed: dropped
        await station.route_message(f'[3,"{unique_id}",{{"status":"Accepted"}}]')
        await station.route_message(f'[3,"{unique_id}",{{"status":"Accepted"}}]')  # again

    answering = asyncio.create_task(answer_when_sent())
    answer = await station.send("Reset", {"type": "Immediate"})
    await answering
    assert answer == {"status": "Accepted"}
    queue = station._response_queue._queue
    assert queue is not None
    assert queue.empty()  # the second answer was not kept
    assert station._response_queue._expected == ()


async def test_after_hooks_run_a_few_at_a_time_and_the_station_waits() -> None:
    scans = Scans()
    station, connection = session(scans)
    frames = [
        json.dumps([2, f"b{n}", "BootNotification", BOOT]) for n in range(3 * MAX_AFTER_TASKS)
    ]

    async def read_all() -> None:  # as the session's receive loop: one frame at a time
        for frame in frames:
            await station.route_message(frame)

    reading = asyncio.create_task(read_all())
    for _ in range(200):
        await asyncio.sleep(0)
    assert scans.running == MAX_AFTER_TASKS
    assert not reading.done()
    assert len(connection.sent) == MAX_AFTER_TASKS + 1  # the next boot is answered, then waits
    scans.release.set()
    await asyncio.wait_for(reading, 10)
    await station.connection_ended()
    assert [m[1] for m in connection.sent] == [f"b{n}" for n in range(len(frames))]
