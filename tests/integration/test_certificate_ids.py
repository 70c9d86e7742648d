"""DeleteCertificate names a certificate exactly as the station reported it (issue 22,
item 14), against a real `pkictl serve` on 127.0.0.1 and a station built on the `ocpp`
library's ChargePoint over mutual TLS that reports upper-case hex and, as the stations
seen do, finds a certificate only by the bytes it reported."""

from __future__ import annotations

import asyncio
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
from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action
from simulated_station import Renewing, Service, pkictl_json, serving

from pki.hashdata import hash_data_for

STATIONS = {"U1": ("SN-U1", 3, False)}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, STATIONS)
    async with serving(home, STATIONS) as running:
        yield running


def new_root(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    root = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return root.public_bytes(serialization.Encoding.PEM).decode()


def reported(pem: str) -> dict[str, str]:
    """A root's hash data as this station reports it: upper-case hex throughout."""
    root = x509.load_pem_x509_certificate(pem.encode())
    strict = hash_data_for(root, root.public_key()).to_ocpp()
    return {key: value.upper() for key, value in strict.items()}


class UpperCase(Renewing):
    """Reports its roots in upper-case hex; deletes only what matches byte for byte."""

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(self, **_: Any) -> Any:
        chains = [
            {"certificateType": kind, "certificateHashData": reported(pem)}
            for kind, pem in self.station.roots
        ]
        return call_result.GetInstalledCertificateIds(
            status="Accepted", certificate_hash_data_chain=chains
        )

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, certificate_hash_data: dict[str, str]) -> Any:
        sent = {
            "hashAlgorithm": certificate_hash_data["hash_algorithm"],
            "issuerNameHash": certificate_hash_data["issuer_name_hash"],
            "issuerKeyHash": certificate_hash_data["issuer_key_hash"],
            "serialNumber": certificate_hash_data["serial_number"],
        }
        self.station.deleted.append(sent)
        for index, (_, pem) in enumerate(self.station.roots):
            if reported(pem) == sent:
                del self.station.roots[index]
                return call_result.DeleteCertificate(status="Accepted")
        return call_result.DeleteCertificate(status="NotFound")


async def test_delete_certificate_sends_the_hash_data_as_the_station_reported_it(
    service: Service,
) -> None:
    station = await service.station("U1")
    cso_root = service.home.root_pem.read_text()
    station.roots = [("CSMSRootCertificate", cso_root), ("CSMSRootCertificate", new_root("Next"))]
    connection = await websockets.connect(
        f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/U1",
        ssl=service.home.client_context(station.identity),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=10,
    )
    client = UpperCase("U1", connection, station)
    listener = asyncio.create_task(client.start())
    try:
        listed = await asyncio.to_thread(
            pkictl_json, service.home, "station", "certs", "U1", "--refresh"
        )
        known = {c["serial"]: c["known_as"] for c in listed}
        root = x509.load_pem_x509_certificate(cso_root.encode())
        serial = format(root.serial_number, "x")
        assert known[serial] == "cso-root"  # matched to our CA whatever the case
        await asyncio.to_thread(
            pkictl_json, service.home, "roots", "delete", "--serial", serial, "--station", "U1"
        )
        for _ in range(300):
            if station.deleted:
                break
            await asyncio.sleep(0.1)
        (sent,) = station.deleted
        assert sent == reported(cso_root)  # byte for byte: upper-case, as reported
        assert [kind for kind, _ in station.roots] == ["CSMSRootCertificate"]  # it went
        for _ in range(300):
            outcome = await asyncio.to_thread(pkictl_json, service.home, "outbox", "list")
            (delete,) = [o for o in outcome if o["action"] == "DeleteCertificate"]
            if delete["state"] == "answered":
                break
            await asyncio.sleep(0.1)
        assert delete["state"] == "answered"
        assert delete["response"] == {"status": "Accepted"}
    finally:
        listener.cancel()
