"""`pkictl serve` end to end on 127.0.0.1: a real OCPP 2.0.1 client (the `ocpp`
library's ChargePoint over websockets) with real client certificates against the real
service (composition root, TLS, handshake gate, sessions, database)."""

from __future__ import annotations

import asyncio
import base64
import csv
import gc
import io
import json
import logging
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from integration_support import (
    ORG,
    STATION_PASSWORD,
    Home,
    Identity,
    csr,
    initialized_home,
    passphrase_file,
    write_key,
)
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidMessage, InvalidStatus

from cli.main import cli
from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import GC_YOUNGEST_THRESHOLD, serve
from csms.transport.endpoint import BackpressuredConnection
from pki.audit import AuditEvent
from pki.clock import FixedClock
from pki.records import CertificateQuery, CertificateSource, TrustAnchor, TrustRole

STATIONS = {
    "CS001": ("SN-0001", 3, False),
    "CS002": ("SN-0002", 3, True),  # may renew an expired certificate (A00.FR.429)
    "CS003": ("SN-0003", 2, False),
    "CS004": ("SN-0004", 1, False),
    "CS005": ("SN-0005", 2, False),  # behind the same address as CS003
}


@dataclass(frozen=True)
class Fleet:
    home: Home
    good: Identity
    expired: Identity
    expired_allowed: Identity
    revoked: Identity
    foreign: Identity


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    async def build() -> Fleet:
        home = await initialized_home(tmp_path_factory.mktemp("serve"), STATIONS)
        past = FixedClock(datetime.now(UTC) - timedelta(days=400))
        revoked = await home.issue("revoked", station="CS001", serial="SN-0001")
        async with open_app(home.path, passphrase_file(home.directory)) as app:
            records = await app.store.find_certificates(CertificateQuery(station_id="CS001"))
            await app.ca.revoke(records[-1].serial, "keyCompromise", "test")
        return Fleet(
            home=home,
            good=await home.issue("good", station="CS001", serial="SN-0001"),
            expired=await home.issue("expired", station="CS001", serial="SN-0001", clock=past),
            expired_allowed=await home.issue(
                "expired2", station="CS002", serial="SN-0002", clock=past
            ),
            revoked=revoked,
            foreign=home.self_signed("foreign", "SN-0001"),
        )

    return asyncio.run(build())


@dataclass
class Running:
    fleet: Fleet
    ports: Listening
    stop: asyncio.Event

    def url(self, station_id: str) -> str:
        return f"wss://127.0.0.1:{self.ports.ocpp_port}/ocpp/{station_id}"

    async def connect(
        self,
        station_id: str,
        identity: Identity | None,
        *,
        password: str | None = None,
        subprotocols: tuple[str, ...] = ("ocpp2.0.1",),
        local_address: str | None = None,
    ) -> ClientConnection:
        headers = {}
        if password is not None:
            token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return await websockets.connect(
            self.url(station_id),
            ssl=self.fleet.home.client_context(identity),
            subprotocols=list(subprotocols),  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=5,
            **({"local_addr": (local_address, 0)} if local_address else {}),
        )

    async def refused_with(self, station_id: str, identity: Identity | None, **kw: object) -> int:
        return (await self.refusal(station_id, identity, **kw))[0]

    async def refusal(
        self, station_id: str, identity: Identity | None, **kw: object
    ) -> tuple[int, bytes]:
        """The HTTP status and body of a refused connection attempt."""
        with pytest.raises(InvalidStatus) as refused:
            await self.connect(station_id, identity, **kw)  # type: ignore[arg-type]
        return refused.value.response.status_code, refused.value.response.body or b""


@pytest.fixture
async def service(fleet: Fleet) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        task = asyncio.create_task(
            serve(
                app,
                ServeOptions("127.0.0.1", 0, 0, response_timeout=1.0, outbox_poll_interval=0.1),
                stop,
                ready.set_result,
            )
        )
        ports = await asyncio.wait_for(ready, 60)
        try:
            yield Running(fleet, ports, stop)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


async def boot(connection: ClientConnection, station_id: str) -> tuple[str, int]:
    station = ChargePoint(station_id, connection)
    listener = asyncio.create_task(station.start())
    try:
        answer = await station.call(
            call.BootNotification(
                charging_station={"model": "Test", "vendor_name": "pkictl"}, reason="PowerUp"
            )
        )
        await station.call(call.Heartbeat())
    finally:
        listener.cancel()
    return answer.status, answer.interval


async def test_profile_3_station_boots_and_its_certificate_is_recorded(service: Running) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with await service.connect("CS001", service.fleet.good) as connection:
        assert connection.subprotocol == "ocpp2.0.1"
        assert await boot(connection, "CS001") == ("Accepted", 300)
    async with open_app(service.fleet.home.path) as app:
        records = await app.store.find_certificates(CertificateQuery(station_id="CS001"))
    seen = [r for r in records if r.last_seen is not None]
    assert len(seen) == 1
    assert seen[0].source is CertificateSource.ISSUED
    assert seen[0].first_seen is not None
    assert seen[0].first_seen >= before


async def test_expired_certificate_of_an_allowed_station_boots_pending(service: Running) -> None:
    async with await service.connect("CS002", service.fleet.expired_allowed) as connection:
        assert await boot(connection, "CS002") == ("Pending", 60)


@pytest.mark.parametrize(
    ("station_id", "identity", "status"),
    [
        ("CS001", "expired", 403),
        ("CS001", "revoked", 403),
        ("CS002", "good", 403),  # CN is CS001's serial
        ("CS001", None, 403),  # profile 3 needs a certificate
        ("CS999", "good", 403),  # not registered
        ("CS003", "good", 403),  # registered for profile 2
    ],
)
async def test_profile_3_refusals_answer_before_the_upgrade(
    service: Running, station_id: str, identity: str | None, status: int
) -> None:
    chosen = getattr(service.fleet, identity) if identity else None
    assert await service.refused_with(station_id, chosen) == status


async def test_certificate_from_an_unknown_ca_fails_the_tls_handshake(service: Running) -> None:
    # TLS 1.3: the client finishes its side, then the server's alert cuts the connection
    # before any HTTP response.
    with pytest.raises((InvalidMessage, ssl.SSLError, ConnectionError)):
        async with await service.connect("CS001", service.fleet.foreign):
            pass


async def test_profile_2_password(service: Running) -> None:
    async with await service.connect("CS003", None, password=STATION_PASSWORD) as connection:
        assert await boot(connection, "CS003") == ("Accepted", 300)
    assert await service.refused_with("CS003", None, password="not-the-password-at-all") == 401
    assert await service.refused_with("CS003", None) == 401


async def test_profile_3_station_with_a_password_is_refused(service: Running) -> None:
    assert await service.refused_with("CS001", None, password=STATION_PASSWORD) == 403


async def test_the_ocpp_subprotocol_is_required(service: Running) -> None:
    assert await service.refused_with("CS001", service.fleet.good, subprotocols=("ocpp1.6",)) == 400


async def test_stopping_drains_connections_with_going_away(service: Running) -> None:
    connection = await service.connect("CS001", service.fleet.good)
    service.stop.set()
    await asyncio.wait_for(connection.wait_closed(), 10)
    assert connection.close_code == 1001


async def test_serving_sets_the_collector_for_a_server_and_puts_it_back(fleet: Fleet) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    before = gc.get_threshold()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        options = ServeOptions("127.0.0.1", 0, 0)
        task = asyncio.create_task(
            serve(app, options, stop, lambda _: ready.set_result(gc_state()))
        )
        frozen, youngest = await asyncio.wait_for(ready, 60)
        stop.set()
        await asyncio.wait_for(task, 60)
    assert frozen > 10_000  # what start made: modules, schemas, the app
    assert youngest == GC_YOUNGEST_THRESHOLD
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def gc_state() -> tuple[int, int]:
    return gc.get_freeze_count(), gc.get_threshold()[0]


async def test_health_counts_online_stations_and_refusals(service: Running) -> None:
    async def health() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.ports.http_port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    assert await health() == {"status": "ok", "stations_online": 0, "refusals": {}}
    assert await service.refused_with("CS002", service.fleet.good) == 403
    assert await service.refused_with("CS003", None) == 401
    async with await service.connect("CS001", service.fleet.good) as connection:
        assert await boot(connection, "CS001") == ("Accepted", 300)
        assert await health() == {
            "status": "ok",
            "stations_online": 1,
            "refusals": {"credentials-required": 1, "serial-mismatch": 1},
        }


async def test_the_pkictl_serve_command_drains_on_sigterm_and_exits_0(fleet: Fleet) -> None:
    pkictl = Path(sys.executable).parent / "pkictl"
    process = await asyncio.create_subprocess_exec(
        str(pkictl), "--home", str(fleet.home.path),
        "--passphrase-file", str(passphrase_file(fleet.home.directory)),
        "serve", "--host", "127.0.0.1", "--ocpp-port", "0", "--http-port", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        banner = b""
        while b"pkictl serve: OCPP on" not in banner:
            banner = await asyncio.wait_for(process.stderr.readline(), 20)
            assert banner, "pkictl serve exited before listening"
        port = int(re.search(rb"wss://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
        running = Running(fleet, Listening(port, 0), asyncio.Event())
        connection = await running.connect("CS001", fleet.good)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(connection.wait_closed(), 10)
        assert connection.close_code == 1001
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def pkictl_json(home: Home, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--home", str(home.path), *args, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_refusals_are_kept_as_events_with_their_reason(service: Running) -> None:
    assert await service.refused_with("CS002", service.fleet.good) == 403
    events = await asyncio.to_thread(
        pkictl_json, service.fleet.home, "events", "list", "--station", "CS002", "--limit", "1"
    )
    assert [(e["event"], e["what"], e["station"]) for e in events] == [
        ("connection.refused", "serial-mismatch", "CS002")
    ]
    assert events[0]["detail"]["http_status"] == 403
    assert events[0]["remote"].startswith("127.0.0.1:")


async def test_revoking_a_certificate_from_the_cli_ends_its_session_with_1008(
    service: Running,
) -> None:
    """`pkictl cert revoke` in another process closes the live session that presented
    the certificate within seconds (the node checks its sessions' certificates every
    5 s); the certificate is then refused at the handshake."""
    identity = await service.fleet.home.issue("revoke-me", station="CS001", serial="SN-0001")
    serial = f"{x509.load_pem_x509_certificates(identity[0].read_bytes())[0].serial_number:x}"
    connection = await service.connect("CS001", identity)
    assert await boot(connection, "CS001") == ("Accepted", 300)
    home = service.fleet.home
    revoke = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "--home", str(home.path),
        "--passphrase-file", str(passphrase_file(home.directory)),
        "cert", "revoke", serial, "--reason", "keyCompromise",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(revoke.communicate(), 60)
    assert revoke.returncode == 0, stderr
    await asyncio.wait_for(connection.wait_closed(), 30)
    assert connection.close_code == 1008
    assert connection.close_reason == "certificate revoked"
    assert await service.refused_with("CS001", identity) == 403
    events = await asyncio.to_thread(
        pkictl_json, home, "events", "list", "--station", "CS001", "--limit", "2"
    )
    assert [(e["event"], e["what"]) for e in events] == [
        ("connection.closed", "certificate-revoked"),
        ("connection.refused", "certificate-revoked"),
    ]
    assert events[0]["detail"]["certificate_serial"] == serial
    assert events[0]["detail"]["close_code"] == 1008
    async with await service.connect("CS001", service.fleet.good) as again:  # its other one
        assert await boot(again, "CS001") == ("Accepted", 300)


async def test_password_guessing_is_throttled_per_station_id_not_per_address(
    service: Running,
) -> None:
    """Five wrong passwords for CS003, each from another address, lock CS003 out (429,
    audited); CS005 behind the same address is still admitted; an unknown id gets the
    same 401 as a wrong password."""
    unauthorized = (401, b"unauthorized\n")
    for number in range(5):
        guess = f"wrong-guess-{number:06d}"
        assert await service.refusal(
            "CS003", None, password=guess, local_address=f"127.0.0.{number + 2}"
        ) == unauthorized  # fmt: skip
    assert await service.refused_with("CS003", None, password="wrong-guess-000009",
                                      local_address="127.0.0.9") == 429  # fmt: skip
    assert await service.refused_with("CS003", None, password=STATION_PASSWORD) == 429
    assert await service.refusal("CS999", None, password="wrong-guess-000010") == unauthorized
    async with await service.connect("CS005", None, password=STATION_PASSWORD) as connection:
        assert await boot(connection, "CS005") == ("Accepted", 300)
    events = await asyncio.to_thread(
        pkictl_json, service.fleet.home, "events", "list", "--station", "CS003", "--limit", "1"
    )
    assert [(e["event"], e["what"]) for e in events] == [
        ("connection.throttled", "station-locked-out")
    ]
    assert events[0]["detail"]["failures"] == 5


async def test_security_events_are_stored_and_critical_ones_flagged(service: Running) -> None:
    async with await service.connect("CS001", service.fleet.good) as connection:
        station = ChargePoint("CS001", connection)
        listener = asyncio.create_task(station.start())
        try:
            for event_type in ("TamperDetectionActivated", "SomeVendorEvent"):
                await station.call(
                    call.SecurityEventNotification(
                        type=event_type, timestamp="2026-11-26T12:00:00Z", tech_info="lid"
                    )
                )
        finally:
            listener.cancel()
    events = await asyncio.to_thread(
        pkictl_json, service.fleet.home, "events", "list", "--station", "CS001"
    )
    reported = [(e["what"], e["critical"]) for e in events if e["event"] == "security.event"]
    assert reported[-2:] == [("TamperDetectionActivated", True), ("SomeVendorEvent", False)]


async def test_station_list_shows_who_is_online_with_which_certificate(service: Running) -> None:
    good = x509.load_pem_x509_certificate(service.fleet.good[0].read_bytes())

    def cs001() -> dict[str, Any]:
        rows = pkictl_json(service.fleet.home, "station", "list")
        found: dict[str, Any] = next(r for r in rows if r["id"] == "CS001")
        return found

    async with await service.connect("CS001", service.fleet.good) as connection:
        assert await boot(connection, "CS001") == ("Accepted", 300)
        online = await asyncio.to_thread(cs001)
    assert online["online"] is True
    assert online["connected_profile"] == 3
    assert online["certificate_serial"] == f"{good.serial_number:x}"
    assert online["certificate_not_after"] == good.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    for _ in range(50):  # the server notices the close a moment later
        offline = await asyncio.to_thread(cs001)
        if not offline["online"]:
            break
        await asyncio.sleep(0.1)
    assert offline["online"] is False
    assert offline["last_seen"] is not None


async def raw_call(connection: ClientConnection, frame: str) -> list[Any] | None:
    """Send one raw frame; the reply, or None if none came within a second."""
    await connection.send(frame)
    try:
        reply = await asyncio.wait_for(connection.recv(), 1)
    except TimeoutError:
        return None
    parsed: list[Any] = json.loads(reply)
    return parsed


async def test_bad_messages_get_errors_and_the_connection_survives(service: Running) -> None:
    async with await service.connect("CS001", service.fleet.good) as connection:
        unknown = await raw_call(connection, '[2,"m1","NoSuchAction",{}]')
        assert unknown is not None
        assert unknown[:3] == [4, "m1", "NotImplemented"]
        known = await raw_call(connection, '[2,"m1b","GetDisplayMessages",{"requestId":1}]')
        assert known is not None
        assert known[:3] == [4, "m1b", "NotSupported"]
        invalid = await raw_call(connection, '[2,"m2","Heartbeat",{"unexpected": 1}]')
        assert invalid is not None
        assert invalid[0] == 4
        assert invalid[2] in (
            "FormatViolation",
            "OccurrenceConstraintViolation",
            "TypeConstraintViolation",
        )
        wrong_type = await raw_call(
            connection,
            '[2,"m3","BootNotification",{"reason":"PowerUp","chargingStation":{"model":5,"vendorName":"v"}}]',
        )
        assert wrong_type is not None
        assert wrong_type[:3] == [4, "m3", "TypeConstraintViolation"]
        for frame, message_id in (("this is not json", "-1"), ("[2, 5]", "-1"), ('[2,"m5"]', "m5")):
            error = await raw_call(connection, frame)
            assert error is not None
            assert error[:3] == [4, message_id, "RpcFrameworkError"], frame
        alive = await raw_call(connection, '[2,"m4","Heartbeat",{}]')
        assert alive is not None
        assert alive[:2] == [3, "m4"]
        assert "currentTime" in alive[2]


async def test_deeply_nested_json_is_refused_and_the_connection_survives(
    service: Running,
) -> None:
    """A payload nested past MAX_JSON_DEPTH is answered FormatViolation (its message id
    read), or RpcFrameworkError when no id can be read; it used to end the session
    with 1011 (RecursionError)."""
    async with await service.connect("CS001", service.fleet.good) as connection:
        for depth in (40, 700, 5_000, 10_000):
            payload = '{"a":' * depth + "1" + "}" * depth
            error = await raw_call(connection, f'[2,"deep{depth}","Heartbeat",{payload}]')
            assert error is not None, depth
            assert error[:3] == [4, f"deep{depth}", "FormatViolation"], depth
            assert "nested" in error[3]
        deep_custom = '{"customData":{"vendorId":"v","x":' + "[" * 900 + "]" * 900 + "}}"
        error = await raw_call(connection, f'[2,"custom","Heartbeat",{deep_custom}]')
        assert error is not None
        assert error[:3] == [4, "custom", "FormatViolation"]
        for frame in ("[" * 20_000 + "]" * 20_000, "[2," + "[" * 900 + "]" * 900 + "]"):
            error = await raw_call(connection, frame)
            assert error is not None
            assert error[:3] == [4, "-1", "RpcFrameworkError"]
        deep_answer = '[3,"never-asked",' + "[" * 5_000 + "]" * 5_000 + "]"
        assert await raw_call(connection, deep_answer) is None  # an answer: never answered
        alive = await raw_call(connection, '[2,"after","Heartbeat",{}]')
        assert alive is not None
        assert alive[:2] == [3, "after"]
    assert connection.close_code == 1000


async def test_a_station_that_reads_nothing_is_aborted_once_its_writes_stall(
    service: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pings from a station that reads nothing: the server stops reading it once 32 KiB
    wait to be written, and aborts the connection when they have waited too long (the
    keepalive ping and a close frame would wait behind them for ever)."""
    monkeypatch.setattr(BackpressuredConnection, "stall_timeout_s", 2.0)
    connection = await service.connect("CS001", service.fleet.good)
    assert await boot(connection, "CS001") == ("Accepted", 300)
    transport = connection.transport
    transport.pause_reading()
    transport.write((b"\x89\xfd" + bytes(4) + b"p" * 125) * 80_000)  # 10 MB of pings
    with caplog.at_level(logging.WARNING, "pkictl.endpoint"):
        for _ in range(300):
            if "connection aborted" in caplog.text:
                break
            await asyncio.sleep(0.1)
    assert "/ocpp/CS001" in caplog.text
    assert "read nothing of the" in caplog.text
    transport.resume_reading()
    await asyncio.wait_for(connection.wait_closed(), 30)
    assert connection.close_code == 1006  # aborted: no close frame could get through


async def test_frames_over_64_kib_close_the_connection_with_1009(service: Running) -> None:
    connection = await service.connect("CS001", service.fleet.good)
    await connection.send('[2,"big","DataTransfer",{"vendorId":"x","data":"' + "a" * 70_000 + '"}]')
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert connection.close_code == 1009


def pkictl_text(home: Home, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home.path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def tx_event(
    event_type: str, seq_no: int, at: str, wh: float, **extra: Any
) -> call.TransactionEvent:
    return call.TransactionEvent(
        event_type=event_type,
        timestamp=at,
        trigger_reason={"Started": "Authorized", "Updated": "MeterValuePeriodic"}.get(
            event_type, "StopAuthorized"
        ),
        seq_no=seq_no,
        transaction_info={"transaction_id": "TX-1", **extra.pop("info", {})},
        meter_value=[{"timestamp": at, "sampled_value": [{"value": wh}]}],
        **extra,
    )


async def test_a_transaction_is_stored_once_even_when_replayed(service: Running) -> None:
    home = service.fleet.home
    await asyncio.to_thread(pkictl_text, home, "token", "add", "04A2B3C4")
    await asyncio.to_thread(pkictl_text, home, "token", "add", "0BADC0DE")
    await asyncio.to_thread(pkictl_text, home, "token", "block", "0BADC0DE")
    token = {"id_token": "04A2B3C4", "type": "ISO14443"}
    events = [
        tx_event("Started", 0, "2026-11-26T10:00:00Z", 1000.0, id_token=token,
                 evse={"id": 1, "connector_id": 1}),
        *(tx_event("Updated", n, f"2026-11-26T10:{n:02d}:00Z", 1000.0 + 500 * n)
          for n in range(1, 4)),
        tx_event("Ended", 4, "2026-11-26T10:30:00Z", 3250.0, id_token=token,
                 info={"stopped_reason": "Local"}),
    ]  # fmt: skip
    async with await service.connect("CS001", service.fleet.good) as connection:
        station = ChargePoint("CS001", connection)
        listener = asyncio.create_task(station.start())
        try:
            authorized = await station.call(call.Authorize(id_token=token))
            blocked = await station.call(
                call.Authorize(id_token={"id_token": "0BADC0DE", "type": "ISO14443"})
            )
            unknown = await station.call(
                call.Authorize(id_token={"id_token": "FFFF", "type": "ISO14443"})
            )
            answers = [await station.call(e) for e in events]
            for replayed in (events[2], events[4], events[0]):  # offline queue sent again
                await station.call(replayed)
        finally:
            listener.cancel()
    assert [authorized.id_token_info["status"], blocked.id_token_info["status"],
            unknown.id_token_info["status"]] == ["Accepted", "Blocked", "Unknown"]  # fmt: skip
    assert answers[0].id_token_info == {"status": "Accepted"}

    listed = await asyncio.to_thread(pkictl_json, home, "tx", "list", "--station", "CS001")
    assert len(listed) == 1
    assert listed[0] == {
        "station_id": "CS001", "transaction_id": "TX-1", "id_token": "04A2B3C4",
        "evse_id": 1, "connector_id": 1, "started_at": "2026-11-26T10:00:00Z",
        "ended_at": "2026-11-26T10:30:00Z", "stopped_reason": "Local",
        "meter_start_wh": 1000.0, "meter_stop_wh": 3250.0, "energy_wh": 2250.0, "events": 5,
    }  # fmt: skip
    exported = await asyncio.to_thread(pkictl_text, home, "tx", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["transaction_id"], r["energy_wh"], r["events"]) for r in rows] == [
        ("TX-1", "2250.0", "5")
    ]
    as_json = await asyncio.to_thread(pkictl_text, home, "tx", "export", "--format", "json")
    assert json.loads(as_json) == listed


async def test_reports_are_stored_as_received(service: Running) -> None:
    at = "2026-11-26T11:00:00Z"
    messages = [
        call.StatusNotification(
            timestamp=at, connector_status="Occupied", evse_id=1, connector_id=1
        ),
        call.NotifyEvent(
            generated_at=at, seq_no=0,
            event_data=[{
                "event_id": 7, "timestamp": at, "trigger": "Delta", "actual_value": "Faulted",
                "event_notification_type": "HardWiredNotification",
                "component": {"name": "Connector"}, "variable": {"name": "Problem"},
            }],
        ),
        call.NotifyReport(request_id=3, generated_at=at, seq_no=0),
        call.FirmwareStatusNotification(status="Installed"),
        call.LogStatusNotification(status="Uploaded"),
    ]  # fmt: skip
    async with await service.connect("CS001", service.fleet.good) as connection:
        station = ChargePoint("CS001", connection)
        listener = asyncio.create_task(station.start())
        try:
            for message in messages:
                await station.call(message)
        finally:
            listener.cancel()
    reports = await asyncio.to_thread(
        pkictl_json, service.fleet.home, "station", "reports", "CS001", "--limit", "5"
    )
    assert [r["action"] for r in reports] == [
        "StatusNotification", "NotifyEvent", "NotifyReport", "FirmwareStatusNotification",
        "LogStatusNotification",
    ]  # fmt: skip
    assert reports[0]["payload"]["connector_status"] == "Occupied"
    assert reports[1]["payload"]["event_data"][0]["actual_value"] == "Faulted"


class SimulatedStation(ChargePoint):  # type: ignore[misc]
    """Answers TriggerMessage; answers GetVariables too late; has no GetLog handler;
    hangs up on Reset (a station rebooting mid-call)."""

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.get_variables)
    async def on_get_variables(self, **_: Any) -> Any:
        await asyncio.sleep(1.5)  # the service's response timeout is 1 s
        return call_result.GetVariables(get_variable_result=[])

    @on(Action.reset)
    async def on_reset(self, **_: Any) -> Any:
        await self._connection.close()
        return call_result.Reset(status="Accepted")


async def enqueue(home: Home, action: str, payload: dict[str, Any]) -> int:
    """As the CLI or another node would: through a separate App on the same database."""
    async with open_app(home.path) as app:
        return await app.outbox.enqueue("CS001", action, payload)


async def outbox_item(home: Home, item_id: int, state: str) -> dict[str, Any]:
    for _ in range(100):
        rows = await asyncio.to_thread(pkictl_json, home, "outbox", "list", "--station", "CS001")
        found = next(r for r in rows if r["id"] == item_id)
        if found["state"] == state:
            return found  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox #{item_id} never reached {state}: {found}")


async def run_station(
    service: Running, station_class: type = SimulatedStation
) -> tuple[ClientConnection, asyncio.Task[None]]:
    connection = await service.connect("CS001", service.fleet.good)
    return connection, asyncio.create_task(station_class("CS001", connection).start())


async def test_the_outbox_delivers_answers_and_keeps_the_outcome(service: Running) -> None:
    home = service.fleet.home
    queued = await enqueue(home, "TriggerMessage", {"requested_message": "Heartbeat"})
    assert (await outbox_item(home, queued, "queued"))["attempts"] == 0  # station offline
    connection, listener = await run_station(service)
    try:
        answered = await outbox_item(home, queued, "answered")
        assert answered["response"] == {"status": "Accepted"}
        assert answered["attempts"] == 1
        slow = await enqueue(home, "GetVariables", {"get_variable_data": [
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}}
        ]})  # fmt: skip
        get_log = {"log": {"remote_location": "https://x/y"}, "log_type": "SecurityLog",
                   "request_id": 1}  # fmt: skip
        unhandled = await enqueue(home, "GetLog", get_log)
        after = await enqueue(home, "TriggerMessage", {"requested_message": "StatusNotification"})
        timed_out = await outbox_item(home, slow, "timed_out")
        assert timed_out["error"] == "no answer within 1 s"
        failed = await outbox_item(home, unhandled, "failed")
        assert failed["error"].startswith("NotImplemented") or failed["error"].startswith(
            "NotSupported"
        )
        assert (await outbox_item(home, after, "answered"))["response"] == {"status": "Accepted"}
        invalid = await enqueue(home, "TriggerMessage", {"no_such_field": 1})
        assert (
            "cannot build TriggerMessage" in (await outbox_item(home, invalid, "failed"))["error"]
        )
    finally:
        listener.cancel()
        await connection.close()


async def test_a_call_cut_off_by_a_disconnect_is_sent_again_on_reconnect(service: Running) -> None:
    home = service.fleet.home
    reset = await enqueue(home, "Reset", {"type": "Immediate"})
    connection, listener = await run_station(service)
    await asyncio.wait_for(connection.wait_closed(), 5)  # the station hung up mid-call
    listener.cancel()
    assert (await outbox_item(home, reset, "queued"))["attempts"] == 1

    class Polite(SimulatedStation):
        @on(Action.reset)
        async def on_reset(self, **_: Any) -> Any:
            return call_result.Reset(status="Accepted")

    connection, listener = await run_station(service, Polite)
    try:
        answered = await outbox_item(home, reset, "answered")
        assert answered["attempts"] == 2
        assert answered["response"] == {"status": "Accepted"}
    finally:
        listener.cancel()
        await connection.close()


async def test_profile_1_over_the_plain_port(fleet: Fleet) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        options = ServeOptions("127.0.0.1", 0, 0, plain_port=0)
        task = asyncio.create_task(serve(app, options, stop, ready.set_result))
        try:
            port = (await asyncio.wait_for(ready, 60)).plain_port

            def plain(station_id: str, password: str) -> Any:
                token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
                return websockets.connect(
                    f"ws://127.0.0.1:{port}/ocpp/{station_id}",
                    subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Basic {token}"},
                    open_timeout=5,
                )

            async with plain("CS004", STATION_PASSWORD) as connection:
                assert await boot(connection, "CS004") == ("Accepted", 300)
                station = ChargePoint("CS004", connection)
                listener = asyncio.create_task(station.start())
                key = ec.generate_private_key(ec.SECP256R1())
                answer = await station.call(
                    call.SignCertificate(
                        csr=csr(key, "SN-0004"), certificate_type="ChargingStationCertificate"
                    )
                )  # no certificate operations without TLS (profile 1)
                listener.cancel()
                assert (answer.status, answer.status_info["reason_code"]) == (
                    "Rejected", "InsecureConnection",
                )  # fmt: skip
            for station_id, status in (("CS004", 401), ("CS003", 403), ("CS001", 403)):
                password = "wrong password, wrong" if status == 401 else STATION_PASSWORD
                with pytest.raises(InvalidStatus) as refused:
                    await plain(station_id, password)
                assert refused.value.response.status_code == status, station_id
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def factory_pki(
    directory: Path, name: str = "ACME Factory CA", ca_expired: bool = False
) -> tuple[Path, Identity]:
    """A manufacturer's factory CA and a station certificate it issued for CS001."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    ca_not_after = now - timedelta(days=1) if ca_expired else now + timedelta(days=3650)
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400)).not_valid_after(ca_not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-0001"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=60))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    stem = name.replace(" ", "-")
    ca_file = directory / f"{stem}.pem"
    ca_file.write_bytes(ca_cert.public_bytes(Encoding.PEM))
    chain = directory / f"{stem}-leaf.pem"
    chain.write_bytes(leaf.public_bytes(Encoding.PEM))
    return ca_file, (chain, write_key(directory / f"{stem}-leaf.key", key))


async def test_a_trusted_factory_ca_admits_its_station_certificates(
    fleet: Fleet, tmp_path: Path
) -> None:
    factory_ca, factory_leaf = factory_pki(tmp_path)
    runner = CliRunner()

    def pkictl(*args: str) -> Any:
        return runner.invoke(cli, ["--home", str(fleet.home.path), *args])

    async def one_connection() -> None:
        stop = asyncio.Event()
        ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
        async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
            task = asyncio.create_task(
                serve(app, ServeOptions("127.0.0.1", 0, 0), stop, ready.set_result)
            )
            try:
                running = Running(fleet, await asyncio.wait_for(ready, 60), stop)
                async with await running.connect("CS001", factory_leaf) as connection:
                    assert await boot(connection, "CS001") == ("Accepted", 300)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)

    with pytest.raises((InvalidMessage, ssl.SSLError, ConnectionError)):
        await one_connection()  # not trusted yet: the TLS handshake fails

    not_a_ca = await asyncio.to_thread(
        pkictl, "trust", "add", "--role", "station-ca", str(factory_leaf[0])
    )
    assert not_a_ca.exit_code == 2
    assert "not a CA certificate" in not_a_ca.stderr
    not_pem = await asyncio.to_thread(
        pkictl, "trust", "add", "--role", "station-ca", str(factory_leaf[1])
    )
    assert not_pem.exit_code == 2
    assert "not a PEM certificate" in not_pem.stderr
    added = await asyncio.to_thread(pkictl, "trust", "add", "--role", "station-ca", str(factory_ca))
    assert added.exit_code == 0, added.output
    again = await asyncio.to_thread(pkictl, "trust", "add", "--role", "station-ca", str(factory_ca))
    assert again.exit_code == 5
    assert "trusted already" in again.stderr

    await one_connection()
    certificates = await asyncio.to_thread(
        pkictl_json, fleet.home, "cert", "list", "--station", "CS001"
    )
    factory = [c for c in certificates if c["issuer"] == "CN=ACME Factory CA"]
    assert [(c["source"], c["subject"]) for c in factory] == [("observed", f"O={ORG},CN=SN-0001")]
    assert factory[0]["first_seen"] is not None
    events = await asyncio.to_thread(
        pkictl_json, fleet.home, "events", "list", "--station", "CS001"
    )
    observed = [e for e in events if e["event"] == "certificate.observed"]
    assert [e["detail"]["issuer"] for e in observed][-1:] == ["CN=ACME Factory CA"]


async def test_a_second_connection_of_a_station_replaces_the_first(service: Running) -> None:
    first = await service.connect("CS001", service.fleet.good)
    second = await service.connect("CS001", service.fleet.good)
    await asyncio.wait_for(first.wait_closed(), 5)
    assert (first.close_code, first.close_reason) == (1000, "replaced by a new connection")
    assert await boot(second, "CS001") == ("Accepted", 300)
    rows = await asyncio.to_thread(pkictl_json, service.fleet.home, "station", "list")
    assert next(r for r in rows if r["id"] == "CS001")["online"] is True
    await second.close()


async def test_a_station_ca_that_has_expired_admits_no_one(fleet: Fleet, tmp_path: Path) -> None:
    old_ca, old_leaf = factory_pki(tmp_path, "ACME Old CA", ca_expired=True)
    refused = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["--home", str(fleet.home.path), "trust", "add", "--role", "station-ca", str(old_ca)],
    )
    assert refused.exit_code == 2
    assert "expired" in refused.stderr
    # ... but one trusted while it was valid stays in the trust store after it expires:
    certificate = x509.load_pem_x509_certificate(old_ca.read_bytes())
    async with open_app(fleet.home.path) as app:
        await app.store.add_trust_anchor(
            TrustAnchor(
                TrustRole.STATION_CA, certificate.public_bytes(Encoding.DER), app.clock.now()
            ),
            AuditEvent("trust.added", "test"),
            app.clock.now(),
        )
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        task = asyncio.create_task(
            serve(app, ServeOptions("127.0.0.1", 0, 0), stop, ready.set_result)
        )
        try:
            running = Running(fleet, await asyncio.wait_for(ready, 60), stop)
            assert await running.refused_with("CS001", old_leaf) == 403
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    events = await asyncio.to_thread(
        pkictl_json, fleet.home, "events", "list", "--station", "CS001"
    )
    assert events[-1]["what"] == "issuer-expired"


async def test_tls_1_2_is_refused_under_the_default_policy(service: Running) -> None:
    context = service.fleet.home.client_context(
        service.fleet.good, max_version=ssl.TLSVersion.TLSv1_2
    )
    with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage)):
        await websockets.connect(
            service.url("CS001"), ssl=context, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            open_timeout=5,
        )  # fmt: skip
