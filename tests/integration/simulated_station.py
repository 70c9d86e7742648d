"""Simulated charging stations for the end-to-end lifecycle tests, and the helpers that
drive the real CLI beside a real `pkictl serve`.

A station does what a real one does: on TriggerMessage it makes a new P-256 key and
sends a real CSR; it checks and installs the CertificateSigned chain and reconnects with
it over mutual TLS; it keeps CSMS roots, reports them by the hash data OCPP defines and
installs new ones as OCPP M05 says -- with AdditionalRootCertificateCheck, only a root
that the one it has signed.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from click.testing import CliRunner
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from integration_support import Home, Identity, csr, passphrase_file, write_key
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection

from cli.main import cli
from csms.app import App, open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from pki.hashdata import hash_data_for

Fleet = dict[str, tuple[str, int, bool]]
"""station id -> (serial, security profile, allow_expired), as initialized_home takes."""


class Renewing(ChargePoint):  # type: ignore[misc]
    """A station that renews when triggered and installs what it is sent; it reports,
    installs and deletes roots in `station.roots` (type -> PEM)."""

    def __init__(self, station_id: str, connection: ClientConnection, station: Station) -> None:
        super().__init__(station_id, connection)
        self.station = station

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        if requested_message == "SignChargingStationCertificate":
            asyncio.get_running_loop().call_later(0.05, self._send_csr)
        return call_result.TriggerMessage(status="Accepted")

    def _send_csr(self) -> None:
        self.station.tasks.append(asyncio.create_task(self.sign()))

    async def sign(self, subject_serial: str | None = None) -> Any:
        self.station.pending_key = ec.generate_private_key(ec.SECP256R1())
        request = call.SignCertificate(
            csr=csr(self.station.pending_key, subject_serial or self.station.serial),
            certificate_type="ChargingStationCertificate",
        )
        answer = await self.call(request)
        self.station.sign_answers.append(answer)
        return answer

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(self, **_: Any) -> Any:
        chains = []
        installed = [x509.load_pem_x509_certificate(pem.encode()) for _, pem in self.station.roots]
        for (certificate_type, _), root in zip(self.station.roots, installed, strict=True):
            issuer = next((c for c in installed if c.subject == root.issuer), root)
            data = hash_data_for(root, issuer.public_key()).to_ocpp()  # a link: its issuer's
            chains.append({"certificateType": certificate_type, "certificateHashData": data})
        return call_result.GetInstalledCertificateIds(
            status="Accepted" if chains else "NotFound",
            certificate_hash_data_chain=chains or None,
        )

    @on(Action.get_variables)
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]]) -> Any:
        variables = {
            "SeccId": self.station.secc_id,
            "AdditionalRootCertificateCheck": self.station.additional_root_check,
        }
        results = []
        for item in get_variable_data:
            value = variables.get(item["variable"]["name"])
            results.append({
                "attribute_status": "UnknownVariable" if value is None else "Accepted",
                "component": item["component"], "variable": item["variable"],
                **({} if value is None else {"attribute_value": value}),
            })  # fmt: skip
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.install_certificate)
    async def on_install_certificate(self, certificate_type: str, certificate: str) -> Any:
        station = self.station
        new = x509.load_pem_x509_certificate(certificate.encode())
        csms_roots = [x509.load_pem_x509_certificate(pem.encode())
                      for kind, pem in station.roots if kind == certificate_type]  # fmt: skip
        checked = station.additional_root_check == "true" and certificate_type == (
            "CSMSRootCertificate"
        )
        if station.refuse_roots > 0 or (checked and not any(signs(r, new) for r in csms_roots)):
            station.refuse_roots -= 1
            return call_result.InstallCertificate(status="Rejected")
        if not checked and not signs(new, new):
            return call_result.InstallCertificate(status="Rejected")  # only roots
        station.roots.append((certificate_type, certificate))
        return call_result.InstallCertificate(status="Accepted")

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, certificate_hash_data: dict[str, str]) -> Any:
        self.station.deleted.append(certificate_hash_data)
        return call_result.DeleteCertificate(status="Accepted")

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        station = self.station
        chain = x509.load_pem_x509_certificates(certificate_chain.encode())
        assert station.pending_key is not None
        fits = chain[0].public_key() == station.pending_key.public_key()
        no_root = all(c.issuer != c.subject for c in chain)
        if station.refuse_install or not (fits and no_root):
            return call_result.CertificateSigned(status="Rejected")
        station.installed = (
            station.write(f"{self.id}-renewed.pem", certificate_chain.encode()),
            write_key(station.directory / f"{self.id}-renewed.key", station.pending_key),
        )
        station.installed_serial = format(chain[0].serial_number, "x")
        station.installing.set()
        return call_result.CertificateSigned(status="Accepted")


@dataclass
class Station:
    station_id: str
    serial: str
    identity: Identity
    directory: Path
    refuse_install: bool = False
    pending_key: ec.EllipticCurvePrivateKey | None = None
    installed: Identity | None = None
    installed_serial: str | None = None
    sign_answers: list[Any] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    installing: asyncio.Event = field(default_factory=asyncio.Event)
    roots: list[tuple[str, str]] = field(default_factory=list)
    secc_id: str | None = None
    deleted: list[dict[str, str]] = field(default_factory=list)
    additional_root_check: str | None = None
    """SecurityCtrlr.AdditionalRootCertificateCheck as reported ("true"/"false"; None:
    the variable is unknown)."""
    refuse_roots: int = 0
    """Reject this many InstallCertificate requests first."""

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


def signs(issuer: x509.Certificate, certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass
class Service:
    home: Home
    ports: Listening
    fleet: Fleet = field(default_factory=dict)
    app: App | None = None
    """The serving app, when it runs in this process."""

    async def connect(self, station: Station, identity: Identity) -> tuple[Renewing, Any]:
        connection = await websockets.connect(
            f"wss://127.0.0.1:{self.ports.ocpp_port}/ocpp/{station.station_id}",
            ssl=self.home.client_context(identity),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            open_timeout=30,  # generous: a busy machine is no refusal
        )
        client = Renewing(station.station_id, connection, station)
        return client, asyncio.create_task(client.start())

    async def station(self, station_id: str) -> Station:
        serial = self.fleet[station_id][0]
        identity = await self.home.issue(station_id, station=station_id, serial=serial)
        return Station(station_id, serial, identity, self.home.directory)


@asynccontextmanager
async def serving(
    home: Home, fleet: Fleet, response_timeout: float = 30.0, poll_interval: float = 0.1
) -> AsyncIterator[Service]:
    """`pkictl serve` (in this process, on loopback ports of its choosing) for ``home``,
    station CSRs signed in its child process (ADR 15); calls queued elsewhere are looked
    for every ``poll_interval`` s."""
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(home.path, passphrase_file(home.directory)) as app:
        options = ServeOptions(
            "127.0.0.1",
            0,
            0,
            response_timeout=response_timeout,
            outbox_poll_interval=poll_interval,
            signing_process=True,  # as `pkictl serve` runs with a core to spare
        )
        task = asyncio.create_task(serve(app, options, stop, ready.set_result))
        try:
            yield Service(home, await asyncio.wait_for(ready, 60), fleet, app)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


async def pkictl_serve(
    home: Home, *options: str
) -> tuple[asyncio.subprocess.Process, Listening, list[bytes]]:
    """`pkictl serve` as a process of its own on free loopback ports, once it listens:
    (process, ports, the stderr lines read so far)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "--home", str(home.path),
        "--passphrase-file", str(passphrase_file(home.directory)),
        "serve", "--host", "127.0.0.1", "--ocpp-port", "0", "--http-port", "0", *options,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[bytes] = []
    while not lines or not lines[-1].startswith(b"pkictl serve: OCPP on"):
        lines.append(await asyncio.wait_for(process.stderr.readline(), 90))
        assert lines[-1], f"pkictl serve exited before listening: {lines}"
    match = re.search(rb"wss://127\.0\.0\.1:(\d+)/.*http://127\.0\.0\.1:(\d+)/", lines[-1])
    assert match is not None
    return process, Listening(int(match.group(1)), int(match.group(2))), lines


def pkictl_json(home: Home, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--home", str(home.path), *args, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pkictl(home: Home, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home.path), *args])
