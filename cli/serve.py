"""`pkictl serve`: the running CSMS."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from cli.context import Context
from cli.output import note
from csms.app import open_app
from csms.service import Listening, ServeOptions, serve, serve_options


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
    help=f"OCPP websocket port (wss, mutual TLS) [default: {ServeOptions.ocpp_port}]; 0: any.",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help=f"HTTP port: /health, /ocsp, /crl/NAME.crl [default: {ServeOptions.http_port}]; "
    "0: any free port.",
)
@click.option(
    "--plain-port",
    type=click.IntRange(0, 65535),
    help="ws:// port for security profile 1 stations (Basic auth, no TLS) [default: off].",
)
@click.pass_obj
def serve_command(
    ctx: Context,
    host: str | None,
    ocpp_port: int | None,
    http_port: int | None,
    plain_port: int | None,
) -> None:
    """Run the CSMS until SIGTERM or Ctrl-C, then drain and exit 0.

    Stations connect to wss://HOST:OCPP_PORT/ocpp/STATION_ID with subprotocol ocpp2.0.1
    and their client certificate; the TLS version follows the policy (tls.min_version).
    Options not given come from the [serve] table of pkictl.toml, then the defaults.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pkictl logs admissions, refusals, sessions and renewals itself; the libraries'
    # per-message, per-request, per-job and migration chatter only at WARNING (the
    # `ocpp` library logs every message at INFO: a formatted line per message).
    for chatty in ("alembic", "websockets", "apscheduler", "ocpp"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

    def ready(listening: Listening, host: str) -> None:
        plain = f", profile 1 on ws://{host}:{listening.plain_port}" if listening.plain_port else ""
        note(
            f"pkictl serve: OCPP on wss://{host}:{listening.ocpp_port}/ocpp/STATION_ID, "
            f"HTTP on http://{host}:{listening.http_port}/health{plain}"
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_app(ctx.home, ctx.passphrase_file) as app:
            options = serve_options(
                app.config, host=host, ocpp_port=ocpp_port, http_port=http_port,
                plain_port=plain_port,
            )  # fmt: skip
            await serve(app, options, stop, lambda listening: ready(listening, options.host))
        note("pkictl serve: drained, bye")

    asyncio.run(run())
