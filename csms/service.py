"""The running service: `pkictl serve` wired from an open App.

Together with `csms.app` this is the composition root: the endpoints, the handshake
gate, the sessions and the outbox are put together here and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import resource
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.asyncio.server import Server
from websockets.asyncio.server import serve as websockets_serve
from websockets.typing import Subprotocol

from csms.app import App, signing_process
from csms.domain.handshake import Transport
from csms.home import HomeConfig
from csms.node import NodeOptions, start_node, trusted_station_cas
from csms.serve_options import Listening, ServeOptions
from csms.services.audit_head import HEAD_INTERVAL_S, AuditHeadPublisher
from csms.services.gate import ConnectionGate
from csms.services.handshake_failures import HandshakeFailures
from csms.services.health import StorageHealth
from csms.services.sessions import SessionService
from csms.transport.endpoint import (
    COMPRESSION,
    MAX_FRAME_BYTES,
    MAX_QUEUED_FRAMES,
    OCPP_SUBPROTOCOL,
    OPEN_TIMEOUT_S,
    WRITE_LIMIT,
    BackpressuredConnection,
    OcppEndpoint,
    SessionRunner,
)
from csms.transport.http import Handler, HttpServer, Reply
from csms.transport.tls import (
    ReloadingContext,
    ServerCredential,
    bound_tls_read_buffers,
    report_failed_handshakes,
    restore_fitting_key,
    server_context,
)
from pki.keys.file import atomic_write
from pki.records import Authority, AuthorityRole, TrustRole

LOG = logging.getLogger("pkictl.serve")


NR_OPEN_DEFAULT = 1_048_576
"""Linux's default ceiling on a process's open files (fs.nr_open): the limit taken when
the hard limit is unlimited."""


def serve_options(config: HomeConfig, workers: int = 1, **given: str | int | None) -> ServeOptions:
    """Command-line values, else pkictl.toml's [serve] table, else the defaults.
    signing_process "auto" is on when every one of ``workers`` has a core to spare."""
    chosen = {
        key: given[key] if given.get(key) is not None else config.serve[key]
        for key in ("host", "ocpp_port", "http_port", "plain_port", "signing_process")
        if given.get(key) is not None or key in config.serve
    }
    signing = chosen.pop("signing_process", "auto")
    if signing == "auto":
        signing = "on" if len(os.sched_getaffinity(0)) >= 2 * workers else "off"
    return ServeOptions(**chosen, signing_process=signing == "on")  # type: ignore[arg-type]


def _tls_context(
    app: App, authorities: list[Authority], station_cas: list[x509.Certificate]
) -> ReloadingContext:
    """The OCPP endpoint's TLS context; a renewed server certificate written to the
    home (certs/NAME.pem, keys/NAME.key.pem) is served to new connections."""
    credentials = [
        ServerCredential(
            app.home / "certs" / f"{a.name}.pem", app.home / "keys" / f"{a.key_name}.key.pem"
        )
        for a in authorities
        if a.role is AuthorityRole.CSMS_SERVER
    ]
    for credential in credentials:
        restore_fitting_key(credential, app.passphrase)
    station_cas_pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in station_cas)
    return ReloadingContext(
        lambda: server_context(
            min_version=app.policy.tls_min_version,
            credentials=credentials,
            station_cas_pem=station_cas_pem,
            passphrase=app.passphrase,
        ),
        [path for credential in credentials for path in (credential.chain, credential.key)],
    )


async def serve(
    app: App,
    options: ServeOptions,
    stop: asyncio.Event,
    on_ready: Callable[[Listening], None] | None = None,
) -> None:
    """Run the OCPP endpoint and the HTTP endpoint until ``stop`` is set, then drain:
    stop accepting, close every station connection with 1001 (going away), return."""
    _tune_process()
    authorities = await _authorities_on_file(app)
    station_cas = trusted_station_cas(app, authorities, await app.trust.list(TrustRole.STATION_CA))
    nodes = app.nodes
    await nodes.start()
    try:
        async with contextlib.AsyncExitStack() as signing:
            if options.signing_process:
                await signing.enter_async_context(signing_process(app))
            await _serve_as_node(app, options, stop, on_ready, authorities, station_cas)
    finally:
        await nodes.stop()


async def _serve_as_node(  # noqa: PLR0917 -- the pieces serve() prepared
    app: App,
    options: ServeOptions,
    stop: asyncio.Event,
    on_ready: Callable[[Listening], None] | None,
    authorities: list[Authority],
    station_cas: list[x509.Certificate],
) -> None:
    node = await start_node(
        app,
        NodeOptions(options.response_timeout, options.outbox_poll_interval),
        stop,
        station_cas,
    )
    endpoint = OcppEndpoint(node.gate, node.run_session, Transport.TLS)
    async with contextlib.AsyncExitStack() as servers:
        if await servers.enter_async_context(app.outbox_wakeups(node.outbox.wake)):
            LOG.info("calls queued elsewhere wake this node at once (%s)",
                     "LISTEN/NOTIFY" if app.store.engine.dialect.name == "postgresql"
                     else "Unix datagrams")  # fmt: skip
        # entered before the listener: still writing while it closes, then summarising
        failures = await servers.enter_async_context(
            HandshakeFailures(app.store, app.clock, node.gate.refusals).running()
        )
        tls = _tls_context(app, authorities, station_cas)
        report_failed_handshakes(tls.context, failures.record)
        ocpp_server = await servers.enter_async_context(
            websockets_serve(
                endpoint.handle,
                options.host,
                options.ocpp_port,
                ssl=tls.context,
                process_request=endpoint.process_request,
                subprotocols=[Subprotocol(OCPP_SUBPROTOCOL)],
                max_size=MAX_FRAME_BYTES,
                max_queue=MAX_QUEUED_FRAMES,
                write_limit=WRITE_LIMIT,
                create_connection=BackpressuredConnection,
                compression=COMPRESSION,
                server_header=None,
                reuse_port=options.reuse_port or None,
                open_timeout=OPEN_TIMEOUT_S,
            )
        )
        storage = app.storage_health(options.health_interval)
        probing = asyncio.create_task(storage.run(stop))
        servers.push_async_callback(_finish, probing)
        publishing = asyncio.create_task(_audit_head_publisher(app).run(stop))
        servers.push_async_callback(_finish, publishing)
        http_server = await _start_http(
            servers,
            _http_handler(app, lambda: _health(node.sessions, node.gate, storage)),
            options,
        )
        plain_port = await _start_plain(servers, node.gate, node.run_session, options)
        servers.enter_context(collector_for_serving())
        if on_ready is not None:
            on_ready(Listening(_port(ocpp_server), _port(http_server), plain_port))
        await stop.wait()
        await node.wind_down()
        LOG.info("draining: closing %d station connections", len(node.sessions.online()))


async def _start_plain(
    servers: contextlib.AsyncExitStack,
    gate: ConnectionGate,
    run_session: SessionRunner,
    options: ServeOptions,
) -> int | None:
    """ws:// for security profile 1 stations, if configured: its port."""
    if options.plain_port is None:
        return None
    plain = OcppEndpoint(gate, run_session, Transport.PLAIN)
    server = await servers.enter_async_context(
        websockets_serve(
            plain.handle,
            options.host,
            options.plain_port,
            process_request=plain.process_request,
            subprotocols=[Subprotocol(OCPP_SUBPROTOCOL)],
            max_size=MAX_FRAME_BYTES,
            max_queue=MAX_QUEUED_FRAMES,
            write_limit=WRITE_LIMIT,
            create_connection=BackpressuredConnection,
            compression=COMPRESSION,
            server_header=None,
            reuse_port=options.reuse_port or None,
            open_timeout=OPEN_TIMEOUT_S,
        )
    )
    return _port(server)


GC_YOUNGEST_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


@contextlib.contextmanager
def collector_for_serving() -> Iterator[None]:
    """The garbage collector set for a long-running server, while serving. Everything
    made at start -- modules, the compiled payload checks, the app -- lives as long as
    the process: frozen, the collector stops walking it. And a full collection walks
    every object of every connection; collecting the youngest generation every 10,000
    allocations, not every 700, makes full ones fourteen times rarer. In a
    2,000-station renewal campaign the collector's time went from 1.9 s to 0.6 s
    (about 4 % of the node's CPU). Restored after, for an embedding process (tests)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _tune_process() -> None:
    """Process-wide settings for serving many stations: asyncio's TLS read buffers
    bounded (OCPP payloads are validated on the loop: `start_node`), and as many open
    files as the process may have."""
    bound_tls_read_buffers()
    LOG.info("open files: up to %d (a station connection holds one)", raise_open_files_limit())


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one and return it. Every station
    connection holds a file descriptor, and the usual soft limit (1,024; systemd's
    default too) would stop a node at about a thousand stations, refusing the rest
    with EMFILE while the hard limit allows far more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            LOG.warning("open files stay at %d: %s", soft, exc)
            return soft
        return target
    return soft


async def _authorities_on_file(app: App) -> list[Authority]:
    """The authorities, once their certificate files are what the database holds."""
    if written := await app.sync_authority_files():
        LOG.warning("certificate files brought in line with the database: %s", ", ".join(written))
    return await app.store.list_authorities()


def _port(server: Server | asyncio.Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


def _health(
    sessions: SessionService, gate: ConnectionGate, storage: StorageHealth
) -> dict[str, object]:
    """`ok`, or `degraded` with the reason while the database cannot be written or read
    (then HTTP 503)."""
    health: dict[str, object] = {"status": "ok" if storage.ok else "degraded"}
    if not storage.ok:
        health["reason"] = storage.reason
    return health | {
        "stations_online": len(sessions.online()),
        "refusals": dict(sorted(gate.refusals.items())),
    }


def _audit_head_publisher(app: App) -> AuditHeadPublisher:
    """The audit head in the log, and in [audit] head_file if set (ADR 3)."""
    table = app.config.audit
    write = None
    if "head_file" in table:
        path = Path(str(table["head_file"])).expanduser()
        target = path if path.is_absolute() else app.home / path

        def write(text: str) -> None:
            atomic_write(target, text.encode(), 0o644)

    interval = float(table.get("head_interval_s", HEAD_INTERVAL_S))
    return AuditHeadPublisher(app.store.audit_head, write, interval)


async def _finish(task: asyncio.Task[None]) -> None:
    """Await a background task that ends with ``stop`` (cancelled if it has not)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _start_http(
    servers: contextlib.AsyncExitStack, handler: Handler, options: ServeOptions
) -> asyncio.Server:
    """The HTTP port, closed (its connections too) when ``servers`` unwinds."""
    http = HttpServer(handler)
    server = await http.start(options.host, options.http_port, reuse_port=options.reuse_port)
    # unwound last-in first: stop listening, end the connections, then wait
    servers.push_async_callback(server.wait_closed)
    servers.push_async_callback(http.close)
    servers.callback(server.close)
    return server


OCSP_RESPONSE = "application/ocsp-response"


def _http_handler(app: App, health: Callable[[], dict[str, object]]) -> Handler:
    """The HTTP port: /health, OCSP for our CAs at /ocsp (POST, and GET with the
    request base64 in the path, RFC 6960 A.1), each CA's latest CRL at /crl/NAME.crl."""

    async def handle(method: str, target: str, body: bytes) -> Reply:
        path = urlsplit(target).path
        if path == "/health" and method in ("GET", "HEAD"):
            state = health()
            status = HTTPStatus.OK if state["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
            return Reply(status, json.dumps(state).encode() + b"\n", "application/json")
        if path.rstrip("/") == "/ocsp" and method == "POST":
            return Reply(HTTPStatus.OK, await app.ocsp.answer(body), OCSP_RESPONSE)
        if path.startswith("/ocsp/") and method == "GET":
            try:
                request = base64.b64decode(unquote(path.removeprefix("/ocsp/")), validate=True)
            except ValueError:
                return Reply(HTTPStatus.BAD_REQUEST, b"not a base64 OCSP request\n")
            return Reply(HTTPStatus.OK, await app.ocsp.answer(request), OCSP_RESPONSE)
        if path.startswith("/crl/") and path.endswith(".crl") and method == "GET":
            der = await app.store.latest_crl(path.removeprefix("/crl/").removesuffix(".crl"))
            if der is not None:
                return Reply(HTTPStatus.OK, der, "application/pkix-crl")
        return Reply(HTTPStatus.NOT_FOUND, b"not found\n")

    return handle
