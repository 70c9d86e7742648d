"""What a station sees for messages at the edge of OCPP 2.0.1 (issue 22, items 16, 19,
20): DataTransfer, meter values that are no meter reading, invalid timestamps, CALL
frames of the wrong length, a second V2G CSR while the first waits. A real `pkictl
serve` on 127.0.0.1 with real client certificates; the `ocpp` library's ChargePoint as
the station, raw frames where that library cannot send them."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from integration_support import Home, Identity, csr, initialized_home, passphrase_file
from ocpp.exceptions import OCPPError
from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import ClientConnection

from cli.main import cli
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
        options = ServeOptions("127.0.0.1", 0, 0, response_timeout=60.0, outbox_poll_interval=0.1)
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


# --- item 19: meter values that are no reading -----------------------------------------


def pkictl_out(home: Home, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home.path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def strict_json(text: str) -> Any:
    """json.loads refusing what is no JSON (Python's parser reads Infinity and NaN)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def meter_frame(message_id: str, value: str, measurand: str | None = None) -> str:
    sampled = f'{{"value":{value}' + (f',"measurand":"{measurand}"' if measurand else "") + "}"
    return (
        f'[2,"{message_id}","MeterValues",{{"evseId":1,"meterValue":'
        f'[{{"timestamp":"2026-11-26T10:00:00Z","sampledValue":[{sampled}]}}]}}]'
    )


def tx_frame(message_id: str, tx_id: str, value: str, measurand: str = "SoC") -> str:
    return (
        f'[2,"{message_id}","TransactionEvent",{{"eventType":"Started","timestamp":'
        f'"2026-11-26T10:00:00Z","triggerReason":"Authorized","seqNo":0,"transactionInfo":'
        f'{{"transactionId":"{tx_id}"}},"meterValue":[{{"timestamp":"2026-11-26T10:00:00Z",'
        f'"sampledValue":[{{"value":1000}},{{"value":{value},"measurand":"{measurand}"}}]}}]}}]'
    )


async def test_non_finite_numbers_are_refused_naming_the_field_and_nothing_is_stored(
    service: Running,
) -> None:
    """1e309, -Infinity, NaN, 310 digits: FormatViolation naming the field, in any
    number field of any action; the transaction they came with is not stored."""
    home = service.fleet.home
    energy = "meterValue[0].sampledValue[0].value"
    async with await service.connect("CS001") as connection:
        for n, value in enumerate(("1e309", "-Infinity", "NaN", "1" + "0" * 310, "-1e400")):
            answer = await raw_call(connection, meter_frame(f"mv{n}", value))
            assert answer[:3] == [4, f"mv{n}", "FormatViolation"], value
            assert answer[3].startswith(f"{energy}: not a finite number"), answer
        soc = await raw_call(connection, tx_frame("tx1", "TX-INF", "Infinity"))
        assert soc[:3] == [4, "tx1", "FormatViolation"]
        assert soc[3].startswith("meterValue[0].sampledValue[1].value: not a finite number")
        report = await raw_call(
            connection,
            '[2,"nr","NotifyReport",{"requestId":1,"generatedAt":"2026-11-26T10:00:00Z",'
            '"seqNo":0,"reportData":[{"component":{"name":"EVSE"},"variable":{"name":"Power"},'
            '"variableAttribute":[{"value":"1"}],"variableCharacteristics":{"dataType":'
            '"decimal","supportsMonitoring":false,"maxLimit":1e309}}]}]',
        )
        assert report[:3] == [4, "nr", "FormatViolation"]
        assert report[3].startswith("reportData[0].variableCharacteristics.maxLimit: ")
        alive = await raw_call(connection, '[2,"hb","Heartbeat",{}]')
        assert alive[:2] == [3, "hb"]
    listed = strict_json(await asyncio.to_thread(pkictl_out, home, "tx", "list", "--json"))
    assert "TX-INF" not in [t["transaction_id"] for t in listed]
    strict_json(await asyncio.to_thread(pkictl_out, home, "tx", "export", "--format", "json"))


async def test_negative_register_readings_are_dropped_logged_and_not_billed(
    service: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid against the schema, so answered (Part 2 FR.02); the reading is dropped
    with a logged reason and the rest of the event kept; the energy is 2000 Wh, not
    1 GWh."""
    caplog.set_level(logging.WARNING, logger="pkictl.transactions")
    at = "2026-11-26T1{}:00:00Z"

    def event(kind: str, seq_no: int, wh: float, **extra: Any) -> call.TransactionEvent:
        return call.TransactionEvent(
            event_type=kind, timestamp=at.format(seq_no), seq_no=seq_no,
            trigger_reason="Authorized" if kind == "Started" else "MeterValuePeriodic",
            transaction_info={"transaction_id": "TX-NEG"},
            meter_value=[{"timestamp": at.format(seq_no), "sampled_value": [{"value": wh}]}],
            **extra,
        )  # fmt: skip

    async with await service.connect("CS002") as connection:
        answers = await with_station(
            connection, "CS002",
            event("Started", 0, 1000.0), event("Updated", 1, -1e9),
            event("Ended", 2, 3000.0),
            call.MeterValues(evse_id=1, meter_value=[{
                "timestamp": at.format(3),
                "sampled_value": [{"value": -5, "unit_of_measure": {"unit": "kWh"}},
                                  {"value": -7.5, "measurand": "Power.Active.Import"}],
            }]),
        )  # fmt: skip
    assert not [a for a in answers if isinstance(a, OCPPError)], answers
    home = service.fleet.home
    exported = strict_json(
        await asyncio.to_thread(pkictl_out, home, "tx", "export", "--format", "json")
    )
    (negative,) = [t for t in exported if t["transaction_id"] == "TX-NEG"]
    assert (negative["meter_start_wh"], negative["meter_stop_wh"], negative["energy_wh"]) == (
        1000.0, 3000.0, 2000.0,
    )  # fmt: skip
    assert negative["events"] == 3  # the event with the bad reading is kept
    logged = [r.getMessage() for r in caplog.records if r.name == "pkictl.transactions"]
    assert logged == [
        "CS002: TransactionEvent 'TX-NEG' seqNo 1: meterValue[0].sampledValue[0].value = "
        "-1000000000.0 dropped: Energy.Active.Import.Register below zero: a register only "
        "counts up",
        "CS002: MeterValues: meterValue[0].sampledValue[0].value = -5 dropped: "
        "Energy.Active.Import.Register below zero: a register only counts up",
    ]


async def test_exports_stay_valid_json_with_readings_stored_before_the_fix(
    service: Running,
) -> None:
    """A reading of inf stored by an earlier version is exported as null."""
    home = service.fleet.home
    async with await service.connect("CS001") as connection:
        (answer,) = await with_station(
            connection, "CS001",
            call.TransactionEvent(
                event_type="Started", timestamp="2026-11-26T10:00:00Z", seq_no=0,
                trigger_reason="Authorized", transaction_info={"transaction_id": "TX-OLD"},
                meter_value=[{"timestamp": "2026-11-26T10:00:00Z",
                              "sampled_value": [{"value": 10.0}]}],
            ),
        )  # fmt: skip
    assert not isinstance(answer, OCPPError)
    with sqlite3.connect(home.path / "pkictl.db") as database:  # as an old version wrote it
        database.execute(
            "UPDATE transactions SET meter_stop_wh = 9e999 WHERE transaction_id = 'TX-OLD'"
        )
    for args in (("tx", "export", "--format", "json"), ("tx", "list", "--json")):
        rows = strict_json(await asyncio.to_thread(pkictl_out, home, *args))
        (old,) = [t for t in rows if t["transaction_id"] == "TX-OLD"]
        assert (old["meter_stop_wh"], old["energy_wh"]) == (None, None), args


# --- item 20: invalid timestamps, CALL frames of the wrong length, a second V2G CSR ------


async def test_an_invalid_timestamp_is_a_format_violation_naming_the_field(
    service: Running,
) -> None:
    """Sent by the `ocpp` library's ChargePoint (it does not check date-times): a
    FormatViolation naming the field, not an InternalError; nothing stored."""
    good = "2026-11-26T10:00:00Z"

    def event(timestamp: str, sample_time: str, tx_id: str) -> call.TransactionEvent:
        return call.TransactionEvent(
            event_type="Started", timestamp=timestamp, trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": tx_id},
            meter_value=[{"timestamp": sample_time, "sampled_value": [{"value": 1.0}]}],
        )  # fmt: skip

    async with await service.connect("CS001") as connection:
        answers = await with_station(
            connection, "CS001",
            event("not-a-time", good, "TX-T1"),
            event(good, "2026-13-45T99:00:00Z", "TX-T2"),
            event("2026-11-26T10:00:00", good, "TX-T3"),  # no offset: not RFC 3339
            call.MeterValues(evse_id=1, meter_value=[
                {"timestamp": good, "sampled_value": [{"value": 1.0}]},
                {"timestamp": "yesterday", "sampled_value": [{"value": 2.0}]},
            ]),
            call.Heartbeat(),
        )  # fmt: skip
    *refused, alive = answers
    assert [(type(a).__name__, a.code) for a in refused] == [
        ("FormatViolationError", "FormatViolation")
    ] * 4, refused
    assert [a.description.split(":")[0] for a in refused] == [
        "timestamp", "meterValue[0].timestamp", "timestamp", "meterValue[1].timestamp",
    ]  # fmt: skip
    assert "'not-a-time'" in refused[0].description
    assert not isinstance(alive, OCPPError)
    listed = await asyncio.to_thread(pkictl_out, service.fleet.home, "tx", "list", "--json")
    assert not {"TX-T1", "TX-T2", "TX-T3"} & {t["transaction_id"] for t in strict_json(listed)}


async def test_a_call_frame_without_four_elements_is_answered_rpc_framework_error(
    service: Running,
) -> None:
    """OCPP-J 4.2.1/4.3; the `ocpp` library dropped these without an answer."""
    async with await service.connect("CS001") as connection:
        five = await raw_call(connection, '[2,"m5","Heartbeat",{},{"extra":1}]')
        assert five[:3] == [4, "m5", "RpcFrameworkError"]
        assert five[3] == "a CALL has 4 elements, this one 5"
        assert five[4] == {}
        three = await raw_call(connection, '[2,"m3","Heartbeat"]')
        assert three[:3] == [4, "m3", "RpcFrameworkError"]
        alive = await raw_call(connection, '[2,"m4","Heartbeat",{}]')
        assert alive[:2] == [3, "m4"]


class WaitingStation(ChargePoint):  # type: ignore[misc]
    """Never answers GetVariables (its SECC id): the V2G CSR keeps waiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = asyncio.Event()

    async def route_message(self, raw_msg: str) -> Any:
        frame = json.loads(raw_msg)
        if frame[0] == 2 and frame[2] == "GetVariables":
            self.asked.set()
            return None
        return await super().route_message(raw_msg)


async def test_a_second_v2g_csr_while_the_first_waits_is_rejected_with_a_reason(
    service: Running,
) -> None:
    """CS002 has no SECC id: its first V2G CSR waits for GetVariables; a second one
    (another key) is answered SignCertificate Rejected `CsrPending`, not a CALLERROR
    InternalError (InvalidTransition)."""
    async with await service.connect("CS002") as connection:
        station = WaitingStation("CS002", connection, response_timeout=30)
        listener = asyncio.create_task(station.start())
        try:
            csrs = [csr(ec.generate_private_key(ec.SECP256R1()), "SECC0002") for _ in range(2)]
            first = await station.call(
                call.SignCertificate(csr=csrs[0], certificate_type="V2GCertificate")
            )
            assert first.status == "Accepted"
            await asyncio.wait_for(station.asked.wait(), 30)  # GetVariables came
            second = await station.call(
                call.SignCertificate(csr=csrs[1], certificate_type="V2GCertificate"),
                suppress=False,
            )
            again = await station.call(  # the first CSR again: still the one waiting
                call.SignCertificate(csr=csrs[0], certificate_type="V2GCertificate")
            )
        finally:
            listener.cancel()
    assert second.status == "Rejected"
    assert second.status_info["reason_code"] == "CsrPending"
    assert "SECC id" in second.status_info["additional_info"]
    assert again.status == "Accepted"
