"""`pkictl serve`: the running CSMS."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from cli.context import Context
from cli.output import note
from csms.app import Listening, ServeOptions, open_app, serve


@click.command("serve")
@click.option(
    "--host",
    default=ServeOptions.host,
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--ocpp-port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="OCPP websocket port (wss, mutual TLS); 0 picks a free port.",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="HTTP port (/health); 0 picks a free port.",
)
@click.pass_obj
def serve_command(ctx: Context, host: str, ocpp_port: int, http_port: int) -> None:
    """Run the CSMS until SIGTERM or Ctrl-C, then drain and exit 0.

    Stations connect to wss://HOST:OCPP_PORT/ocpp/STATION_ID with subprotocol ocpp2.0.1
    and their client certificate; the TLS version follows the policy (tls.min_version).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def ready(listening: Listening) -> None:
        note(
            f"pkictl serve: OCPP on wss://{host}:{listening.ocpp_port}/ocpp/STATION_ID, "
            f"HTTP on http://{host}:{listening.http_port}/health"
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_app(ctx.home, ctx.passphrase_file) as app:
            await serve(app, ServeOptions(host, ocpp_port, http_port), stop, ready)
        note("pkictl serve: drained, bye")

    asyncio.run(run())
