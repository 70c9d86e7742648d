"""The CSO root rollover end to end (issue #4, OCPP M05): 20 simulated stations on a real
`pkictl serve`, driven with the real CLI on the same database. One station is offline
during the campaign, and the switch waits for it; one refuses the first install and is
retried; three check AdditionalRootCertificateCheck and get the link certificate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
from cryptography import x509
from integration_support import Home, initialized_home, passphrase_file
from simulated_station import Fleet, Service, pkictl, pkictl_json, serving

from csms.daemon import AUTHORITIES_CHECK_S

FLEET: Fleet = {f"RO{n:02d}": (f"SN-RO{n:02d}", 3, False) for n in range(1, 21)}
CHECKING = {"RO01", "RO02", "RO03"}  # AdditionalRootCertificateCheck = true
UNKNOWING = {"RO04"}  # does not know the variable: it does not check
REFUSING = "RO19"  # rejects the first InstallCertificate
OFFLINE = "RO20"  # not connected while the campaign runs


async def campaign_until(home: Home, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(pkictl_json, home, "campaign", "status")
        if done(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"campaign never got there: {status}")


def rollover(home: Home, *options: str) -> Any:
    """`pkictl ca rollover cso-root OPTIONS` with the CA key passphrase (exit code 0)."""
    key = ("--passphrase-file", str(passphrase_file(home.directory)))
    return pkictl_json(home, *key, "ca", "rollover", "cso-root", *options)


def by_station(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["station"]: s for s in status["stations"]}


async def connects_under(service: Service, station_id: str, identity: Any) -> bool:
    """A real mTLS handshake trusting only the CSO root in certs/cso-root.pem."""
    try:
        connection = await websockets.connect(
            f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/{station_id}",
            ssl=service.home.client_context(identity),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            open_timeout=5,
        )  # fmt: skip
    except OSError:  # the certificate did not verify
        return False
    await connection.close()
    return True


async def test_twenty_stations_get_the_new_root_and_the_switch_waits_for_the_last(
    tmp_path: Path,
) -> None:
    home = await initialized_home(tmp_path, FLEET)
    old_root_pem = home.root_pem.read_text()
    old_root = x509.load_pem_x509_certificate(old_root_pem.encode())
    async with serving(home, FLEET) as service:
        stations = {s: await service.station(s) for s in FLEET}
        for station_id, station in stations.items():
            station.roots = [("CSMSRootCertificate", old_root_pem)]
            if station_id not in UNKNOWING:
                station.additional_root_check = "true" if station_id in CHECKING else "false"
        stations[REFUSING].refuse_roots = 1
        online = [station for station_id, station in stations.items() if station_id != OFFLINE]
        listeners = [(await service.connect(station, station.identity))[1] for station in online]

        started = await asyncio.to_thread(rollover, home)
        assert (started["enrolled"], started["state"], started["generation"]) == (20, "open", 2)
        assert started["link_issuer"] == old_root.subject.rfc4514_string()

        status = by_station(await campaign_until(home, lambda s: s["verified"] == 18))
        assert status[REFUSING]["state"] == "failed"
        assert "InstallCertificate: Rejected" in status[REFUSING]["blocker"]
        assert status[OFFLINE]["state"] == "pending"
        assert "never connected" in status[OFFLINE]["blocker"]
        refused = await asyncio.to_thread(pkictl, home, "ca", "rollover", "cso-root", "--switch")
        assert refused.exit_code == 5, refused.output
        assert "2 registered station(s)" in refused.output
        assert REFUSING in refused.output
        assert OFFLINE in refused.output
        short = await asyncio.to_thread(pkictl, home, "campaign", "status", "--wait", "1")
        assert short.exit_code == 9

        retried = await asyncio.to_thread(rollover, home, "--retry")
        assert retried == {"restarted": 2}  # the failed one, and the offline one (pending)
        offline = stations[OFFLINE]
        listeners.append((await service.connect(offline, offline.identity))[1])
        ready = await asyncio.to_thread(pkictl_json, home, "campaign", "status", "--wait", "30")
        assert (ready["verified"], ready["ready_to_switch"]) == (20, True)

        # what each station installed: the link for those that check, else the root
        for station_id, station in stations.items():
            (_, installed_pem) = station.roots[-1]
            installed = x509.load_pem_x509_certificate(installed_pem.encode())
            assert installed.serial_number == int(
                started["link_serial" if station_id in CHECKING else "serial"], 16
            ), station_id
            assert by_station(ready)[station_id]["method"] == (
                "link" if station_id in CHECKING else "root"
            )

        switched = await asyncio.to_thread(rollover, home, "--switch")
        switched_at = time.monotonic()
        assert switched["state"] == "switched"
        again = set(switched["certified_again"])
        assert {"cso-station-ca", "cso-root-ocsp"} <= again
        assert len({name for name in again if name.startswith("csms-server-")}) == 2
        new_root = x509.load_pem_x509_certificate(home.root_pem.read_bytes())
        assert format(new_root.serial_number, "x") == started["serial"]
        # those holding the link (valid no longer than the old root) get the new root too
        for station_id in CHECKING:
            deadline = time.monotonic() + 10
            while stations[station_id].roots[-1][1] != home.root_pem.read_text():
                assert time.monotonic() < deadline, f"{station_id} never got the new root"
                await asyncio.sleep(0.1)

        # stations keep their certificates, and reach the CSMS under the new root alone
        # once the service reloads its server certificate (within seconds)
        deadline = time.monotonic() + 15
        while not await connects_under(service, "RO05", stations["RO05"].identity):
            assert time.monotonic() < deadline, "server certificate not reloaded"
            await asyncio.sleep(0.5)

        # certificates issued from now on chain to the new root
        await asyncio.sleep(max(0.0, switched_at + AUTHORITIES_CHECK_S + 0.5 - time.monotonic()))
        renewing = stations["RO06"]
        await asyncio.to_thread(pkictl_json, home, "renew", "RO06")
        await asyncio.wait_for(renewing.installing.wait(), 30)
        assert renewing.installed is not None
        leaf, station_ca = x509.load_pem_x509_certificates(renewing.installed[0].read_bytes())
        station_ca.verify_directly_issued_by(new_root)
        leaf.verify_directly_issued_by(station_ca)
        for listener in listeners:
            listener.cancel()
    entries = await asyncio.to_thread(pkictl_json, home, "audit", "list", "--limit", "500")
    audit = [e for e in entries if e["action"] == "ca.rollover.switched"]
    assert audit[-1]["detail"]["left_behind"] == []
    assert (await asyncio.to_thread(pkictl, home, "audit", "verify")).exit_code == 0
