"""`pkictl serve`: the running CSMS."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace

import click

from cli.context import Context
from cli.errors import ExitCode
from cli.logs import configure_logging
from cli.output import note
from cli.workers import Supervisor, child_command, ready_line, reserve_ports
from csms.serve_options import Listening, ServeOptions


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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Serving processes on the same ports (SO_REUSEPORT), one node each: one per "
    "core to use them all.",
)
@click.option(
    "--signing-process",
    type=click.Choice(["auto", "on", "off"]),
    help="Check and sign station CSRs in a child process on another core [default: "
    "the [serve] table's signing_process, else auto: on when each worker has a core to "
    "spare].",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="(a worker of --workers)")
@click.pass_obj
def serve_command(
    ctx: Context,
    host: str | None,
    ocpp_port: int | None,
    http_port: int | None,
    plain_port: int | None,
    workers: int,
    signing_process: str | None,
    reuse_port: bool,
) -> None:
    """Run the CSMS until SIGTERM or Ctrl-C, then drain and exit 0.

    Stations connect to wss://HOST:OCPP_PORT/ocpp/STATION_ID with subprotocol ocpp2.0.1
    and their client certificate; the TLS version follows the policy (tls.min_version).
    Options not given come from the [serve] table of pkictl.toml, then the defaults.
    With --workers N, N processes share the ports and the database (`pkictl nodes list`).
    """
    configure_logging()  # one escaped line per record, whatever stations send
    given = {"host": host, "ocpp_port": ocpp_port, "http_port": http_port,
             "plain_port": plain_port, "signing_process": signing_process}  # fmt: skip

    # the OCPP stack, loaded by this command only (every other one starts faster)
    from csms.app import open_app  # noqa: PLC0415
    from csms.service import serve, serve_options  # noqa: PLC0415
    from csms.transport.tls import TlsConfigError  # noqa: PLC0415

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_app(ctx.home, ctx.passphrase_file, database=ctx.database) as app:
            # (opening the app migrated the database: workers find it up to date)
            options = replace(
                serve_options(app.config, 1 if reuse_port else workers, **given),
                reuse_port=reuse_port,
            )
            if workers == 1:
                await serve(app, options, stop, lambda up: note(ready_line(up, options.host)))
        if workers > 1:
            code = await _supervise(ctx, options, workers, stop)
            note("pkictl serve: workers drained, bye")
            return code
        note("pkictl serve: drained, bye")
        return 0

    try:
        code = asyncio.run(run())
    except TlsConfigError as error:  # e.g. conformance mode without its OpenSSL seam
        click.echo(f"error: {error}", err=True)
        raise click.exceptions.Exit(int(ExitCode.CONFIG)) from None
    if code:
        raise click.exceptions.Exit(code)


async def _supervise(ctx: Context, options: ServeOptions, workers: int, stop: asyncio.Event) -> int:
    options, reserved = reserve_ports(options)
    base = ["--home", str(ctx.home)]
    if ctx.passphrase_file is not None:
        base += ["--passphrase-file", str(ctx.passphrase_file)]
    if ctx.database is not None:
        base += ["--database-url", ctx.database]
    listening = Listening(options.ocpp_port, options.http_port, options.plain_port)
    supervisor = Supervisor(
        child_command(base, options), workers,
        lambda: note(ready_line(listening, options.host, workers)),
    )  # fmt: skip
    try:
        return await supervisor.run(stop)
    finally:
        for held in reserved:
            held.close()
