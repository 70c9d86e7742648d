"""Calls queued for a station wait for its boot to be answered (issue 22, item 15; OCPP
B01.FR.08, B02.FR.01/02), against a real `pkictl serve` on 127.0.0.1 and a station
built on the `ocpp` library's ChargePoint over mutual TLS that records the order of
every frame on its connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from integration_support import initialized_home
from ocpp.v201 import call
from simulated_station import Renewing, Service, Station, pkictl_json, serving

from pki.clock import FixedClock

STATIONS = {"B1": ("SN-B1", 3, False), "B2": ("SN-B2", 3, True)}  # B2: may boot expired
WAIT_S = 60.0
BOOT_DELAY_S = 0.5
"""The station boots this long after connecting: calls sent at once would come first."""


class Recording(Renewing):
    """Keeps every frame it sends and receives, in order: ("in"|"out", frame)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.frames: list[tuple[str, list[Any]]] = []

    async def route_message(self, raw_msg: str) -> Any:
        self.frames.append(("in", json.loads(raw_msg)))
        return await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        self.frames.append(("out", json.loads(message)))
        await super()._send(message)

    def boot_id(self) -> str:
        (sent,) = [f[1] for way, f in self.frames if way == "out" and f[2] == "BootNotification"]
        return str(sent)

    def calls_in(self) -> list[str]:
        return [frame[2] for way, frame in self.frames if way == "in" and frame[0] == 2]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, STATIONS)
    async with serving(home, STATIONS) as running:
        yield running


def root_file(directory: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Next CSMS root")])
    now = datetime.now(UTC)
    root = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = directory / "next-root.pem"
    path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return path


async def queue_while_offline(service: Service, station_id: str) -> None:
    """A renewal (its TriggerMessage goes out when the station is back) and an
    InstallCertificate, both asked for while the station is away."""
    await asyncio.to_thread(pkictl_json, service.home, "renew", station_id)
    await asyncio.to_thread(
        pkictl_json, service.home, "roots", "install", "--type", "CSMSRootCertificate",
        str(root_file(service.home.directory)), "--station", station_id,
    )  # fmt: skip


async def connect_and_boot(service: Service, station: Station) -> tuple[Recording, Any, Any]:
    connection = await websockets.connect(
        f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/{station.station_id}",
        ssl=service.home.client_context(station.identity),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=10,
    )
    client = Recording(station.station_id, connection, station)
    listener = asyncio.create_task(client.start())
    await asyncio.sleep(BOOT_DELAY_S)  # e.g. a slow link, or its self-check
    boot = call.BootNotification(
        charging_station={"model": "Sim", "vendor_name": "pkictl"}, reason="PowerUp"
    )
    answer = await client.call(boot)
    return client, listener, answer


async def until(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {what}")
        await asyncio.sleep(0.05)


async def test_queued_calls_go_out_only_after_the_boot_is_answered_accepted(
    service: Service,
) -> None:
    station = await service.station("B1")
    await queue_while_offline(service, "B1")
    client, listener, answer = await connect_and_boot(service, station)
    try:
        assert answer.status == "Accepted"
        await until(lambda: {"TriggerMessage", "InstallCertificate"} <= set(client.calls_in()),
                    "both queued calls delivered")  # fmt: skip
        first_in = next(frame for way, frame in client.frames if way == "in")
        assert first_in[:2] == [3, client.boot_id()], client.frames  # the answer first
    finally:
        listener.cancel()


async def test_a_pending_station_gets_only_what_b02_allows(service: Service) -> None:
    """Admitted with an expired certificate (A00.FR.429): Boot Pending; its renewal is
    triggered (allowed), the InstallCertificate waits for an Accepted boot."""
    past = FixedClock(datetime.now(UTC) - timedelta(days=400))
    identity = await service.home.issue("B2", station="B2", serial="SN-B2", clock=past)
    station = Station("B2", "SN-B2", identity, service.home.directory)
    await queue_while_offline(service, "B2")
    client, listener, answer = await connect_and_boot(service, station)
    try:
        assert answer.status == "Pending"
        await until(lambda: "TriggerMessage" in client.calls_in(), "the renewal triggered")
        await asyncio.wait_for(station.installing.wait(), WAIT_S)  # CertificateSigned too
        assert "InstallCertificate" not in client.calls_in()
        calls = await asyncio.to_thread(pkictl_json, service.home, "outbox", "list")
        (install,) = [c for c in calls if c["action"] == "InstallCertificate"]
        assert install["state"] == "queued"  # held, not lost
        first_in = next(frame for way, frame in client.frames if way == "in")
        assert first_in[:2] == [3, client.boot_id()], client.frames
    finally:
        listener.cancel()
