"""The issuance hot path on SQLite, without the per-statement thread hops of aiosqlite.

Recording a certificate through aiosqlite costs a thread hop per statement, several
milliseconds per issuance on a busy machine -- more than signing the certificate. This
module writes the same rows (through the same SQL and bind processors SQLAlchemy would
use) over one plain sqlite3 connection on the event loop's thread. `SqlStore` uses it
for station lookups and for its batched certificate/audit writes, and falls back to
SQLAlchemy whenever it answers UNAVAILABLE.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Final, TypeVar

from sqlalchemy import Dialect, bindparam, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine

from pki.audit import AuditEntry, AuditHead, seal_chain
from pki.errors import StateError
from pki.records import Station
from pki.store.checkpoint import without_autocheckpoint
from pki.store.rows import (
    AUDIT_COLUMNS,
    CERTIFICATE_COLUMNS,
    PendingWrite,
    audit_values,
    certificate_values,
    to_station,
)
from pki.store.schema import UTCDateTime, audit_head, audit_log, certificates, stations

SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
BUSY_TIMEOUT_S = 10.0  # as the async engine's busy_timeout (pki.store.sql)
MAX_BUSY_PAUSE_S = 0.025

T = TypeVar("T")


def sqlite_file(url: str) -> str | None:
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
        self._processors = tuple(bind_processor(bind.type, dialect) for bind in binds)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process in zip(self._names, self._processors, strict=True):
            value = values[name] if name in values else self._defaults[name]
            out.append(value if process is None else process(value))
        return tuple(out)


def _utc_text(value: datetime | None) -> str | None:
    """UTCDateTime's bind processor and SQLite DATETIME's storage format in one step
    (``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC): the chained SQLAlchemy processors cost
    more than the rest of a certificate row's parameters together."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("UTCDateTime needs a timezone-aware datetime")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _utc_datetime(value: str | None) -> datetime | None:
    """The inverse of `_utc_text`: what UTCDateTime returns, timezone-aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(type_, UTCDateTime):
        return _utc_text
    return type_.dialect_impl(dialect).bind_processor(dialect)


def result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(type_, UTCDateTime):
        return _utc_datetime
    return type_.dialect_impl(dialect).result_processor(dialect, None)


class Unavailable:
    """The fast path cannot serve this call (another thread, not a WAL database, or --
    BUSY -- the write lock held elsewhere for now)."""


UNAVAILABLE: Final = Unavailable()
BUSY: Final = Unavailable()


def busy_pauses(total_s: float = BUSY_TIMEOUT_S) -> Iterator[float]:
    """Pauses between attempts at a write lock held elsewhere, adding up to ``total_s``.

    Waiting on the loop, not on the async engine: a transaction there holds the lock
    across thread hops, each of which waits for a busy loop, so every writer that found
    the lock taken and followed it there kept it taken longer -- a convoy that once set
    off held outbox and renewal moves for seconds under a campaign (bench/RESULTS.md).
    Here the lock is taken, used and released within one step of the loop."""
    waited, pause = 0.0, 0.001
    while waited < total_s:
        yield pause
        waited += pause
        pause = min(pause * 2, MAX_BUSY_PAUSE_S)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: the lock is held elsewhere."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return (code & 0xFF) in SQLITE_BUSY_CODES


class SqliteFastPath:
    """The issuance hot path on SQLite, without the per-statement thread hops of aiosqlite.

    One plain sqlite3 connection, used only from the thread that opened it (the event
    loop's), with the engine's settings: WAL, synchronous=NORMAL, and each write one
    BEGIN IMMEDIATE ... COMMIT transaction -- as durable as the SQLAlchemy path.
    A local SQLite transaction takes tens of microseconds, less than signing the
    certificate it records, which also runs on the loop.

    It never blocks on a lock: its busy timeout is 0. When another connection or process
    holds the write lock the caller gets BUSY and tries again after a pause
    (`busy_pauses`); from another thread it gets UNAVAILABLE and takes the SQLAlchemy
    path. A failed transaction is rolled back first, so a statement is never applied
    twice.
    """

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._thread: int | None = None
        self.station = _Compiled(
            select(stations).where(stations.c.id == bindparam("station_id")), dialect
        )
        self._station_results = [result_processor(c.type, dialect) for c in stations.c]
        revocation_columns = (
            certificates.c.status, certificates.c.source, certificates.c.revoked_at,
            certificates.c.revocation_reason,
        )  # fmt: skip
        self.revocation = _Compiled(
            select(*revocation_columns).where(
                certificates.c.serial_hex == bindparam("serial_hex"),
                certificates.c.issuer_name_hash == bindparam("issuer_name_hash"),
            ),
            dialect,
        )
        self._revocation_results = [result_processor(c.type, dialect) for c in revocation_columns]
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
            without_autocheckpoint(connection)
        except sqlite3.Error:
            connection.close()
            return None
        self._connection, self._thread = connection, threading.get_ident()
        return connection

    def close(self) -> None:
        if self._connection is not None and self._thread == threading.get_ident():
            self._connection.close()
        self._connection = self._thread = None

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T | Unavailable:
        connection = self._open()
        if connection is None:
            return UNAVAILABLE
        try:
            return work(connection)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return UNAVAILABLE
            raise

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T | Unavailable:
        connection = self._open()
        if connection is None:
            return UNAVAILABLE
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return BUSY
            raise
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                return BUSY
            raise
        return result

    def get_station(self, connection: sqlite3.Connection, station_id: str) -> Station | None:
        row = connection.execute(
            self.station.sql, self.station.parameters({"station_id": station_id})
        ).fetchone()
        if row is None:
            return None
        values = {
            column.key: value if process is None else process(value)
            for column, value, process in zip(stations.c, row, self._station_results, strict=True)
        }
        return to_station(SimpleNamespace(**values))

    def revocation_state(
        self, connection: sqlite3.Connection, serial_hex: str, issuer_name_hash: str
    ) -> tuple[Any, ...] | None:
        """(status, source, revoked_at, reason) as the SQLAlchemy path returns them."""
        row = connection.execute(
            self.revocation.sql,
            self.revocation.parameters(
                {"serial_hex": serial_hex, "issuer_name_hash": issuer_name_hash}
            ),
        ).fetchone()
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, self._revocation_results, strict=True)
        )

    def record(
        self, connection: sqlite3.Connection, batch: Sequence[PendingWrite]
    ) -> list[AuditEntry]:
        """Insert the batch's certificates and chain its audit entries, in the caller's
        transaction (see `write`)."""
        row = connection.execute(self.head.sql, self.head.parameters({})).fetchone()
        if row is None:
            raise StateError("the audit head row is missing: the database was not migrated")
        seq, hash_ = row
        connection.executemany(
            self.insert_certificate.sql,
            [
                self.insert_certificate.parameters(certificate_values(item.record, item.at))
                for item in batch
                if item.record is not None
            ],
        )
        entries = seal_chain(
            [(item.event, item.at) for item in batch], AuditHead(seq, hash_) if seq else None
        )
        connection.executemany(
            self.insert_audit.sql,
            [self.insert_audit.parameters(audit_values(entry)) for entry in entries],
        )
        connection.execute(
            self.update_head.sql,
            self.update_head.parameters({"new_seq": entries[-1].seq, "new_hash": entries[-1].hash}),
        )
        return entries
