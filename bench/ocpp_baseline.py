"""The baseline of the message-mix benchmark: a minimal OCPP 2.0.1 server on the plain
`ocpp` library with its defaults (schema validation on), answering each action of the
mix with a constant response and storing nothing. Same TLS server certificate as
pkictl; no client-certificate checks, no database.

Run by bench/fleet.py as a subprocess; prints its port on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection, serve


def now() -> str:
    return datetime.now(UTC).isoformat()


class Minimal(ChargePoint):  # type: ignore[misc]
    @on(Action.boot_notification)
    async def boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=now(), interval=300, status="Accepted")

    @on(Action.heartbeat)
    async def heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    async def status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.meter_values)
    async def meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.transaction_event)
    async def transaction_event(self, **_: Any) -> Any:
        return call_result.TransactionEvent()


async def handler(connection: ServerConnection) -> None:
    station_id = connection.request.path.rsplit("/", 1)[-1] if connection.request else "?"
    with_suppressed = Minimal(station_id, connection)
    try:
        await with_suppressed.start()
    except Exception:  # noqa: BLE001 -- the connection closed
        return


async def main(args: argparse.Namespace) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key, password=args.passphrase)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=context,
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"baseline listening on {port}", file=sys.stderr, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ocpp_baseline")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--passphrase", required=True)
    asyncio.run(main(parser.parse_args()))
