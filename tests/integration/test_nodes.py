"""Several `pkictl serve` nodes on one PostgreSQL database (issue #7, ADR 13), end to end:
real mutual TLS, real CSRs, the real CLI writing requests that the node holding each
station carries out.

- 100 stations spread over two nodes; `pkictl renew --due` from a third process: every
  renewal completes exactly once, stations reconnecting to the other node with their
  new certificate.
- kill -9 of one node (a `pkictl serve` process) in the middle of a campaign: its
  stations reconnect to the other node, which finishes every renewal; nothing is issued
  twice or without a record.
- A revocation through one node is seen at once by the other's handshake and OCSP.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from integration_support import Home, Identity, csr, initialized_home, passphrase_file, write_key
from simulated_station import Fleet, Service, Station, pkictl_json, pkictl_serve, serving

from csms.app import open_app
from pki.audit import verify_chain
from pki.clock import FixedClock

pytestmark = pytest.mark.postgres

DUE_IN_80_DAYS = FixedClock(datetime.now(UTC) - timedelta(days=365 - 80))


@pytest.fixture
def pg_home(
    tmp_path: Path, fresh_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A fresh PostgreSQL database for the home (every process here and every child
    `pkictl serve` finds it through PKICTL_DATABASE_URL)."""
    monkeypatch.setenv("PKICTL_DATABASE_URL", fresh_postgres)
    return tmp_path, fresh_postgres


def fleet_of(n: int, prefix: str) -> Fleet:
    return {f"{prefix}{i:03d}": (f"SN-{prefix}{i:03d}", 3, False) for i in range(n)}


async def issue_due(home: Home, fleet: Fleet) -> dict[str, Identity]:
    """A certificate for each station that expires in 80 days: past the 90-day renewal
    point, so `renew --due` takes it (one app for all: quicker than one each)."""
    identities = {}
    async with open_app(home.path, passphrase_file(home.directory), DUE_IN_80_DAYS) as app:
        for station_id, (serial, _, _) in fleet.items():
            key = ec.generate_private_key(ec.SECP256R1())
            issued = await app.ca.issue_for_station(
                csr_pem=csr(key, serial), profile_name="charging-station",
                station_id=station_id, actor="test",
            )  # fmt: skip
            chain = home.directory / f"{station_id}.pem"
            chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                       for c in issued.chain))  # fmt: skip
            identities[station_id] = (chain, write_key(home.directory / f"{station_id}.key", key))
    return identities


async def renew_across(station: Station, first: Service, second: Service) -> None:
    """Connect to ``first``; once the new certificate is installed, reconnect to
    ``second`` with it (how the renewal is confirmed)."""
    client, listener = await first.connect(station, station.identity)
    await asyncio.wait_for(station.installing.wait(), 180)
    await client._connection.close()
    listener.cancel()
    assert station.installed is not None
    _, listener = await second.connect(station, station.installed)
    station.tasks.append(listener)


async def wait_for_states(home: Home, expected: set[str], seconds: float) -> list[dict[str, Any]]:
    renewals: list[dict[str, Any]] = []
    for _ in range(int(seconds / 0.2)):
        renewals = await asyncio.to_thread(pkictl_json, home, "renewals", "list", "--history")
        if {r["state"] for r in renewals} == expected:
            return renewals
        await asyncio.sleep(0.2)
    raise AssertionError(f"renewals never all {expected}: {renewals}")


async def assert_once_each(home: Home, fleet: Fleet) -> None:
    """One confirmed renewal per station; per station the certificate it had and the
    one it renewed to, no third; the audit chain intact."""
    renewals = await wait_for_states(home, {"confirmed"}, 120)
    assert sorted(r["station"] for r in renewals) == sorted(fleet)
    certificates = await asyncio.to_thread(pkictl_json, home, "cert", "list")
    per_station: dict[str, int] = {}
    for certificate in certificates:
        if certificate["station"] is not None:
            per_station[certificate["station"]] = per_station.get(certificate["station"], 0) + 1
    assert per_station == dict.fromkeys(fleet, 2)
    async with open_app(home.path) as app:
        assert verify_chain(await app.store.audit_entries(), await app.store.audit_head()) == []


async def test_renew_due_from_the_cli_completes_once_on_two_nodes(
    pg_home: tuple[Path, str],
) -> None:
    directory, _ = pg_home
    fleet = fleet_of(100, "N")
    home = await initialized_home(directory, fleet)
    async with serving(home, fleet) as node_a, serving(home, fleet) as node_b:
        identities = await issue_due(home, fleet)
        stations = [Station(s, fleet[s][0], identities[s], home.directory) for s in fleet]
        nodes = await asyncio.to_thread(pkictl_json, home, "nodes", "list")
        assert len(nodes) == 2
        halves = [(node_a, node_b), (node_b, node_a)]
        connecting = [
            asyncio.create_task(renew_across(station, *halves[n % 2]))
            for n, station in enumerate(stations)
        ]
        for _ in range(600):  # every station connected (half to each node) before renew
            nodes = await asyncio.to_thread(pkictl_json, home, "nodes", "list")
            if sorted(n["stations"] for n in nodes) == [50, 50]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"stations never connected: {nodes}")
        renewed = await asyncio.to_thread(
            pkictl_json, home, "renew", "--due", "--wait", "180"
        )  # a process holding no station: the nodes carry it out
        assert sorted(r["station"] for r in renewed) == sorted(fleet)
        await asyncio.wait_for(asyncio.gather(*connecting), 180)
        await assert_once_each(home, fleet)
        for station in stations:
            for task in station.tasks:
                task.cancel()


async def first_installs(stations: list[Station], count: int) -> None:
    """Return once ``count`` stations have installed their new certificate."""
    waiting = {asyncio.create_task(s.installing.wait()) for s in stations}
    for _ in range(count):
        _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in waiting:
        task.cancel()


async def test_a_node_killed_mid_campaign_loses_and_repeats_nothing(
    pg_home: tuple[Path, str],
) -> None:
    directory, _ = pg_home
    fleet = fleet_of(20, "K")
    home = await initialized_home(directory, fleet)
    process, ports, _ = await pkictl_serve(home)  # node A: a process of its own
    try:
        async with serving(home, fleet) as node_b:
            node_a = Service(home, ports, fleet)
            identities = await issue_due(home, fleet)
            stations = [Station(s, fleet[s][0], identities[s], home.directory) for s in fleet]
            sessions = {}
            for station in stations:
                sessions[station.station_id] = await node_a.connect(station, station.identity)
            await asyncio.to_thread(pkictl_json, home, "renew", "--due")
            # kill -9 once the campaign is under way: some installed, most not yet
            await asyncio.wait_for(first_installs(stations, 3), 120)
            process.kill()
            await process.wait()
            for client, listener in sessions.values():
                listener.cancel()
                await client._connection.close()

            async def carry_on(station: Station) -> None:
                if station.installing.is_set():  # renewed before the kill: show it
                    assert station.installed is not None
                    _, listener = await node_b.connect(station, station.installed)
                    station.tasks.append(listener)
                else:
                    await renew_across(station, node_b, node_b)

            await asyncio.wait_for(asyncio.gather(*(carry_on(s) for s in stations)), 180)
            await assert_once_each(home, fleet)
            # the killed node is declared lost once its lease runs out, whether or not
            # the campaign needed that to finish (stations that moved did not wait)
            for _ in range(120):
                listed = await asyncio.to_thread(pkictl_json, home, "nodes", "list", "--all")
                states = {n["state"] for n in listed if n["pid"] == process.pid}
                if states == {"lost"}:
                    break
                await asyncio.sleep(0.5)
            assert states == {"lost"}
            for station in stations:
                for task in station.tasks:
                    task.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_revocation_through_one_node_is_seen_by_the_other_at_once(
    pg_home: tuple[Path, str],
) -> None:
    directory, _ = pg_home
    fleet = fleet_of(1, "V")
    home = await initialized_home(directory, fleet)
    (station_id,) = fleet
    async with serving(home, fleet) as node_a, serving(home, fleet) as node_b:
        identity = await home.issue(station_id, station=station_id, serial=fleet[station_id][0])
        leaf = x509.load_pem_x509_certificates(identity[0].read_bytes())[0]
        issuer = x509.load_pem_x509_certificate(
            (home.path / "certs" / "cso-station-ca.pem").read_bytes()
        )
        der = (
            ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
            .public_bytes(serialization.Encoding.DER)
        )  # fmt: skip

        def ask(port: int) -> bytes:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/ocsp", data=der,
                headers={"Content-Type": "application/ocsp-request"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                body: bytes = answer.read()
            return body

        async def status_at(service: Service) -> ocsp.OCSPCertStatus:
            body = await asyncio.to_thread(ask, service.ports.http_port)
            return ocsp.load_der_ocsp_response(body).certificate_status

        assert await status_at(node_b) is ocsp.OCSPCertStatus.GOOD  # kept by node b
        station = Station(station_id, fleet[station_id][0], identity, home.directory)
        client, listener = await node_b.connect(station, identity)  # admitted
        listener.cancel()
        await client._connection.close()

        assert node_a.app is not None
        await node_a.app.revocations.revoke(leaf.serial_number, "keyCompromise", "test")

        assert await status_at(node_b) is ocsp.OCSPCertStatus.REVOKED
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await node_b.connect(station, identity)


async def test_a_station_that_connects_to_another_node_is_closed_on_the_first(
    pg_home: tuple[Path, str],
) -> None:
    """Its first connection is still open (half-open in real life): the first node closes
    it within a heartbeat, so that it does not take the station's calls."""
    directory, _ = pg_home
    fleet = fleet_of(1, "M")
    home = await initialized_home(directory, fleet)
    (station_id,) = fleet
    async with serving(home, fleet) as node_a, serving(home, fleet) as node_b:
        identity = await home.issue(station_id, station=station_id, serial=fleet[station_id][0])
        station = Station(station_id, fleet[station_id][0], identity, home.directory)
        first, first_listener = await node_a.connect(station, identity)
        second, second_listener = await node_b.connect(station, identity)
        await asyncio.wait_for(first._connection.wait_closed(), 15)
        assert first._connection.close_code == 1000
        assert second._connection.close_code is None  # the connection that counts
        (node,) = [n for n in await asyncio.to_thread(pkictl_json, home, "nodes", "list")
                   if n["stations"]]  # fmt: skip
        assert node["stations"] == 1
        for listener in (first_listener, second_listener):
            listener.cancel()
        await second._connection.close()


async def test_a_revocation_from_the_cli_closes_the_session_on_the_node_holding_it(
    pg_home: tuple[Path, str],
) -> None:
    """`pkictl cert revoke` (a process holding no station) ends the session on the node
    that holds it with 1008 within seconds; the station cannot come back with it."""
    directory, _ = pg_home
    fleet = fleet_of(1, "R")
    home = await initialized_home(directory, fleet)
    (station_id,) = fleet
    async with serving(home, fleet), serving(home, fleet) as node_b:
        identity = await home.issue(station_id, station=station_id, serial=fleet[station_id][0])
        leaf = x509.load_pem_x509_certificates(identity[0].read_bytes())[0]
        station = Station(station_id, fleet[station_id][0], identity, home.directory)
        client, listener = await node_b.connect(station, identity)
        revoked = await asyncio.to_thread(
            pkictl_json, home, "cert", "revoke", f"{leaf.serial_number:x}",
            "--reason", "keyCompromise",
        )  # fmt: skip
        assert revoked["status"] == "revoked"
        await asyncio.wait_for(client._connection.wait_closed(), 30)
        assert client._connection.close_code == 1008
        listener.cancel()
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await node_b.connect(station, identity)
