"""The SQLAlchemy (async) adapter of the Store Protocol, for SQLite and PostgreSQL.

Migrations run when the store opens, so every process sees the schema it expects.
On SQLite every transaction is BEGIN IMMEDIATE: writers queue on the busy timeout
instead of failing on a lock upgrade half-way through a read-then-write.

Certificates and audit entries written by concurrent callers are committed together
(group commit, `SqlStore._submit`); on a file-backed SQLite database the station lookup
and those batches run over one plain sqlite3 connection (`pki.store.sqlite_fast`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Dialect,
    Table,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

from pki.audit import AuditEntry, AuditEvent, AuditHead, seal_chain
from pki.crl import RevokedEntry
from pki.errors import ConflictError, IdentityTaken, NotFoundError, StateError
from pki.records import (
    Authority,
    CertificateQuery,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    RevocationState,
    Rollover,
    RolloverState,
    Station,
    TrustAnchor,
    TrustRole,
)
from pki.serials import serial_hex
from pki.store.checkpoint import WalCheckpointer
from pki.store.inline import Database
from pki.store.rollovers import (
    end_rollover,
    insert_rollover,
    replace_authorities,
    select_rollovers,
)
from pki.store.rows import (
    PendingWrite,
    audit_values,
    certificate_values,
    to_audit_entry,
    to_authority,
    to_certificate,
    to_station,
)
from pki.store.schema import (
    audit_head,
    audit_log,
    authorities,
    certificates,
    crl_counters,
    crls,
    settings,
    stations,
    trust_anchors,
)
from pki.store.sqlite_fast import (
    BUSY,
    BUSY_TIMEOUT_S,
    UNAVAILABLE,
    SqliteFastPath,
    Unavailable,
    busy_pauses,
    is_busy,
    sqlite_file,
)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = int(BUSY_TIMEOUT_S * 1000)
POOL_SIZE = 10
SQLITE_POOL_SIZE = 1  # SQLite has one writer: more connections only contend and back off
LAST_SEEN_RESOLUTION = timedelta(minutes=1)  # a certificate's last_seen, per handshake
MAX_BATCH = 256  # rows per group commit: bounds one transaction's size and lock time


def upsert(dialect: Dialect, table: Table, values: Mapping[str, Any]) -> Any:
    """INSERT ... ON CONFLICT for SQLite or PostgreSQL (both spell it alike): the caller
    adds `.on_conflict_do_update(...)`."""
    insert_ = postgresql_insert if dialect.name == "postgresql" else sqlite_insert
    return insert_(table).values(dict(values))


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config  # noqa: PLC0415 -- see `_upgrade`

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


MIGRATION_LOCK = 7_305_901
"""PostgreSQL advisory lock held while migrating: nodes starting together take turns."""


@functools.cache
def head_revision() -> str:
    """The newest migration's revision id: each is named by the first four digits of its
    file name, and each revises the one before (tests check this against Alembic)."""
    versions = (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    return max(path.name[:4] for path in versions)


def current_revision(connection: Connection) -> str | None:
    """The database's revision (Alembic's table), None before the first migration."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(connection: Connection) -> None:
    """Migrate to the head revision. Alembic (a fifth of a second to import, with its
    templates) is loaded only when there is something to migrate: every CLI command
    opens the store."""
    if connection.dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE serializes
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    if current_revision(connection) == head_revision():
        return
    from alembic import command  # noqa: PLC0415

    command.upgrade(_alembic_config(connection), "head")


def schema_revision(connection: Connection) -> tuple[str | None, str | None]:
    """(current, head) revisions, for `pkictl db status`."""
    return current_revision(connection), head_revision()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def schema_status(url: str) -> tuple[str | None, str | None]:
    """(current, head) revisions of the database at ``url``, changing nothing."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(schema_revision)
    finally:
        await engine.dispose()


def _create_private(path: Path) -> None:
    """Create a new SQLite database file readable by its owner only (0600), whatever the
    umask and the directory's mode: it holds the audit log, the stations' password
    hashes and every record. SQLite gives its -wal and -shm files the database file's
    mode. An existing file is left as it is."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):  # FileNotFoundError: SQLite reports it
        return
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def _check_openable(path: str) -> None:
    """Raise SQLite's own error for a database file that cannot be opened at all (a
    directory, a missing directory, no permission) before aiosqlite tries: its worker
    thread of a failed connection may outlive the event loop and print a traceback at
    exit. A busy database is left to the engine's busy timeout."""
    try:
        with closing(sqlite3.connect(path, timeout=0)) as connection:
            connection.execute("PRAGMA schema_version")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise


async def open_store(url: str) -> SqlStore:
    """Open (and migrate) the database at ``url``: sqlite+aiosqlite:// or postgresql+asyncpg://."""
    # A fixed pool: under a burst (a fleet reconnecting, a renewal campaign) callers
    # queue for a connection instead of opening and closing overflow connections, which
    # cost a new server session (PostgreSQL) or a new thread (aiosqlite) each.
    size = SQLITE_POOL_SIZE if make_url(url).get_backend_name() == "sqlite" else POOL_SIZE
    path = sqlite_file(url)
    if path is not None:
        _create_private(Path(path))
        _check_openable(path)
    engine = create_async_engine(url, pool_size=size, max_overflow=0, pool_timeout=60)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except Exception:
        await engine.dispose()
        raise
    return SqlStore(engine)


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.database = Database(engine)
        """Units of work for the CSMS's stores (inline on SQLite)."""
        path = sqlite_file(str(engine.url)) if engine.dialect.name == "sqlite" else None
        self._fast = SqliteFastPath(path, engine.dialect) if path else None
        self._checkpointer = WalCheckpointer(path) if path else None
        if self._checkpointer is not None:
            self._checkpointer.start()
        self._pending: list[tuple[PendingWrite, asyncio.Future[AuditEntry]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._fast is not None:
            self._fast.close()
        self.database.close()
        await self._engine.dispose()
        if self._checkpointer is not None:
            self._checkpointer.close()

    @asynccontextmanager
    async def _write(self, event_: AuditEvent, at: datetime) -> AsyncIterator[AsyncConnection]:
        """A transaction that ends with the audit entry for what it did."""
        async with self._engine.begin() as connection:
            yield connection
            await self._append(connection, event_, at)

    async def _append(
        self, connection: AsyncConnection, event_: AuditEvent, at: datetime
    ) -> AuditEntry:
        (entry,) = await self._append_many(connection, [(event_, at)])
        return entry

    async def _append_many(
        self, connection: AsyncConnection, events: Sequence[tuple[AuditEvent, datetime]]
    ) -> list[AuditEntry]:
        return await connection.run_sync(lambda sync: append_audit_entries(sync, events))

    # --- batched writes: certificates and audit entries -----------------------------

    async def _submit(self, item: PendingWrite) -> AuditEntry:
        """Queue ``item`` for the next batch and wait until it is committed.

        Group commit: concurrent issuances share one transaction (one fsync on
        PostgreSQL, one lock round on SQLite) instead of queueing for one each. A lone
        caller gets a batch of one, committed at once.
        """
        done: asyncio.Future[AuditEntry] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[PendingWrite, asyncio.Future[AuditEntry]]]) -> None:
        try:
            entries = await self._write_batch([item for item, _ in batch])
        except ConflictError as conflict:
            if len(batch) == 1:
                _settle(batch, error=conflict)
                return
            # One item conflicts (a duplicate serial): commit them one by one so that
            # only that one fails.
            for pair in batch:
                await self._commit([pair])
            return
        except Exception as exc:  # noqa: BLE001 -- handed to every waiting caller
            _settle(batch, error=exc)
            return
        _settle(batch, entries=entries)

    async def _write_batch(self, batch: Sequence[PendingWrite]) -> list[AuditEntry]:
        """Record the batch in one transaction; ConflictError if a row already exists."""
        if self._fast is not None:
            fast = self._fast
            for pause in busy_pauses():
                try:
                    written = fast.write(lambda connection: fast.record(connection, batch))
                except sqlite3.IntegrityError:
                    raise _conflict(batch) from None
                if not isinstance(written, Unavailable):
                    return written
                if written is not BUSY:
                    break
                await asyncio.sleep(pause)
        try:
            async with self._engine.begin() as connection:
                rows = [certificate_values(i.record, i.at) for i in batch if i.record is not None]
                if rows:
                    await connection.execute(insert(certificates), rows)
                return await self._append_many(connection, [(i.event, i.at) for i in batch])
        except IntegrityError:
            raise _conflict(batch) from None

    # --- stations -------------------------------------------------------------------

    async def add_station(self, station: Station, event: AuditEvent, at: datetime) -> None:
        try:
            async with self._write(event, at) as connection:
                await connection.execute(
                    insert(stations).values(
                        id=station.id,
                        serial_number=station.serial_number,
                        secc_id=station.secc_id,
                        security_profile=station.security_profile,
                        password_hash=station.password_hash,
                        created_at=station.created_at,
                        allow_expired=station.allow_expired,
                    )
                )
        except IntegrityError:
            raise await self._station_conflict(station, adding=True) from None

    async def _station_conflict(self, wanted: Station, *, adding: bool) -> ConflictError:
        """Why ``wanted`` (a station as it would be registered, or changed) broke a unique
        constraint, naming the station that holds what it wanted: the constraints decide
        (two processes cannot both pass a check), this only words the refusal."""
        holds = (stations.c.id == wanted.id) | (stations.c.serial_number == wanted.serial_number)
        if wanted.secc_id is not None:
            holds = holds | (stations.c.secc_id == wanted.secc_id)
        columns = (stations.c.id, stations.c.serial_number, stations.c.secc_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(*columns).where(holds))).all()
        if adding and any(r.id == wanted.id for r in rows):
            return ConflictError(f"station {wanted.id!r} is already registered")
        for row in rows:
            if row.id != wanted.id and row.serial_number == wanted.serial_number:
                return IdentityTaken("serial", wanted.serial_number, row.id)
            if row.id != wanted.id and wanted.secc_id and row.secc_id == wanted.secc_id:
                return IdentityTaken("secc-id", wanted.secc_id, row.id)
        return ConflictError(f"station {wanted.id!r} conflicts with another registration")

    async def get_station(self, station_id: str) -> Station | None:
        if self._fast is not None:
            fast = self._fast
            found = fast.read(lambda connection: fast.get_station(connection, station_id))
            if not isinstance(found, Unavailable):
                return found
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(stations).where(stations.c.id == station_id))
            ).first()
        return to_station(row) if row else None

    async def list_stations(self) -> list[Station]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(stations).order_by(stations.c.id))).all()
        return [to_station(r) for r in rows]

    async def remove_station(self, station_id: str, event: AuditEvent, at: datetime) -> None:
        async with self._write(event, at) as connection:
            result = await connection.execute(delete(stations).where(stations.c.id == station_id))
            if result.rowcount == 0:
                raise NotFoundError(f"no station {station_id!r}")

    async def set_secc_id(
        self, station_id: str, secc_id: str, event: AuditEvent, at: datetime
    ) -> None:
        try:
            async with self._write(event, at) as connection:
                result = await connection.execute(
                    update(stations).where(stations.c.id == station_id).values(secc_id=secc_id)
                )
                if result.rowcount == 0:
                    raise NotFoundError(f"no station {station_id!r}")
        except IntegrityError:
            station = await self.get_station(station_id)
            assert station is not None  # it was updated: only the SECC id can conflict
            raise await self._station_conflict(
                replace(station, secc_id=secc_id), adding=False
            ) from None

    # --- authorities ----------------------------------------------------------------

    async def record_authorities(
        self,
        entries: Sequence[tuple[Authority, CertificateRecord]],
        event: AuditEvent,
        at: datetime,
    ) -> None:
        try:
            async with self._write(event, at) as connection:
                for authority, record in entries:
                    await connection.execute(
                        insert(authorities).values(
                            name=authority.name,
                            role=authority.role.value,
                            profile=authority.profile,
                            issuer=authority.issuer,
                            key_name=authority.key_name,
                            certificate_der=authority.certificate_der,
                            created_at=authority.created_at,
                        )
                    )
                    await connection.execute(
                        insert(certificates).values(certificate_values(record, at))
                    )
        except IntegrityError as exc:
            raise ConflictError(
                f"the database already holds these authorities: {exc.orig}"
            ) from None

    async def renew_authority(
        self, authority: Authority, record: CertificateRecord, event: AuditEvent, at: datetime,
        previous_der: bytes,
    ) -> None:  # fmt: skip
        async with self._write(event, at) as connection:
            await replace_authorities(connection, [(authority, previous_der)], [], at, None)
            await connection.execute(insert(certificates).values(certificate_values(record, at)))

    async def get_authority(self, name: str) -> Authority | None:
        statement = select(authorities).where(authorities.c.name == name)
        row = await self.database.read(lambda connection: connection.execute(statement).first())
        return to_authority(row) if row else None

    async def list_authorities(self) -> list[Authority]:
        statement = select(authorities).order_by(authorities.c.created_at, authorities.c.name)
        rows = await self.database.read(lambda connection: connection.execute(statement).all())
        return [to_authority(r) for r in rows]

    # --- root rollovers -------------------------------------------------------------

    async def open_rollover(
        self,
        rollover: Rollover,
        records: Sequence[CertificateRecord],
        event: AuditEvent,
        at: datetime,
    ) -> int:
        try:
            async with self._write(event, at) as connection:
                return await insert_rollover(connection, rollover, records, at)
        except IntegrityError:
            raise ConflictError(
                f"a rollover of {rollover.authority} is already open (or generation "
                f"{rollover.generation} exists)"
            ) from None

    async def rollovers(self, authority: str) -> list[Rollover]:
        async with self._engine.connect() as connection:
            return await select_rollovers(connection, authority)

    async def switch_rollover(
        self,
        rollover: Rollover,
        changed: Sequence[tuple[Authority, bytes]],
        records: Sequence[CertificateRecord],
        event: AuditEvent,
        at: datetime,
    ) -> None:
        async with self._write(event, at) as connection:
            await end_rollover(connection, rollover.id, RolloverState.SWITCHED, at)
            await replace_authorities(connection, changed, records, at, f"rollover:{rollover.id}")

    async def abandon_rollover(self, rollover: Rollover, event: AuditEvent, at: datetime) -> None:
        async with self._write(event, at) as connection:
            await end_rollover(connection, rollover.id, RolloverState.ABANDONED, at)

    # --- certificates ---------------------------------------------------------------

    async def record_certificate(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> None:
        await self._submit(PendingWrite(record, event, at))

    async def due_certificates(self, now: datetime, limit: int) -> list[CertificateRecord]:
        statement = (
            select(certificates)
            .where(
                certificates.c.status == CertificateStatus.VALID.value,
                certificates.c.renew_after <= now,
                certificates.c.station_id.is_not(None),
            )
            .order_by(certificates.c.renew_after)
            .limit(limit)
        )  # served by ix_certificates_due (status, renew_after)
        rows = await self.database.read(lambda connection: connection.execute(statement).all())
        return [to_certificate(r) for r in rows]

    async def expiring_certificates(
        self, now: datetime, until: datetime, limit: int
    ) -> list[CertificateRecord]:
        statement = (
            select(certificates)
            .where(
                certificates.c.not_after > now,
                certificates.c.not_after <= until,
                certificates.c.status == CertificateStatus.VALID.value,
                certificates.c.station_id.is_not(None),
            )
            .order_by(certificates.c.not_after)
            .limit(limit)
        )  # served by ix_certificates_not_after
        rows = await self.database.read(lambda connection: connection.execute(statement).all())
        return [to_certificate(r) for r in rows]

    async def find_certificates(self, query: CertificateQuery) -> list[CertificateRecord]:
        statement = select(certificates).order_by(certificates.c.not_after, certificates.c.id)
        if query.station_id is not None:
            statement = statement.where(certificates.c.station_id == query.station_id)
        if query.station_ids is not None:
            statement = statement.where(certificates.c.station_id.in_(query.station_ids))
        if query.profile is not None:
            statement = statement.where(certificates.c.profile == query.profile)
        if query.expiring_before is not None:
            statement = statement.where(certificates.c.not_after <= query.expiring_before)
        if query.serial is not None:
            statement = statement.where(certificates.c.serial_hex == serial_hex(query.serial))
        if query.serial_prefix is not None:  # a range of the (serial, issuer) index
            statement = statement.where(
                certificates.c.serial_hex.startswith(query.serial_prefix, autoescape=True)
            )
        if query.limit is not None:
            statement = statement.limit(query.limit)
        rows = await self.database.read(lambda connection: connection.execute(statement).all())
        return [to_certificate(r) for r in rows]

    async def revocation_state(self, serial: int, issuer_name_hash: str) -> RevocationState | None:
        serial_text = serial_hex(serial)
        row: tuple[Any, ...] | None
        fast = self._fast
        found = (
            fast.read(lambda c: fast.revocation_state(c, serial_text, issuer_name_hash))
            if fast is not None else UNAVAILABLE
        )  # fmt: skip
        if isinstance(found, Unavailable):
            statement = select(
                certificates.c.status, certificates.c.source, certificates.c.revoked_at,
                certificates.c.revocation_reason,
            ).where(
                certificates.c.serial_hex == serial_text,
                certificates.c.issuer_name_hash == issuer_name_hash,
            )  # fmt: skip
            async with self._engine.connect() as connection:
                first = (await connection.execute(statement)).first()
            row = tuple(first) if first is not None else None
        else:
            row = found
        if row is None:
            return None
        status, source, revoked_at, reason = row
        return RevocationState(
            CertificateStatus(status), CertificateSource(source), revoked_at, reason
        )

    async def revoke_certificate(
        self, record: CertificateRecord, reason: str, event: AuditEvent, at: datetime
    ) -> CertificateRecord:
        async with self._write(event, at) as connection:
            result = await connection.execute(
                update(certificates)
                .where(
                    certificates.c.serial_hex == record.serial_hex,
                    certificates.c.issuer_name_hash == record.issuer_name_hash,
                    certificates.c.status != CertificateStatus.REVOKED.value,
                )
                .values(
                    status=CertificateStatus.REVOKED.value, revoked_at=at, revocation_reason=reason
                )
            )
            if result.rowcount == 0:
                raise StateError(f"certificate {record.serial_hex} is already revoked")
        return CertificateRecord(
            **{
                **record.__dict__,
                "status": CertificateStatus.REVOKED,
                "revoked_at": at,
                "revocation_reason": reason,
            }
        )

    async def supersede_certificate(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> bool:
        """A unit of work (inline on SQLite): every confirmed renewal supersedes one, and
        on the async path each was two thread hops on a busy loop."""
        statement = (
            update(certificates)
            .where(
                certificates.c.serial_hex == record.serial_hex,
                certificates.c.issuer_name_hash == record.issuer_name_hash,
                certificates.c.status == CertificateStatus.VALID.value,
            )
            .values(status=CertificateStatus.SUPERSEDED.value)
        )

        def work(connection: Connection) -> bool:
            if connection.execute(statement).rowcount == 0:
                return False  # not valid (any more): no audit entry for what did not happen
            append_audit_entries(connection, [(event, at)])
            return True

        superseded: bool = await self.database.write(work)
        return superseded

    async def record_presented(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> CertificateRecord:
        for attempt in (1, 2):
            try:
                return await self._record_presented(record, event, at)
            except IntegrityError:
                if attempt == 2:  # pragma: no cover -- a second race on the same row
                    raise
        raise AssertionError("unreachable")

    async def _record_presented(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> CertificateRecord:
        key = (
            certificates.c.serial_hex == record.serial_hex,
            certificates.c.issuer_name_hash == record.issuer_name_hash,
        )
        found = await self.database.read(
            lambda connection: connection.execute(select(certificates).where(*key)).first()
        )
        if found is not None:
            stored = to_certificate(found)
            if stored.last_seen is not None and at - stored.last_seen < LAST_SEEN_RESOLUTION:
                return stored  # seen a moment ago (a reconnecting station): no write

        def work(connection: Connection) -> CertificateRecord:
            # Known (nearly always: a station reconnecting): one UPDATE, atomic by itself,
            # returning the row as it is now (a revocation a moment ago included).
            row = connection.execute(
                update(certificates)
                .where(*key)
                .values(
                    first_seen=func.coalesce(
                        certificates.c.first_seen, literal(at, certificates.c.first_seen.type)
                    ),
                    last_seen=at,
                )
                .returning(*certificates.c)
            ).first()
            if row is not None:
                return to_certificate(row)
            observed = replace(record, first_seen=at, last_seen=at)  # never seen: a factory
            connection.execute(insert(certificates).values(certificate_values(observed, at)))
            append_audit_entries(connection, [(event, at)])
            return observed

        return await self.database.write(work)  # at every handshake: inline on SQLite

    async def revoked_entries(self, issuer_ca: str, valid_at: datetime) -> list[RevokedEntry]:
        statement = (
            select(
                certificates.c.serial_hex,
                certificates.c.revoked_at,
                certificates.c.revocation_reason,
            )
            .where(
                certificates.c.issuer_ca == issuer_ca,
                certificates.c.status == CertificateStatus.REVOKED.value,
                certificates.c.not_after > valid_at,
            )
            .order_by(certificates.c.revoked_at)
        )
        rows = await self.database.read(lambda connection: connection.execute(statement).all())
        return [
            RevokedEntry(int(r.serial_hex, 16), r.revoked_at, r.revocation_reason) for r in rows
        ]

    # --- trust anchors --------------------------------------------------------------

    async def add_trust_anchor(self, anchor: TrustAnchor, event: AuditEvent, at: datetime) -> None:
        certificate = anchor.certificate()
        try:
            async with self._write(event, at) as connection:
                await connection.execute(
                    insert(trust_anchors).values(
                        fingerprint_sha256=anchor.fingerprint_sha256,
                        role=anchor.role.value,
                        subject_dn=certificate.subject.rfc4514_string(),
                        not_after=certificate.not_valid_after_utc,
                        der=anchor.der,
                        added_at=anchor.added_at,
                    )
                )
        except IntegrityError:
            raise ConflictError(
                f"{certificate.subject.rfc4514_string()} is trusted already"
            ) from None

    async def trust_anchors(self, role: TrustRole | None = None) -> list[TrustAnchor]:
        statement = select(trust_anchors).order_by(trust_anchors.c.added_at)
        if role is not None:
            statement = statement.where(trust_anchors.c.role == role.value)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [TrustAnchor(TrustRole(r.role), r.der, r.added_at) for r in rows]

    # --- CRLs -----------------------------------------------------------------------

    async def allocate_crl_number(self, issuer_ca: str) -> int:
        """The next CRL number of ``issuer_ca``, strictly increasing across processes:
        one upsert, so two first callers cannot both insert the counter row."""
        statement = (
            upsert(self._engine.dialect, crl_counters, {"issuer_ca": issuer_ca, "last_number": 1})
            .on_conflict_do_update(
                index_elements=[crl_counters.c.issuer_ca],
                set_={"last_number": crl_counters.c.last_number + 1},
            )
            .returning(crl_counters.c.last_number)
        )
        async with self._engine.begin() as connection:
            number: int = (await connection.execute(statement)).scalar_one()
        return number

    async def record_crl(
        self, issuer_ca: str, number: int, der: bytes, event: AuditEvent, at: datetime
    ) -> None:
        async with self._write(event, at) as connection:
            await connection.execute(
                insert(crls).values(issuer_ca=issuer_ca, number=number, der=der, created_at=at)
            )

    async def latest_crl(self, issuer_ca: str) -> bytes | None:
        statement = (
            select(crls.c.der)
            .where(crls.c.issuer_ca == issuer_ca)
            .order_by(crls.c.number.desc())
            .limit(1)
        )
        row = await self.database.read(lambda connection: connection.execute(statement).first())
        return row.der if row else None

    # --- audit and settings ---------------------------------------------------------

    async def append_audit(self, event: AuditEvent, at: datetime) -> AuditEntry:
        return await self._submit(PendingWrite(None, event, at))

    async def audit_entries(
        self,
        limit: int | None = None,
        *,
        actions: Sequence[str] | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        statement = select(audit_log)
        if actions is not None:
            statement = statement.where(audit_log.c.action.in_(actions))
        if target is not None:
            statement = statement.where(audit_log.c.target == target)
        if limit is not None:
            statement = statement.order_by(audit_log.c.seq.desc()).limit(limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return sorted((to_audit_entry(r) for r in rows), key=lambda e: e.seq)

    async def audit_head(self) -> AuditHead | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
                )
            ).first()
        return AuditHead(row.seq, row.hash) if row and row.seq else None

    async def get_setting(self, key: str) -> str | None:
        statement = select(settings.c.value).where(settings.c.key == key)
        row = await self.database.read(lambda connection: connection.execute(statement).first())
        return row.value if row else None

    async def set_setting(self, key: str, value: str, event: AuditEvent, at: datetime) -> None:
        async with self._write(event, at) as connection:
            result = await connection.execute(
                update(settings).where(settings.c.key == key).values(value=value)
            )
            if result.rowcount == 0:
                await connection.execute(insert(settings).values(key=key, value=value))


def append_audit_entries(
    connection: Connection, events: Sequence[tuple[AuditEvent, datetime]]
) -> list[AuditEntry]:
    """Seal ``events`` onto the audit chain in the caller's transaction: the head row is
    locked (FOR UPDATE on PostgreSQL; SQLite's writer holds the database) so that two
    writers never extend the chain from the same head."""
    row = connection.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    entries = seal_chain(events, AuditHead(row.seq, row.hash) if row.seq else None)
    connection.execute(insert(audit_log), [audit_values(e) for e in entries])
    connection.execute(
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(seq=entries[-1].seq, hash=entries[-1].hash)
    )
    return entries


def _conflict(batch: Sequence[PendingWrite]) -> ConflictError:
    serials = ", ".join(i.record.serial_hex for i in batch if i.record is not None)
    return ConflictError(f"a certificate among serials {serials} is already recorded")


def _settle(
    batch: Sequence[tuple[PendingWrite, asyncio.Future[AuditEntry]]],
    *,
    entries: Sequence[AuditEntry] = (),
    error: BaseException | None = None,
) -> None:
    """Hand each waiting caller its entry or the error; a caller that gave up (its
    future cancelled) is skipped -- its row is committed all the same."""
    for index, (_, done) in enumerate(batch):
        if done.done():
            continue
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(entries[index])
