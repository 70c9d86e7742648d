"""The SQLAlchemy (async) adapter of the Store Protocol, for SQLite and PostgreSQL.

Migrations run when the store opens, so every process sees the schema it expects.
On SQLite every transaction is BEGIN IMMEDIATE: writers queue on the busy timeout
instead of failing on a lock upgrade half-way through a read-then-write.

The issuance hot path on SQLite (station lookup, certificate record, audit append) runs
on the calling thread over one plain sqlite3 connection, see `_SqliteFastPath`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Dialect,
    Row,
    bindparam,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from pki.audit import AuditEntry, AuditEvent, AuditHead, seal
from pki.crl import RevokedEntry
from pki.errors import ConflictError, NotFoundError, StateError
from pki.records import (
    Authority,
    AuthorityRole,
    CertificateQuery,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    Station,
)
from pki.serials import serial_hex
from pki.store.schema import (
    audit_head,
    audit_log,
    authorities,
    certificates,
    crl_counters,
    crls,
    settings,
    stations,
)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)

T = TypeVar("T")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    config = _alembic_config(connection)
    head = ScriptDirectory.from_config(config).get_current_head()
    if MigrationContext.configure(connection).get_current_revision() != head:
        command.upgrade(config, "head")


def schema_revision(connection: Connection) -> tuple[str | None, str | None]:
    """(current, head) revisions, for `pkictl db status`-style reporting."""
    config = _alembic_config(connection)
    return (
        MigrationContext.configure(connection).get_current_revision(),
        ScriptDirectory.from_config(config).get_current_head(),
    )


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


async def open_store(url: str) -> SqlStore:
    """Open (and migrate) the database at ``url``: sqlite+aiosqlite:// or postgresql+asyncpg://."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except Exception:
        await engine.dispose()
        raise
    return SqlStore(engine)


def _sqlite_file(url: str) -> str | None:
    """The database file of a plain file-backed SQLite URL; None for anything else
    (in-memory databases, URI or driver options), which keeps the async path only."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query:
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class _Compiled:
    """A Core statement compiled once for the SQLite fast path: SQL text, bind order and
    the dialect's own bind processors, so that values are stored byte for byte as the
    SQLAlchemy path stores them (UTCDateTime included)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql: Final = compiled.string
        self._names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[name] for name in self._names]
        self._defaults = {
            name: bind.effective_value for name, bind in zip(self._names, binds, strict=True)
        }
        self._processors = tuple(
            bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process in zip(self._names, self._processors, strict=True):
            value = values[name] if name in values else self._defaults[name]
            out.append(value if process is None else process(value))
        return tuple(out)


class _Unavailable:
    """The fast path cannot serve this call now (lock held elsewhere, other thread)."""


UNAVAILABLE: Final = _Unavailable()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return (code & 0xFF) in SQLITE_BUSY_CODES


class _SqliteFastPath:
    """The issuance hot path on SQLite, without the per-statement thread hops of aiosqlite.

    One plain sqlite3 connection, used only from the thread that opened it (the event
    loop's), with the engine's settings: WAL, synchronous=NORMAL, and each write one
    BEGIN IMMEDIATE ... COMMIT transaction -- as durable as the SQLAlchemy path.
    A local SQLite transaction takes tens of microseconds, less than signing the
    certificate it records, which also runs on the loop.

    It never waits for a lock: its busy timeout is 0, and when another connection or
    process holds the write lock (or the call comes from another thread) the caller gets
    UNAVAILABLE and takes the SQLAlchemy path, which queues on the normal busy timeout
    in aiosqlite's thread. A failed transaction is rolled back before that, so a
    statement is never applied twice.
    """

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._thread: int | None = None
        self.station = _Compiled(
            select(stations).where(stations.c.id == bindparam("station_id")), dialect
        )
        self._station_results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in stations.c
        ]
        self.insert_certificate = _Compiled(
            insert(certificates).values({key: bindparam(key) for key in CERTIFICATE_COLUMNS}),
            dialect,
        )
        self.head = _Compiled(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1), dialect
        )
        self.insert_audit = _Compiled(
            insert(audit_log).values({key: bindparam(key) for key in AUDIT_COLUMNS}), dialect
        )
        self.update_head = _Compiled(
            update(audit_head)
            .where(audit_head.c.id == 1)
            .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")),
            dialect,
        )

    def _open(self) -> sqlite3.Connection | None:
        if self._connection is not None:
            if self._thread != threading.get_ident():
                return None
            if self._connection.in_transaction:  # a failed rollback: start afresh
                self.close()
            else:
                return self._connection
        connection = sqlite3.connect(self._path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout=0")
            mode = connection.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                connection.close()
                return None
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            connection.close()
            return None
        self._connection, self._thread = connection, threading.get_ident()
        return connection

    def close(self) -> None:
        if self._connection is not None and self._thread == threading.get_ident():
            self._connection.close()
        self._connection = self._thread = None

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T | _Unavailable:
        connection = self._open()
        if connection is None:
            return UNAVAILABLE
        try:
            return work(connection)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return UNAVAILABLE
            raise

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T | _Unavailable:
        connection = self._open()
        if connection is None:
            return UNAVAILABLE
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return UNAVAILABLE
            raise
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                return UNAVAILABLE
            raise
        return result

    def get_station(self, connection: sqlite3.Connection, station_id: str) -> Station | None:
        row = connection.execute(
            self.station.sql, self.station.parameters({"station_id": station_id})
        ).fetchone()
        if row is None:
            return None
        values: dict[str, Any] = {
            column.key: value if process is None else process(value)
            for column, value, process in zip(stations.c, row, self._station_results, strict=True)
        }
        return Station(
            id=values["id"],
            serial_number=values["serial_number"],
            secc_id=values["secc_id"],
            security_profile=values["security_profile"],
            password_hash=values["password_hash"],
            created_at=values["created_at"],
        )

    def append(
        self, connection: sqlite3.Connection, event_: AuditEvent, at: datetime
    ) -> AuditEntry:
        row = connection.execute(self.head.sql, self.head.parameters({})).fetchone()
        if row is None:
            raise StateError("the audit head row is missing: the database was not migrated")
        seq, hash_ = row
        entry = seal(event_, at=at, previous=AuditHead(seq, hash_) if seq else None)
        connection.execute(
            self.insert_audit.sql, self.insert_audit.parameters(_audit_values(entry))
        )
        connection.execute(
            self.update_head.sql,
            self.update_head.parameters({"new_seq": entry.seq, "new_hash": entry.hash}),
        )
        return entry


def _issuer_name_hash(record: CertificateRecord) -> str:
    return hashlib.sha256(record.certificate().issuer.public_bytes()).hexdigest()


CERTIFICATE_COLUMNS = (
    "serial_hex",
    "issuer_name_hash",
    "issuer_dn",
    "issuer_ca",
    "subject_dn",
    "profile",
    "station_id",
    "not_before",
    "not_after",
    "renew_after",
    "status",
    "source",
    "der",
    "fingerprint_sha256",
    "revoked_at",
    "revocation_reason",
    "created_at",
)


def _certificate_values(record: CertificateRecord, at: datetime) -> dict[str, Any]:
    return {
        "serial_hex": record.serial_hex,
        "issuer_name_hash": _issuer_name_hash(record),
        "issuer_dn": record.issuer_dn,
        "issuer_ca": record.issuer_ca,
        "subject_dn": record.subject_dn,
        "profile": record.profile,
        "station_id": record.station_id,
        "not_before": record.not_before,
        "not_after": record.not_after,
        "renew_after": record.renew_after,
        "status": record.status.value,
        "source": record.source.value,
        "der": record.der,
        "fingerprint_sha256": record.fingerprint_sha256,
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
        "created_at": at,
    }


AUDIT_COLUMNS = ("seq", "at", "action", "actor", "target", "outcome", "detail", "prev_hash", "hash")


def _audit_values(entry: AuditEntry) -> dict[str, Any]:
    event_ = entry.event
    return {
        "seq": entry.seq,
        "at": entry.at,
        "action": event_.action,
        "actor": event_.actor,
        "target": event_.target,
        "outcome": event_.outcome,
        "detail": json.dumps(dict(event_.detail), sort_keys=True, default=str),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _certificate(row: Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=int(row.serial_hex, 16),
        issuer_dn=row.issuer_dn,
        issuer_ca=row.issuer_ca,
        subject_dn=row.subject_dn,
        profile=row.profile,
        station_id=row.station_id,
        not_before=row.not_before,
        not_after=row.not_after,
        renew_after=row.renew_after,
        status=CertificateStatus(row.status),
        source=CertificateSource(row.source),
        der=row.der,
        fingerprint_sha256=row.fingerprint_sha256,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
    )


def _station(row: Row[Any]) -> Station:
    return Station(
        id=row.id,
        serial_number=row.serial_number,
        secc_id=row.secc_id,
        security_profile=row.security_profile,
        password_hash=row.password_hash,
        created_at=row.created_at,
    )


def _authority(row: Row[Any]) -> Authority:
    return Authority(
        name=row.name,
        role=AuthorityRole(row.role),
        profile=row.profile,
        issuer=row.issuer,
        key_name=row.key_name,
        certificate_der=row.certificate_der,
        created_at=row.created_at,
    )


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        event=AuditEvent(
            action=row.action,
            actor=row.actor,
            target=row.target,
            outcome=row.outcome,
            detail=json.loads(row.detail),
        ),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        path = _sqlite_file(str(engine.url)) if engine.dialect.name == "sqlite" else None
        self._fast = _SqliteFastPath(path, engine.dialect) if path else None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        await self._engine.dispose()

    @asynccontextmanager
    async def _write(self, event_: AuditEvent, at: datetime) -> AsyncIterator[AsyncConnection]:
        """A transaction that ends with the audit entry for what it did."""
        async with self._engine.begin() as connection:
            yield connection
            await self._append(connection, event_, at)

    async def _append(
        self, connection: AsyncConnection, event_: AuditEvent, at: datetime
    ) -> AuditEntry:
        row = (
            await connection.execute(
                select(audit_head.c.seq, audit_head.c.hash)
                .where(audit_head.c.id == 1)
                .with_for_update()
            )
        ).one()
        entry = seal(event_, at=at, previous=AuditHead(row.seq, row.hash) if row.seq else None)
        await connection.execute(insert(audit_log).values(_audit_values(entry)))
        await connection.execute(
            update(audit_head).where(audit_head.c.id == 1).values(seq=entry.seq, hash=entry.hash)
        )
        return entry

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
                    )
                )
        except IntegrityError:
            raise ConflictError(f"station {station.id!r} is already registered") from None

    async def get_station(self, station_id: str) -> Station | None:
        if self._fast is not None:
            fast = self._fast
            found = fast.read(lambda connection: fast.get_station(connection, station_id))
            if not isinstance(found, _Unavailable):
                return found
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(stations).where(stations.c.id == station_id))
            ).first()
        return _station(row) if row else None

    async def list_stations(self) -> list[Station]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(stations).order_by(stations.c.id))).all()
        return [_station(r) for r in rows]

    async def remove_station(self, station_id: str, event: AuditEvent, at: datetime) -> None:
        async with self._write(event, at) as connection:
            result = await connection.execute(delete(stations).where(stations.c.id == station_id))
            if result.rowcount == 0:
                raise NotFoundError(f"no station {station_id!r}")

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
                        insert(certificates).values(_certificate_values(record, at))
                    )
        except IntegrityError as exc:
            raise ConflictError(
                f"the database already holds these authorities: {exc.orig}"
            ) from None

    async def get_authority(self, name: str) -> Authority | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(authorities).where(authorities.c.name == name))
            ).first()
        return _authority(row) if row else None

    async def list_authorities(self) -> list[Authority]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(authorities).order_by(authorities.c.created_at, authorities.c.name)
                )
            ).all()
        return [_authority(r) for r in rows]

    # --- certificates ---------------------------------------------------------------

    async def record_certificate(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> None:
        if self._fast is not None:
            fast = self._fast
            values = _certificate_values(record, at)

            def work(connection: sqlite3.Connection) -> None:
                connection.execute(
                    fast.insert_certificate.sql, fast.insert_certificate.parameters(values)
                )
                fast.append(connection, event, at)

            try:
                done = fast.write(work)
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"serial {record.serial_hex} from this issuer is already recorded"
                ) from None
            if not isinstance(done, _Unavailable):
                return
        try:
            async with self._write(event, at) as connection:
                await connection.execute(
                    insert(certificates).values(_certificate_values(record, at))
                )
        except IntegrityError:
            raise ConflictError(
                f"serial {record.serial_hex} from this issuer is already recorded"
            ) from None

    async def find_certificates(self, query: CertificateQuery) -> list[CertificateRecord]:
        statement = select(certificates).order_by(certificates.c.not_after, certificates.c.id)
        if query.station_id is not None:
            statement = statement.where(certificates.c.station_id == query.station_id)
        if query.profile is not None:
            statement = statement.where(certificates.c.profile == query.profile)
        if query.expiring_before is not None:
            statement = statement.where(certificates.c.not_after <= query.expiring_before)
        if query.serial is not None:
            statement = statement.where(certificates.c.serial_hex == serial_hex(query.serial))
        if query.limit is not None:
            statement = statement.limit(query.limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_certificate(r) for r in rows]

    async def revoke_certificate(
        self, record: CertificateRecord, reason: str, event: AuditEvent, at: datetime
    ) -> CertificateRecord:
        async with self._write(event, at) as connection:
            result = await connection.execute(
                update(certificates)
                .where(
                    certificates.c.fingerprint_sha256 == record.fingerprint_sha256,
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

    async def revoked_entries(self, issuer_ca: str) -> list[RevokedEntry]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        certificates.c.serial_hex,
                        certificates.c.revoked_at,
                        certificates.c.revocation_reason,
                    )
                    .where(
                        certificates.c.issuer_ca == issuer_ca,
                        certificates.c.status == CertificateStatus.REVOKED.value,
                    )
                    .order_by(certificates.c.revoked_at)
                )
            ).all()
        return [
            RevokedEntry(int(r.serial_hex, 16), r.revoked_at, r.revocation_reason) for r in rows
        ]

    # --- CRLs -----------------------------------------------------------------------

    async def allocate_crl_number(self, issuer_ca: str) -> int:
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    select(crl_counters.c.last_number)
                    .where(crl_counters.c.issuer_ca == issuer_ca)
                    .with_for_update()
                )
            ).first()
            if row is None:
                number = 1
                await connection.execute(
                    insert(crl_counters).values(issuer_ca=issuer_ca, last_number=1)
                )
            else:
                number = row.last_number + 1
                await connection.execute(
                    update(crl_counters)
                    .where(crl_counters.c.issuer_ca == issuer_ca)
                    .values(last_number=number)
                )
        return number

    async def record_crl(
        self, issuer_ca: str, number: int, der: bytes, event: AuditEvent, at: datetime
    ) -> None:
        async with self._write(event, at) as connection:
            await connection.execute(
                insert(crls).values(issuer_ca=issuer_ca, number=number, der=der, created_at=at)
            )

    # --- audit and settings ---------------------------------------------------------

    async def append_audit(self, event: AuditEvent, at: datetime) -> AuditEntry:
        if self._fast is not None:
            fast = self._fast
            entry = fast.write(lambda connection: fast.append(connection, event, at))
            if not isinstance(entry, _Unavailable):
                return entry
        async with self._engine.begin() as connection:
            return await self._append(connection, event, at)

    async def audit_entries(self, limit: int | None = None) -> list[AuditEntry]:
        statement = select(audit_log).order_by(audit_log.c.seq)
        if limit is not None:
            statement = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        entries = [_audit_entry(r) for r in rows]
        return sorted(entries, key=lambda e: e.seq)

    async def audit_head(self) -> AuditHead | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
                )
            ).first()
        return AuditHead(row.seq, row.hash) if row and row.seq else None

    async def get_setting(self, key: str) -> str | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(select(settings.c.value).where(settings.c.key == key))
            ).first()
        return row.value if row else None

    async def set_setting(self, key: str, value: str, event: AuditEvent, at: datetime) -> None:
        async with self._write(event, at) as connection:
            result = await connection.execute(
                update(settings).where(settings.c.key == key).values(value=value)
            )
            if result.rowcount == 0:
                await connection.execute(insert(settings).values(key=key, value=value))
