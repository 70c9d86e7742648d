"""The one composition root: wires policy, store, keys, clock and services together.

Both the CLI and `pkictl serve` obtain everything they use from here.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from csms.db.alerts import SqlAlertStore
from csms.db.health import SqlStorageProbe
from csms.db.inventory import SqlInventoryStore
from csms.db.nodes import SqlNodeStore
from csms.db.notify import outbox_wakeups
from csms.db.ocsp import SqlResponseLog
from csms.db.outbox import SqlOutboxStore
from csms.db.renewals import SqlRenewalStore
from csms.db.reports import SqlReportStore
from csms.db.rollover import SqlCampaignStore
from csms.db.sessions import SqlSessionStore
from csms.db.tokens import SqlTokenStore
from csms.db.transactions import SqlTransactionStore
from csms.home import (
    CONFIG_FILE,
    PASSPHRASE_FILE,
    POLICY_FILE,
    HomeConfig,
    database_url,
    load_config,
    render_config,
)
from csms.services.alerts import Alerts
from csms.services.health import PROBE_INTERVAL_S, StorageHealth
from csms.services.inventory import CertificateManagement, KnownCertificate
from csms.services.nodes import NodeService
from csms.services.ocsp import OcspService
from csms.services.outbox import Outbox
from csms.services.renewal_ports import RenewalSettings
from csms.services.renewals import RenewalService
from csms.services.reports import ReportService
from csms.services.revocations import Revocations
from csms.services.rollover import RolloverCampaign
from csms.services.stations import StationService
from csms.services.tokens import TokenService
from csms.services.transactions import TransactionService
from csms.services.trust import TrustService
from pki.audit import AuditEvent
from pki.authority import CertificateAuthority, InlineIssuing
from pki.clock import Clock
from pki.errors import ConflictError, KeyAccessError, NotFoundError
from pki.keys.file import FileKeyStore, atomic_write
from pki.keys.process import SigningProcess
from pki.policy import Policy, load_policy, parse_policy
from pki.records import Authority, AuthorityRole
from pki.renewal import renewal_due_at
from pki.rollover import RootRollover, SwitchResult
from pki.store.faults import describe, storage_fault
from pki.store.sql import SqlStore, open_store
from pki.store.sqlite_fast import sqlite_file

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
    renewals: RenewalService
    alerts: Alerts
    inventory: CertificateManagement
    revocations: Revocations
    rollover: RolloverCampaign
    ocsp: OcspService
    nodes: NodeService

    def write_home_file(self, relative: str, data: bytes) -> Path:
        path = self.home / relative
        atomic_write(path, data)
        return path

    def storage_health(self, interval_s: float = PROBE_INTERVAL_S) -> StorageHealth:
        """Whether the database (and the disks pkictl writes to) can be written and read,
        probed as this node every ``interval_s`` (`/health`)."""
        directories = [self.home]
        database_file = sqlite_file(str(self.store.engine.url))
        if database_file is not None:
            directories.append(Path(database_file).parent)
        probe = SqlStorageProbe(self.store.database, self.nodes.node_id, directories)

        def cause(error: BaseException) -> tuple[str, str] | None:
            fault = storage_fault(error)
            if fault is None:
                return None
            return fault.public(), describe(fault, str(self.store.engine.url))

        return StorageHealth(probe, cause, interval_s=interval_s)

    def outbox_wakeups(self, wake: Callable[[str], None]) -> AbstractAsyncContextManager[bool]:
        """``wake(station_id)`` for calls queued by any process (PostgreSQL NOTIFY)."""
        return outbox_wakeups(self.store.engine, wake)

    async def renew_server_certificates(
        self, who: str, *, names: Sequence[str] | None = None, force: bool = False
    ) -> list[Authority]:
        """Renew the CSMS server certificates whose renewal point (the csms-server
        profile's threshold) has come -- or those named, with ``force`` -- judged by the
        certificate file actually served. Each gets a new key; the new certificate file
        is written last, and `pkictl serve` reloads it for new connections."""
        servers = [
            a for a in await self.store.list_authorities()
            if a.role is AuthorityRole.CSMS_SERVER and (names is None or a.name in names)
        ]  # fmt: skip
        unknown = sorted(set(names or ()) - {a.name for a in servers})
        if unknown:  # checked before anything is renewed
            raise NotFoundError(f"no CSMS server certificate named {', '.join(unknown)}")
        renewed = []
        now = self.clock.now()
        for authority in servers:
            path = self.home / "certs" / f"{authority.name}.pem"
            served = x509.load_pem_x509_certificate(path.read_bytes())
            rule = self.policy.profile(authority.profile).renewal
            due = renewal_due_at(served.not_valid_before_utc, served.not_valid_after_utc, rule)
            if not force and due > now:
                continue
            new = await self.ca.renew_server_certificate(authority.name, who)
            self.write_home_file(
                f"certs/{authority.name}.pem", new.certificate().public_bytes(Encoding.PEM)
            )
            renewed.append(new)
        return renewed

    async def switch_rollover(self, who: str, *, force: bool) -> SwitchResult:
        """Put the next CSO root in force (see RolloverCampaign.switch), then write the
        certificate files of every authority that changed -- `pkictl serve` serves the
        server certificates to new connections -- and the root's next CRL."""
        result = await self.rollover.switch(who, force=force)
        await self.sync_authority_files()
        await self.publish_crl(result.rollover.authority, who)
        return result

    async def sync_authority_files(self) -> list[str]:
        """Write certs/NAME.pem of every authority whose file is not what the database
        holds (a switch cut before its files were written, or made by another process):
        the served server certificates and the exported CAs follow the database."""
        written = []
        for authority in await self.store.list_authorities():
            pem = authority.certificate().public_bytes(Encoding.PEM)
            path = self.home / "certs" / f"{authority.name}.pem"
            if not path.exists() or path.read_bytes() != pem:
                self.write_home_file(f"certs/{authority.name}.pem", pem)
                written.append(authority.name)
        return written

    async def publish_crl(self, name: str, who: str) -> tuple[x509.CertificateRevocationList, Path]:
        """Issue the next CRL of CA ``name`` and save it as HOME/crl/NAME.crl."""
        return await self.revocations.publish_crl(name, who)


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
    outbox = Outbox(SqlOutboxStore(store.database), clock)
    alerts = Alerts(SqlAlertStore(store.engine), clock)
    settings = RenewalSettings(**config.renewal)
    trust = TrustService(store, clock)

    async def known() -> list[KnownCertificate]:
        ours = [KnownCertificate(a.name, a.certificate()) for a in await store.list_authorities()]
        return ours + [
            KnownCertificate(f"trusted {t.role.value} {t.fingerprint_sha256[:16]}", t.certificate())
            for t in await trust.list()
        ]

    def write_home_file(relative: str, data: bytes) -> Path:
        atomic_write(home / relative, data)
        return home / relative

    revocations = Revocations(ca, write_home_file)
    stations = StationService(store, clock, revocations)
    inventory = CertificateManagement(SqlInventoryStore(store.engine), outbox, clock, known)
    renewals = RenewalService(
        SqlRenewalStore(store.database), ca, outbox, clock, alerts, stations, revocations,
        settings,
    )  # fmt: skip
    stations.on_removal.update(renewals=renewals, queued_calls=outbox)
    return App(
        home, config, policy, store, clock, ca, stations, passphrase,
        SqlSessionStore(store.database),
        TokenService(SqlTokenStore(store.engine), store, clock),
        TransactionService(SqlTransactionStore(store.database), clock),
        ReportService(SqlReportStore(store.database), clock),
        outbox,
        trust,
        renewals,
        alerts,
        inventory,
        revocations,
        RolloverCampaign(
            SqlCampaignStore(store.engine), RootRollover(ca), outbox, clock, store,
            SqlSessionStore(store.database), inventory,
        ),
        OcspService(store.list_authorities, keys, ca.ocsp_status, clock, policy.ocsp_validity,
                    SqlResponseLog(store.database)),
        NodeService(SqlNodeStore(store.database), clock),
    )  # fmt: skip


@asynccontextmanager
async def open_app(
    home: Path,
    passphrase_file: Path | None = None,
    clock: Clock | None = None,
    database: str | None = None,
) -> AsyncIterator[App]:
    """Open an initialized home (``database``: a URL that overrides the home's). A policy
    file edited since the last run is recorded in the audit log before anything else
    happens."""
    config = load_config(home)
    policy = load_policy(home / POLICY_FILE)
    store = await open_store(database_url(home, config, database))
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


@asynccontextmanager
async def signing_process(app: App) -> AsyncIterator[SigningProcess]:
    """While open, station CSRs are checked and signed in a child process on another
    core; the records stay here (ADR 15). Closing answers what it holds, then stops it."""
    process = SigningProcess(app.home / "keys", app.passphrase, app.policy)
    app.ca.csr_issuing = process
    try:
        yield process
    finally:
        app.ca.csr_issuing = InlineIssuing()
        await process.aclose()


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
        # The CA goes where the home will look for it: --database-url (init's or the
        # global one), else PKICTL_DATABASE_URL -- recorded in pkictl.toml -- else SQLite.
        if config.database_url is None and os.environ.get("PKICTL_DATABASE_URL"):
            config = replace(config, database_url=os.environ["PKICTL_DATABASE_URL"])
        url = config.database_url or database_url(staging, None)
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
        # a database URL may hold a password: then only the owner may read the file
        secret = config.database_url is not None and bool(urlsplit(config.database_url).password)
        atomic_write(home / CONFIG_FILE, render_config(config).encode(), 0o600 if secret else 0o644)
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
