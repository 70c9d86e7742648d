"""The one composition root: wires policy, store, keys, clock and services together.

Both the CLI and `pkictl serve` obtain everything they use from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from csms.db.outbox import SqlOutboxStore
from csms.db.reports import SqlReportStore
from csms.db.sessions import SqlSessionStore
from csms.db.tokens import SqlTokenStore
from csms.db.transactions import SqlTransactionStore
from csms.domain.handshake import Transport
from csms.home import (
    CONFIG_FILE,
    PASSPHRASE_FILE,
    POLICY_FILE,
    HomeConfig,
    database_url,
    load_config,
    render_config,
)
from csms.protocol.session import SessionServices, StationSession
from csms.services.gate import Admission, ConnectionGate
from csms.services.outbox import POLL_INTERVAL_S, RESPONSE_TIMEOUT_S, Outbox
from csms.services.reports import ReportService
from csms.services.security_events import SecurityEvents
from csms.services.sessions import SessionService
from csms.services.stations import StationService
from csms.services.tokens import TokenService
from csms.services.transactions import TransactionService
from csms.services.trust import TrustService
from csms.transport.endpoint import (
    MAX_FRAME_BYTES,
    OCPP_SUBPROTOCOL,
    OcppEndpoint,
    remote_of,
)
from csms.transport.tls import (
    ReloadingContext,
    ServerCredential,
    bound_tls_read_buffers,
    server_context,
)
from pki.audit import AuditEvent
from pki.authority import CertificateAuthority
from pki.clock import Clock
from pki.errors import ConflictError, KeyAccessError
from pki.keys.file import FileKeyStore, atomic_write
from pki.policy import Policy, load_policy, parse_policy
from pki.records import Authority, AuthorityRole, TrustAnchor, TrustRole
from pki.store.sql import SqlStore, open_store

LOG = logging.getLogger("pkictl.serve")
POLICY_DIGEST_SETTING = "policy.digest"
STATION_PROFILE = "charging-station"
ALLOWED_BEFORE_INIT = {"README.md", ".gitignore"}


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def default_policy_text() -> str:
    return resources.files("pkictl_policies").joinpath("default.toml").read_text("utf-8")


def actor() -> str:
    """Who is acting, for the audit log: the OS user, or PKICTL_ACTOR when set."""
    return os.environ.get("PKICTL_ACTOR") or f"cli:{getpass.getuser()}"


class PassphraseSource:
    """Finds the CA key passphrase only when a key is first needed, so read-only commands
    work without it: PKICTL_PASSPHRASE, then --passphrase-file, then HOME/secrets/passphrase."""

    def __init__(self, home: Path, passphrase_file: Path | None) -> None:
        self._home = home
        self._file = passphrase_file

    def available(self) -> bool:
        return bool(os.environ.get("PKICTL_PASSPHRASE")) or self._candidate() is not None

    def _candidate(self) -> Path | None:
        if self._file is not None:
            return self._file
        default = self._home / PASSPHRASE_FILE
        return default if default.exists() else None

    def __call__(self) -> bytes:
        env = os.environ.get("PKICTL_PASSPHRASE")
        if env:
            return env.encode()
        path = self._candidate()
        if path is None:
            raise KeyAccessError(
                "no CA key passphrase: set PKICTL_PASSPHRASE or pass --passphrase-file"
            )
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KeyAccessError(f"passphrase file {path}: {exc.strerror}") from None
        if not value:
            raise KeyAccessError(f"passphrase file {path} is empty")
        return value.encode()


@dataclass
class App:
    home: Path
    config: HomeConfig
    policy: Policy
    store: SqlStore
    clock: Clock
    ca: CertificateAuthority
    stations: StationService
    passphrase: Callable[[], bytes]
    session_store: SqlSessionStore
    tokens: TokenService
    transactions: TransactionService
    reports: ReportService
    outbox: Outbox
    trust: TrustService

    def write_home_file(self, relative: str, data: bytes) -> Path:
        path = self.home / relative
        atomic_write(path, data)
        return path

    async def publish_crl(self, name: str, who: str) -> tuple[x509.CertificateRevocationList, Path]:
        """Issue the next CRL of CA ``name`` and save it as HOME/crl/NAME.crl."""
        revocation_list = await self.ca.crl(name, who)
        path = self.write_home_file(f"crl/{name}.crl", revocation_list.public_bytes(Encoding.DER))
        return revocation_list, path


def _build(
    *,
    home: Path,
    config: HomeConfig,
    policy: Policy,
    store: SqlStore,
    clock: Clock,
    passphrase: Callable[[], bytes],
) -> App:
    keys = FileKeyStore(home / "keys", passphrase)
    ca = CertificateAuthority(
        store=store, keys=keys, policy=policy, clock=clock, identity=config.identity()
    )
    return App(
        home, config, policy, store, clock, ca, StationService(store, clock), passphrase,
        SqlSessionStore(store.engine),
        TokenService(SqlTokenStore(store.engine), store, clock),
        TransactionService(SqlTransactionStore(store.engine), clock),
        ReportService(SqlReportStore(store.engine), clock),
        Outbox(SqlOutboxStore(store.engine), clock),
        TrustService(store, clock),
    )  # fmt: skip


@asynccontextmanager
async def open_app(
    home: Path, passphrase_file: Path | None = None, clock: Clock | None = None
) -> AsyncIterator[App]:
    """Open an initialized home. A policy file edited since the last run is recorded in
    the audit log before anything else happens."""
    config = load_config(home)
    policy = load_policy(home / POLICY_FILE)
    store = await open_store(database_url(home, config))
    clock = clock or SystemClock()
    try:
        previous = await store.get_setting(POLICY_DIGEST_SETTING)
        if previous != policy.digest:
            await store.set_setting(
                POLICY_DIGEST_SETTING,
                policy.digest,
                AuditEvent(
                    "policy.changed",
                    actor(),
                    "policy",
                    "ok",
                    {"from": previous, "to": policy.digest, "file": policy.source},
                ),
                clock.now(),
            )
        yield _build(
            home=home,
            config=config,
            policy=policy,
            store=store,
            clock=clock,
            passphrase=PassphraseSource(home, passphrase_file),
        )
    finally:
        await store.close()


@dataclass(frozen=True)
class InitResult:
    authorities: list[dict[str, str]]
    generated_passphrase: Path | None


async def initialize_home(
    home: Path,
    config: HomeConfig,
    *,
    policy_text: str,
    policy_source: str,
    passphrase_file: Path | None = None,
    clock: Clock | None = None,
) -> InitResult:
    """Create the CA hierarchy in a fresh home, all or nothing.

    Everything is built in a staging directory inside the home and moved into place at
    the end; `pkictl.toml` is written last. A failure leaves the home as it was.
    """
    policy = parse_policy(policy_text, source=policy_source)
    created_home = _check_home_is_fresh(home)
    clock = clock or SystemClock()
    passphrase_source = PassphraseSource(home, passphrase_file)
    generated: bytes | None = None
    if not passphrase_source.available():
        generated = secrets.token_urlsafe(32).encode()
    staging = home / f".init-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    try:
        if generated is not None:
            atomic_write(staging / PASSPHRASE_FILE, generated + b"\n", 0o600)
            (staging / PASSPHRASE_FILE).parent.chmod(0o700)
        url = database_url(staging, config)
        store = await open_store(url)
        try:
            app = _build(
                home=staging,
                config=config,
                policy=policy,
                store=store,
                clock=clock,
                passphrase=(lambda: generated) if generated is not None else passphrase_source,
            )
            who = actor()
            authorities = await app.ca.initialize(config.hierarchies, who)
            await store.set_setting(
                POLICY_DIGEST_SETTING,
                policy.digest,
                AuditEvent(
                    "policy.adopted",
                    who,
                    "policy",
                    "ok",
                    {"digest": policy.digest, "file": policy_source},
                ),
                clock.now(),
            )
            for authority in authorities:
                app.write_home_file(
                    f"certs/{authority.name}.pem",
                    authority.certificate().public_bytes(Encoding.PEM),
                )
                if authority.role in (AuthorityRole.ROOT, AuthorityRole.INTERMEDIATE):
                    await app.publish_crl(authority.name, who)
        finally:
            await store.close()
        atomic_write(staging / POLICY_FILE, policy_text.encode())
        for entry in staging.iterdir():
            entry.rename(home / entry.name)
        atomic_write(home / CONFIG_FILE, render_config(config).encode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_home:
            _remove_if_empty(home)
        raise
    staging.rmdir()
    summary = [
        {"name": a.name, "role": a.role.value, "subject": a.certificate().subject.rfc4514_string()}
        for a in authorities
    ]
    return InitResult(summary, home / PASSPHRASE_FILE if generated is not None else None)


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: keep whatever else is there
        directory.rmdir()


def _check_home_is_fresh(home: Path) -> bool:
    """Refuse (a conflict, exit code 5) a home that exists already or holds anything
    but what init allows; True when the home directory was created here."""
    if (home / CONFIG_FILE).exists():
        raise ConflictError(
            f"{home} is already an initialized pkictl home; refusing to overwrite it"
        )
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
        return True
    for entry in home.iterdir():
        if entry.name.startswith(".init-"):
            pid = entry.name.removeprefix(".init-")
            if pid.isdigit() and _process_alive(int(pid)):
                raise ConflictError(f"another `pkictl init` (pid {pid}) is initializing {home}")
            shutil.rmtree(entry, ignore_errors=True)  # an interrupted earlier init
        elif entry.name not in ALLOWED_BEFORE_INIT:
            raise ConflictError(
                f"{home} holds {entry.name} but no {CONFIG_FILE}: refusing to initialize over "
                "leftovers of another CA; move them away first"
            )
    return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the running service ---------------------------------------------------------------


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"  # noqa: S104 -- a CSMS listens for stations on every interface
    ocpp_port: int = 8443
    http_port: int = 8080
    plain_port: int | None = None
    """ws:// for security profile 1 stations (Basic auth, no TLS); off when None."""
    response_timeout: float = RESPONSE_TIMEOUT_S
    """Seconds a station has to answer a call from the outbox."""
    outbox_poll_interval: float = POLL_INTERVAL_S
    """How often a connected station's outbox is checked for calls queued elsewhere."""


@dataclass(frozen=True)
class Listening:
    ocpp_port: int
    http_port: int
    plain_port: int | None = None


def serve_options(config: HomeConfig, **given: str | int | None) -> ServeOptions:
    """Command-line values, else pkictl.toml's [serve] table, else the defaults."""
    chosen = {
        key: given[key] if given.get(key) is not None else config.serve[key]
        for key in ("host", "ocpp_port", "http_port", "plain_port")
        if given.get(key) is not None or key in config.serve
    }
    return ServeOptions(**chosen)  # type: ignore[arg-type]


def _station_cas(
    app: App, authorities: list[Authority], added: list[TrustAnchor]
) -> list[x509.Certificate]:
    """Trust anchors for station client certificates: the CA issuing the
    charging-station profile, and the station CAs the operator added (`trust add`)."""
    issuer = app.policy.profile(STATION_PROFILE).issuer
    ours = [a.certificate() for a in authorities if a.name == issuer]
    return [*ours, *(t.certificate() for t in added)]


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
    bound_tls_read_buffers()
    authorities = await app.store.list_authorities()
    station_cas = _station_cas(app, authorities, await app.trust.list(TrustRole.STATION_CA))
    sessions = SessionService(app.session_store, app.clock)
    await sessions.start()
    outbox = replace(
        app.outbox,
        response_timeout=options.response_timeout,
        poll_interval=options.outbox_poll_interval,
    )
    await outbox.start()
    services = SessionServices(
        sessions, SecurityEvents(app.store, app.clock), app.tokens, app.transactions, app.reports
    )
    gate = ConnectionGate(
        store=app.store,
        clock=app.clock,
        organization=app.config.organization,
        observed_renewal=app.policy.profile(STATION_PROFILE).renewal,
        station_cas=station_cas,
    )

    live: dict[str, ServerConnection] = {}

    async def run_session(
        station_id: str, connection: ServerConnection, admission: Admission
    ) -> None:
        previous = live.get(station_id)
        live[station_id] = connection
        if previous is not None:  # a rebooted station is back before its old socket died
            LOG.info("station %s reconnected: closing its previous connection", station_id)
            await previous.close(1000, "replaced by a new connection")
        decision = admission.decision
        assert decision.security_profile is not None
        certificate = admission.certificate
        await sessions.connected(
            station_id,
            security_profile=decision.security_profile,
            boot_pending=decision.boot_pending,
            remote=remote_of(connection),
            certificate_serial=certificate.serial_hex if certificate else None,
            certificate_not_after=certificate.not_after if certificate else None,
        )
        session = StationSession(station_id, connection, services)
        delivery = asyncio.create_task(outbox.deliver(station_id, session.send))
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)
            if live.get(station_id) is connection:
                del live[station_id]
                await sessions.disconnected(station_id)

    endpoint = OcppEndpoint(gate, run_session, Transport.TLS)
    async with contextlib.AsyncExitStack() as servers:
        ocpp_server = await servers.enter_async_context(
            websockets_serve(
                endpoint.handle,
                options.host,
                options.ocpp_port,
                ssl=_tls_context(app, authorities, station_cas).context,
                process_request=endpoint.process_request,
                subprotocols=[Subprotocol(OCPP_SUBPROTOCOL)],
                max_size=MAX_FRAME_BYTES,
                server_header=None,
            )
        )
        http_server = await servers.enter_async_context(
            websockets_serve(
                _never_upgraded,
                options.host,
                options.http_port,
                process_request=_http_request,
                server_header=None,
            )
        )
        plain_port = None
        if options.plain_port is not None:
            plain = OcppEndpoint(gate, run_session, Transport.PLAIN)
            plain_server = await servers.enter_async_context(
                websockets_serve(
                    plain.handle,
                    options.host,
                    options.plain_port,
                    process_request=plain.process_request,
                    subprotocols=[Subprotocol(OCPP_SUBPROTOCOL)],
                    max_size=MAX_FRAME_BYTES,
                    server_header=None,
                )
            )
            plain_port = _port(plain_server)
        if on_ready is not None:
            on_ready(Listening(_port(ocpp_server), _port(http_server), plain_port))
        await stop.wait()
        LOG.info("draining: closing %d station connections", len(sessions.online()))


def _port(server: Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


async def _never_upgraded(connection: ServerConnection) -> None:  # pragma: no cover
    await connection.close()


def _http_request(connection: ServerConnection, request: Request) -> Response:
    """The HTTP port: /health now; OCSP, CRLs and metrics join in later issues."""
    if urlsplit(request.path).path == "/health":
        response = connection.respond(HTTPStatus.OK, '{"status": "ok"}\n')
        response.headers["Content-Type"] = "application/json"
        return response
    return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
