"""Renewals that must not stall (issue 22), against a real `pkictl serve` on 127.0.0.1
and stations built on the `ocpp` library's ChargePoint over mutual TLS: a station that
refuses the TriggerMessage (Rejected, or a CALLERROR NotImplemented) fails its renewal
and frees its place under max_in_flight for the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from integration_support import initialized_home
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action
from simulated_station import Renewing, Service, Station, pkictl_json, serving

STATIONS = {f"T{n}": (f"SN-T{n}", 3, False) for n in range(1, 5)}
WAIT_S = 60.0


class Refusing(Renewing):
    """Answers TriggerMessage Rejected (with a reason), as a busy station may."""

    @on(Action.trigger_message)
    async def on_trigger_message(self, **_: Any) -> Any:
        return call_result.TriggerMessage(status="Rejected", status_info={"reason_code": "Busy"})


class NotImplementing(Renewing):
    """Answers TriggerMessage with CALLERROR NotImplemented, as the SAP simulator does."""

    @on(Action.trigger_message)
    async def on_trigger_message(self, **_: Any) -> Any:
        raise OcppNotImplemented(description="TriggerMessage is not implemented")


async def connect(service: Service, station: Station, kind: type[Renewing]) -> Any:
    connection = await websockets.connect(
        f"wss://127.0.0.1:{service.ports.ocpp_port}/ocpp/{station.station_id}",
        ssl=service.home.client_context(station.identity),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=10,
    )
    client = kind(station.station_id, connection, station)
    return asyncio.create_task(client.start())


async def until(check: Any, what: str) -> Any:
    """``check()`` (in a thread: it runs the CLI) until it returns something true."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {what}")
        await asyncio.sleep(0.1)


def last_renewal(service: Service, station_id: str) -> dict[str, Any]:
    rows = pkictl_json(service.home, "renewals", "list", "--station", station_id)
    return rows[-1] if rows else {}


@pytest.fixture
async def one_at_a_time(tmp_path: Path) -> AsyncIterator[Service]:
    home = await initialized_home(tmp_path, STATIONS)
    config = home.path / "pkictl.toml"
    text = config.read_text()
    assert "# max_in_flight = 100" in text
    config.write_text(text.replace("# max_in_flight = 100", "max_in_flight = 1"))
    async with serving(home, STATIONS) as running:
        yield running


async def test_a_refused_trigger_fails_its_renewal_and_frees_the_slot(
    one_at_a_time: Service,
) -> None:
    service = one_at_a_time
    stations = {s: await service.station(s) for s in STATIONS}
    kinds = {"T1": Refusing, "T2": NotImplementing, "T3": Renewing, "T4": Renewing}
    listeners = [await connect(service, stations[s], kinds[s]) for s in STATIONS]
    try:
        asked = await asyncio.to_thread(pkictl_json, service.home, "renew", "T1", "T2", "T3", "T4")
        assert [r["station"] for r in asked] == ["T1", "T2", "T3", "T4"]  # triggered in order

        # T1 refuses, T2 cannot be triggered: each fails with the reason, the next goes
        refused = await until(
            lambda: (r := last_renewal(service, "T1"))["state"] == "failed" and r, "T1 failed"
        )
        assert "Rejected" in refused["reason"]
        assert "Busy" in refused["reason"]
        untriggerable = await until(
            lambda: (r := last_renewal(service, "T2"))["state"] == "failed" and r, "T2 failed"
        )
        assert "NotImplemented" in untriggerable["reason"]

        # T3, then T4, renew: each reconnects with its new certificate, which confirms it
        for station_id in ("T3", "T4"):
            station = stations[station_id]
            await asyncio.wait_for(station.installing.wait(), WAIT_S)
            assert station.installed is not None
            station.identity = station.installed
            index = list(STATIONS).index(station_id)
            listeners[index].cancel()
            listeners[index] = await connect(service, station, Renewing)
            await until(
                lambda s=station_id: last_renewal(service, s)["state"] == "confirmed",  # type: ignore[misc]
                f"{station_id} confirmed",
            )

        alerts = await asyncio.to_thread(pkictl_json, service.home, "alerts", "list")
        codes = {(a["station"], a["code"]) for a in alerts}
        assert ("T1", "renewal-failed") in codes
        assert ("T2", "renewal-untriggerable") in codes
        (told,) = [a for a in alerts if a["code"] == "renewal-untriggerable"]
        assert "may still renew on its own" in told["message"]
    finally:
        for listener in listeners:
            listener.cancel()
