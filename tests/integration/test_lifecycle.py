"""The certificate lifecycle over OCPP end to end, against a real `pkictl serve` on
127.0.0.1: renewal (A02/A03) and the certificates installed on stations (M03-M05).

Simulated stations do what a real one does: on TriggerMessage they make a new P-256 key
and send a real CSR; they check and install the CertificateSigned chain, and reconnect
with it over mutual TLS. Renewals are asked for with the real CLI on the same database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from integration_support import (
    ORG,
    PASSPHRASE,
    Home,
    csr,
    initialized_home,
    passphrase_file,
)
from ocpp.routing import on
from ocpp.v201 import call
from ocpp.v201.enums import Action
from simulated_station import (
    Renewing,
    Service,
    Station,
    pkictl,
    pkictl_json,
    pkictl_serve,
    serving,
)

from cli.main import cli
from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from csms.transport.tls import ServerCredential, restore_fitting_key
from pki.audit import verify_chain
from pki.clock import FixedClock
from pki.hashdata import hash_data_for

STATIONS = {f"R{n}": (f"SN-R{n}", 3, False) for n in range(1, 6)}


async def renewal_of(home: Home, station_id: str, state: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for _ in range(150):
        rows = await asyncio.to_thread(
            pkictl_json, home, "renewals", "list", "--station", station_id
        )
        if rows and rows[-1]["state"] == state:
            return rows[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{station_id}: renewals {rows}, never {state}")


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, STATIONS, frozenset({"cso", "v2g"}))
    async with serving(home, STATIONS) as running:
        yield running


async def test_a_renewal_asked_while_offline_ends_confirmed_and_supersedes(
    service: Service,
) -> None:
    station = await service.station("R1")
    old_serial = x509.load_pem_x509_certificates(station.identity[0].read_bytes())[0]
    (asked,) = await asyncio.to_thread(pkictl_json, service.home, "renew", "R1")
    assert asked["state"] == "due"  # waits: R1 is not connected; triggered when it is
    assert asked["old_serial"] == format(old_serial.serial_number, "x")

    client, listener = await service.connect(station, station.identity)
    delivered = await renewal_of(service.home, "R1", "delivered")
    assert delivered["new_serial"] == station.installed_serial
    assert station.installed is not None
    await client._connection.close()
    listener.cancel()

    _, listener = await service.connect(station, station.installed)  # as a station does
    confirmed = await renewal_of(service.home, "R1", "confirmed")
    listener.cancel()
    certificates = {
        c["serial"]: c["status"]
        for c in await asyncio.to_thread(pkictl_json, service.home, "cert", "list")
    }
    assert certificates[confirmed["old_serial"]] == "superseded"
    assert certificates[confirmed["new_serial"]] == "valid"
    assert [a.status for a in station.sign_answers] == ["Accepted"]


async def test_a_csr_for_another_serial_is_rejected_and_fails_the_renewal(
    service: Service,
) -> None:
    station = await service.station("R2")
    client, listener = await service.connect(station, station.identity)
    answer = await client.sign(subject_serial="SN-R3")  # not R2's registered serial
    assert answer.status == "Rejected"
    assert answer.status_info["reason_code"]
    failed = await renewal_of(service.home, "R2", "failed")
    assert failed["requested_by"] == "station:R2"
    assert "SN-R3" in failed["reason"] or "serial" in failed["reason"].lower()
    listener.cancel()


async def test_a_station_refusing_the_certificate_fails_the_renewal(service: Service) -> None:
    station = await service.station("R3")
    station.refuse_install = True
    _, listener = await service.connect(station, station.identity)
    await asyncio.to_thread(pkictl_json, service.home, "renew", "R3")
    failed = await renewal_of(service.home, "R3", "failed")
    assert "Rejected" in failed["reason"]
    listener.cancel()


async def test_the_same_csr_twice_gets_one_certificate(service: Service) -> None:
    station = await service.station("R4")
    client, listener = await service.connect(station, station.identity)
    key = ec.generate_private_key(ec.SECP256R1())
    station.pending_key = key
    request = call.SignCertificate(
        csr=csr(key, station.serial), certificate_type="ChargingStationCertificate"
    )
    first, second = await client.call(request), await client.call(request)
    assert (first.status, second.status) == ("Accepted", "Accepted")
    await renewal_of(service.home, "R4", "delivered")
    issued = await asyncio.to_thread(pkictl_json, service.home, "cert", "list", "--station", "R4")
    assert len(issued) == 2  # the one it connected with, and one renewal: not two
    listener.cancel()


async def due_station(service: Service, station_id: str) -> Station:
    """A station whose certificate was issued 300 days ago: past its 90-day threshold."""
    serial = STATIONS[station_id][0]
    past = FixedClock(datetime.now(UTC) - timedelta(days=300))
    identity = await service.home.issue(station_id, station=station_id, serial=serial, clock=past)
    return Station(station_id, serial, identity, service.home.directory)


async def test_a_due_certificate_is_renewed_when_the_station_boots(service: Service) -> None:
    station = await due_station(service, "R1")
    client, listener = await service.connect(station, station.identity)
    boot = call.BootNotification(
        charging_station={"model": "Sim", "vendor_name": "pkictl"}, reason="PowerUp"
    )
    assert (await client.call(boot)).status == "Accepted"
    triggered = await renewal_of(service.home, "R1", "delivered")
    assert triggered["requested_by"] == "scan"
    await client._connection.close()
    listener.cancel()
    assert station.installed is not None
    _, listener = await service.connect(station, station.installed)
    await renewal_of(service.home, "R1", "confirmed")
    listener.cancel()


async def test_renew_due_waits_until_each_renewal_is_confirmed(service: Service) -> None:
    station = await due_station(service, "R1")
    (due,) = await asyncio.to_thread(pkictl_json, service.home, "renew", "--due", "--dry-run")
    assert (due["station"], due["kind"]) == ("R1", "ChargingStationCertificate")
    client, listener = await service.connect(station, station.identity)
    waiting = asyncio.create_task(
        asyncio.to_thread(pkictl_json, service.home, "renew", "--due", "--wait", "20")
    )
    await asyncio.wait_for(station.installing.wait(), 20)  # then it reconnects with it
    await client._connection.close()
    listener.cancel()
    _, listener = await service.connect(station, station.installed)
    (confirmed,) = await asyncio.wait_for(waiting, 30)
    assert confirmed["state"] == "confirmed"
    listener.cancel()


async def test_a_renewal_asked_by_another_process_reaches_the_station_without_a_poll(
    tmp_path: Path,
) -> None:
    """SQLite: `pkictl renew` in a process of its own wakes the node over its Unix
    socket; the node polls only once a minute here, so only the wake-up can be in time."""
    home = await initialized_home(tmp_path, STATIONS, frozenset({"cso"}))
    async with serving(home, STATIONS, poll_interval=60) as service:
        sockets = await asyncio.to_thread(lambda: list(tmp_path.rglob("*.wake/*.sock")))
        assert len(sockets) == 1  # this process's, while it serves
        station = await service.station("R1")
        _, listener = await service.connect(station, station.identity)
        asked = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "--home", str(home.path),
            "--passphrase-file", str(passphrase_file(home.directory)), "renew", "R1",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(asked.wait(), 30) == 0
        await asyncio.wait_for(station.installing.wait(), 20)  # a poll would take 60 s
        listener.cancel()
    assert not sockets[0].exists()  # removed when the node stops


def test_renew_wait_exits_9_when_a_renewal_does_not_end(tmp_path: Path) -> None:
    home = asyncio.run(initialized_home(tmp_path, STATIONS))
    result = CliRunner().invoke(
        cli, ["--home", str(home.path), "renew", "R1", "--wait", "1", "--json"]
    )
    assert result.exit_code == 9, result.output  # R1 is offline: it waits, due
    assert json.loads(result.stdout)[0]["state"] == "due"


REFRESH = ("station", "certs", "R1", "--refresh")


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


async def test_station_certs_roots_install_and_delete(service: Service, tmp_path: Path) -> None:
    station = await service.station("R1")
    cso_root = service.home.root_pem.read_text()
    foreign = new_root("Operator's next CSMS root")
    station.roots = [("CSMSRootCertificate", cso_root)]
    _, listener = await service.connect(station, station.identity)

    listed = await asyncio.to_thread(pkictl_json, service.home, *REFRESH)
    assert [(c["type"], c["known_as"]) for c in listed] == [("CSMSRootCertificate", "cso-root")]
    cso_serial = listed[0]["serial"]

    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(station.identity[0].read_bytes().split(b"-----END CERTIFICATE-----")[0]
                     + b"-----END CERTIFICATE-----\n")  # fmt: skip
    refused = await asyncio.to_thread(
        pkictl, service.home, "roots", "install", "--type", "V2GRootCertificate", str(leaf),
        "--station", "R1",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "not self-signed" in refused.output

    for wrong, named in ((("--serial", "not-hex"), "serial:"), (("abc",), "HASH:")):
        refused = await asyncio.to_thread(
            pkictl, service.home, "roots", "delete", *wrong, "--station", "R1"
        )
        assert refused.exit_code == 2
        assert named in refused.output
    last_root = await asyncio.to_thread(
        pkictl, service.home, "roots", "delete", "--serial", cso_serial.upper(), "--station", "R1"
    )
    assert last_root.exit_code == 5
    assert "only CSMSRootCertificate" in last_root.output

    root_file = tmp_path / "foreign.pem"
    root_file.write_text(foreign)
    await asyncio.to_thread(
        pkictl_json, service.home, "roots", "install", "--type", "CSMSRootCertificate",
        str(root_file), "--all",
    )  # fmt: skip
    for _ in range(100):
        if len(station.roots) == 2:
            break
        await asyncio.sleep(0.05)
    assert station.roots[1] == ("CSMSRootCertificate", foreign)

    listed = await asyncio.to_thread(pkictl_json, service.home, *REFRESH)
    assert sorted(str(c["known_as"]) for c in listed) == ["None", "cso-root"]
    fingerprint = x509.load_pem_x509_certificate(cso_root.encode()).fingerprint(hashes.SHA256())
    await asyncio.to_thread(
        pkictl_json, service.home, "roots", "delete", fingerprint.hex(), "--station", "R1"
    )  # two CSMS roots now: the old one may go; named by its fingerprint
    for _ in range(100):
        if station.deleted:
            break
        await asyncio.sleep(0.05)
    root = x509.load_pem_x509_certificate(cso_root.encode())
    expected = hash_data_for(root, root.public_key()).to_ocpp()
    (deleted,) = station.deleted  # snake_case, as the `ocpp` library hands it over
    assert (
        deleted["hash_algorithm"], deleted["issuer_name_hash"],
        deleted["issuer_key_hash"], deleted["serial_number"],
    ) == (
        expected["hashAlgorithm"], expected["issuerNameHash"],
        expected["issuerKeyHash"], expected["serialNumber"],
    )  # fmt: skip
    listener.cancel()


def test_station_certs_refresh_of_an_offline_station_exits_9(tmp_path: Path) -> None:
    home = asyncio.run(initialized_home(tmp_path, STATIONS))
    result = CliRunner().invoke(
        cli, ["--home", str(home.path), "station", "certs", "R1", "--refresh", "--wait", "1"]
    )
    assert result.exit_code == 9, result.output
    assert "queued" in result.output


def served(home: Home, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((home.path / "certs" / f"{name}.pem").read_bytes())


def fits(home: Home, name: str) -> bool:
    """The key file of server certificate ``name`` fits the certificate file."""
    key = serialization.load_pem_private_key(
        (home.path / "keys" / f"{name}.key.pem").read_bytes(), PASSPHRASE.encode()
    )
    return key.public_key() == served(home, name).public_key()


async def test_the_daemon_renews_server_certificates_before_expiry(tmp_path: Path) -> None:
    home = await initialized_home(tmp_path, STATIONS)
    names = ("csms-server-ec", "csms-server-rsa")
    before = {n: served(home, n).serial_number for n in names}
    for days, expected in ((334, []), (336, list(names))):  # 365-day certificates, 30 ahead
        clock = FixedClock(datetime.now(UTC) + timedelta(days=days))
        async with open_app(home.path, passphrase_file(home.directory), clock) as app:
            renewed = await app.renew_server_certificates("test")
            assert sorted(a.name for a in renewed) == expected
    for name in names:
        assert served(home, name).serial_number != before[name]
        assert fits(home, name)  # a new key, and the certificate for it
        assert (home.path / "keys" / f"{name}.key.pem.replaced").exists()
    async with open_app(home.path) as app:
        actions = [e.event.action for e in await app.store.audit_entries()]
    assert actions.count("csms-server.renewed") == 2


async def test_a_renewal_cut_between_key_and_certificate_is_undone_at_start(
    tmp_path: Path,
) -> None:
    home = await initialized_home(tmp_path, STATIONS)
    old_certificate = (home.path / "certs" / "csms-server-ec.pem").read_bytes()
    result = await asyncio.to_thread(
        pkictl, home, "--passphrase-file", str(passphrase_file(home.directory)),
        "ca", "renew-server", "csms-server-ec",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (home.path / "certs" / "csms-server-ec.pem").write_bytes(old_certificate)  # the cut
    assert not fits(home, "csms-server-ec")
    credential = ServerCredential(
        home.path / "certs" / "csms-server-ec.pem", home.path / "keys" / "csms-server-ec.key.pem"
    )
    assert restore_fitting_key(credential, PASSPHRASE.encode)
    assert fits(home, "csms-server-ec")
    assert not restore_fitting_key(credential, PASSPHRASE.encode)  # nothing left to do


def test_renew_server_names_what_it_does_not_know(tmp_path: Path) -> None:
    home = asyncio.run(initialized_home(tmp_path, STATIONS))
    result = pkictl(home, "ca", "renew-server", "csms-server-ec", "no-such-server")
    assert result.exit_code == 3
    assert "no-such-server" in result.output
    assert not (home.path / "keys" / "csms-server-ec.key.pem.replaced").exists()


def v2g_csr(key: ec.EllipticCurvePrivateKey, secc_id: str) -> str:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, secc_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "CPO"),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def test_a_v2g_csr_waits_for_the_secc_id_the_station_reports(service: Service) -> None:
    station = await service.station("R1")  # registered without a SECC id
    station.secc_id = "SECC0001"
    client, listener = await service.connect(station, station.identity)
    station.pending_key = ec.generate_private_key(ec.SECP256R1())
    answer = await client.call(
        call.SignCertificate(
            csr=v2g_csr(station.pending_key, "SECC0001"), certificate_type="V2GCertificate"
        )
    )
    assert answer.status == "Accepted"  # signed once the SECC id is known
    confirmed = await renewal_of(service.home, "R1", "confirmed")  # its Accepted confirms it
    assert confirmed["kind"] == "V2GCertificate"
    shown = await asyncio.to_thread(pkictl_json, service.home, "station", "show", "R1")
    assert shown["secc_id"] == "SECC0001"
    leaf = x509.load_pem_x509_certificates((station.installed or ("",))[0].read_bytes())[0]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SECC0001"
    listener.cancel()


async def test_a_v2g_csr_fails_when_the_station_keeps_its_secc_id(service: Service) -> None:
    station = await service.station("R2")  # no SECC id, and the station will not tell
    client, listener = await service.connect(station, station.identity)
    key = ec.generate_private_key(ec.SECP256R1())
    await client.call(
        call.SignCertificate(csr=v2g_csr(key, "SECC0002"), certificate_type="V2GCertificate")
    )
    failed = await renewal_of(service.home, "R2", "failed")
    assert "SECC id" in failed["reason"]
    listener.cancel()


async def test_fifty_stations_due_in_80_days_are_all_renewed(tmp_path: Path) -> None:
    """Issue #4's campaign: certificates that expire in 80 days (past the 90-day
    threshold) on 50 stations; the daemon's scan at start renews them all as they
    connect; each reconnects with its new certificate; every old one is superseded."""
    fleet = {f"F{n:02d}": (f"SN-F{n:02d}", 3, False) for n in range(50)}
    home = await initialized_home(tmp_path, fleet)
    past = FixedClock(datetime.now(UTC) - timedelta(days=365 - 80))
    identities = {
        s: await home.issue(s, station=s, serial=serial, clock=past)
        for s, (serial, _, _) in fleet.items()
    }
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(home.path, passphrase_file(home.directory)) as app:
        options = ServeOptions("127.0.0.1", 0, 0, response_timeout=30.0, outbox_poll_interval=0.1)
        task = asyncio.create_task(serve(app, options, stop, ready.set_result))
        try:
            running = Service(home, await asyncio.wait_for(ready, 60))

            async def renew(station_id: str) -> None:
                station = Station(station_id, fleet[station_id][0], identities[station_id],
                                  home.directory)  # fmt: skip
                client, listener = await running.connect(station, station.identity)
                await asyncio.wait_for(station.installing.wait(), 120)
                await client._connection.close()
                listener.cancel()
                assert station.installed is not None
                _, listener = await running.connect(station, station.installed)
                listeners.append(listener)

            listeners: list[asyncio.Task[Any]] = []
            await asyncio.gather(*(renew(s) for s in fleet))
            for _ in range(1200):  # confirmation is written as each one is admitted
                states = {r.state.value for r in await app.renewals.list(limit=100)}
                if states == {"confirmed"}:
                    break
                await asyncio.sleep(0.05)
            for listener in listeners:
                listener.cancel()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    renewals = await asyncio.to_thread(pkictl_json, home, "renewals", "list", "--history")
    assert sorted(r["station"] for r in renewals) == sorted(fleet)  # one each
    assert {r["state"] for r in renewals} == {"confirmed"}
    certificates = await asyncio.to_thread(pkictl_json, home, "cert", "list")
    statuses = {c["serial"]: c["status"] for c in certificates}
    assert {statuses[r["old_serial"]] for r in renewals} == {"superseded"}
    assert {statuses[r["new_serial"]] for r in renewals} == {"valid"}


class Stalling(Renewing):
    """Receives CertificateSigned and never answers: the CSMS dies meanwhile."""

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        self.station.installing.set()
        await asyncio.Event().wait()


async def test_a_kill_9_between_signing_and_delivery_loses_nothing(tmp_path: Path) -> None:
    home = await initialized_home(tmp_path, STATIONS)
    serial = STATIONS["R1"][0]
    identity = await home.issue("R1", station="R1", serial=serial)
    station = Station("R1", serial, identity, home.directory)
    process, ports, _ = await pkictl_serve(home)
    port = ports.ocpp_port
    try:
        connection = await websockets.connect(
            f"wss://127.0.0.1:{port}/ocpp/R1", ssl=home.client_context(station.identity),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        )  # fmt: skip
        listener = asyncio.create_task(Stalling("R1", connection, station).start())
        await asyncio.to_thread(pkictl_json, home, "renew", "R1")
        await asyncio.wait_for(station.installing.wait(), 30)  # signed, sent, unanswered
        process.kill()  # kill -9
        await process.wait()
        listener.cancel()
        (signed,) = await asyncio.to_thread(pkictl_json, home, "renewals", "list", "--history")
        assert signed["state"] == "signed"

        process, ports, _ = await pkictl_serve(home)  # the restart resumes it
        port = ports.ocpp_port
        running = Service(home, Listening(port, 0))
        station.installing.clear()
        client, listener = await running.connect(station, station.identity)
        await asyncio.wait_for(station.installing.wait(), 30)  # CertificateSigned again
        await client._connection.close()
        listener.cancel()
        assert station.installed is not None
        _, listener = await running.connect(station, station.installed)
        confirmed = await renewal_of(home, "R1", "confirmed")
        listener.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert confirmed["new_serial"] == signed["new_serial"]  # the same certificate, once
    issued = await asyncio.to_thread(pkictl_json, home, "cert", "list", "--station", "R1")
    assert len(issued) == 2  # the one it had, the one it renewed to: no third
    async with open_app(home.path) as app:
        assert verify_chain(await app.store.audit_entries(), await app.store.audit_head()) == []


async def test_serve_with_two_workers_serves_stations_and_drains(tmp_path: Path) -> None:
    """`pkictl serve --workers 2`: two nodes on the same ports, a station admitted over
    mutual TLS by one of them, both drained by one SIGTERM."""
    home = await initialized_home(tmp_path, STATIONS)
    station = await Service(home, Listening(0, 0), STATIONS).station("R1")
    process, ports, lines = await pkictl_serve(home, "--workers", "2")
    try:
        assert b"(2 worker processes)" in lines[-1]
        nodes = await asyncio.to_thread(pkictl_json, home, "nodes", "list")
        assert [n["state"] for n in nodes] == ["live", "live"]
        client, listener = await Service(home, ports, STATIONS).connect(station, station.identity)
        boot = call.BootNotification(
            charging_station={"model": "Sim", "vendor_name": "pkictl"}, reason="PowerUp"
        )
        assert (await client.call(boot)).status == "Accepted"
        nodes = await asyncio.to_thread(pkictl_json, home, "nodes", "list")
        assert sorted(n["stations"] for n in nodes) == [0, 1]
        listener.cancel()
        await client._connection.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stopped = await asyncio.to_thread(pkictl_json, home, "nodes", "list", "--all")
    assert [n["state"] for n in stopped] == ["stopped", "stopped"]


def test_db_status_and_upgrade(tmp_path: Path) -> None:
    home = asyncio.run(initialized_home(tmp_path, STATIONS))
    status = pkictl_json(home, "db", "status")
    assert status["up_to_date"] is True
    assert status["revision"] == status["head"]
    assert pkictl_json(home, "db", "upgrade")["from"] == status["revision"]  # nothing to do
    empty = tmp_path / "not-a-home"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["--home", str(empty), "db", "status"])
    assert result.exit_code == 6, result.output  # not a home: no new database file made
    assert list(empty.iterdir()) == []
