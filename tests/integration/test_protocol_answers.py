"""What a station sees for messages at the edge of OCPP 2.0.1 (issue 22, items 16, 19,
20): DataTransfer, meter values that are no meter reading, invalid timestamps, CALL
frames of the wrong length, a second V2G CSR while the first waits. A real `pkictl
serve` on 127.0.0.1 with real client certificates; the `ocpp` library's ChargePoint as
the station, raw frames where that library cannot send them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from integration_support import Home, Identity, initialized_home, passphrase_file
from ocpp.exceptions import OCPPError
from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import ClientConnection

from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve

STATIONS = {"CS001": ("SN-0001", 3, False), "CS002": ("SN-0002", 3, False)}


@dataclass(frozen=True)
class Fleet:
    home: Home
    identities: dict[str, Identity]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    async def build() -> Fleet:
        home = await initialized_home(
            tmp_path_factory.mktemp("answers"), STATIONS, frozenset({"cso", "v2g"})
        )
        identities = {
            station: await home.issue(station, station=station, serial=serial)
            for station, (serial, _, _) in STATIONS.items()
        }
        return Fleet(home, identities)

    return asyncio.run(build())


@dataclass
class Running:
    fleet: Fleet
    ports: Listening

    async def connect(self, station_id: str) -> ClientConnection:
        return await websockets.connect(
            f"wss://127.0.0.1:{self.ports.ocpp_port}/ocpp/{station_id}",
            ssl=self.fleet.home.client_context(self.fleet.identities[station_id]),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            open_timeout=30,
        )


@pytest.fixture
async def service(fleet: Fleet) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        options = ServeOptions("127.0.0.1", 0, 0, response_timeout=5.0, outbox_poll_interval=0.1)
        task = asyncio.create_task(serve(app, options, stop, ready.set_result))
        ports = await asyncio.wait_for(ready, 60)
        try:
            yield Running(fleet, ports)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


async def raw_call(connection: ClientConnection, frame: str, wait: float = 30) -> list[Any]:
    """Send one raw frame and return the answer (waiting generously: a busy machine)."""
    await connection.send(frame)
    reply: list[Any] = json.loads(await asyncio.wait_for(connection.recv(), wait))
    return reply


async def with_station(connection: ClientConnection, station_id: str, *calls: Any) -> list[Any]:
    """The `ocpp` library's ChargePoint sends ``calls`` in turn: their answers, or the
    OCPPError a CALLERROR raised."""
    station = ChargePoint(station_id, connection, response_timeout=30)
    listener = asyncio.create_task(station.start())
    answers: list[Any] = []
    try:
        for message in calls:
            try:
                answers.append(await station.call(message, suppress=False))
            except OCPPError as error:
                answers.append(error)
    finally:
        listener.cancel()
    return answers


# --- item 16: DataTransfer ---------------------------------------------------------------


async def test_data_transfer_is_answered_unknown_vendor_id_and_logged(
    service: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """P02.FR.06: no vendor extension is configured, so every vendorId is unknown; a
    DataTransferResponse, not a CALLERROR NotSupported."""
    caplog.set_level(logging.INFO, logger="pkictl.datatransfer")
    async with await service.connect("CS001") as connection:
        (answer,) = await with_station(
            connection, "CS001",
            call.DataTransfer(vendor_id="com.example.ice", message_id="iceParked",
                              data={"start_time": "2026-04-01T11:01:02Z"}),
        )  # fmt: skip
    assert not isinstance(answer, OCPPError), answer
    assert answer.status == "UnknownVendorId"
    logged = [r.getMessage() for r in caplog.records if r.name == "pkictl.datatransfer"]
    assert logged == [
        "CS001: DataTransfer vendorId='com.example.ice' messageId='iceParked' answered "
        "UnknownVendorId"
    ]
