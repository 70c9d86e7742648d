"""Faults of the database and the disk under it, told apart from bugs (#22 item 21).

A locked SQLite database, a read-only file or file system, a full disk, an unreachable
PostgreSQL server: the edges (the CLI, `/health`, the log) say so in one line instead
of a traceback. `storage_fault` looks through the exception and what it wraps
(SQLAlchemy wraps the driver's error) and returns the cause, or None for anything else.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from pki.store.sqlite_fast import sqlite_file

# SQLite's primary result codes (https://www.sqlite.org/rescode.html)
_SQLITE_CAUSES = {
    5: "locked by another connection or process (SQLITE_BUSY)",
    6: "locked (SQLITE_LOCKED)",
    8: "read-only: the file, its directory or the file system cannot be written",
    10: "disk I/O error",
    11: "the database file is corrupt",
    13: "disk full",
    14: "cannot open the database file (missing directory, not a file, or no permission)",
    26: "not a database file",
}
_SQLITE_MESSAGES = (  # when the driver gives no code: its message
    ("locked", 5), ("readonly", 8), ("read-only", 8), ("disk is full", 13),
    ("disk i/o", 10), ("unable to open", 14), ("malformed", 11), ("not a database", 26),
)  # fmt: skip
_OS_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "I/O error",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (immutable or protected file?)",
    errno.ECONNREFUSED: "connection refused",
}
# PostgreSQL SQLSTATE classes and codes of a server that cannot do the work
_PG_CAUSES = {
    "08": "connection to the database server failed",
    "53": "the database server is out of resources (disk, memory or connections)",
    "57P": "the database server is shutting down or not accepting connections",
    "25006": "the database is read-only (a standby, or default_transaction_read_only)",
    "53100": "the database server's disk is full",
}


@dataclass(frozen=True)
class Fault:
    where: str
    """"database" or "disk"."""
    cause: str
    detail: str | None = None
    """What the driver or the OS said (a file name, a server message): for the operator."""

    def message(self, location: str | None = None) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        if self.where == "disk":  # the cause says "disk full", "read-only file system"...
            return f"{self.cause}{detail}"
        at = f" {location}" if location else ""
        return f"{self.where}{at}: {self.cause}{detail}"

    def public(self) -> str:
        """The cause without where or what exactly (no URL, path or server message):
        fit for `/health`, which anyone reaching the HTTP port may read."""
        return self.cause if self.where == "disk" else f"{self.where}: {self.cause}"


def storage_fault(exc: BaseException) -> Fault | None:
    """The database or disk fault ``exc`` is (or wraps), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fault = _describe(current)
        if fault is not None:
            return fault
        current = current.__cause__ or current.__context__
    return None


def describe(fault: Fault, url: str | None) -> str:
    """The one-line message of ``fault`` for the database at ``url``: the URL (password
    hidden), the cause, and for a SQLite file on a full file system, that it is full
    (SQLite reports a write that found no room as a disk I/O error at times)."""
    if fault.where != "database" or url is None:
        return fault.message()
    message = fault.message(redacted(url))
    path = sqlite_file(url)
    if path is not None:
        directory = Path(path).parent
        status = _status(directory)
        if status is not None and status.f_flag & os.ST_RDONLY and "read-only" not in fault.cause:
            message += f" (read-only file system: {directory})"
        elif status is not None and "disk full" not in fault.cause:
            free = status.f_bavail * status.f_frsize
            if free < FULL_BELOW_BYTES:
                message += f" (disk full: {free} bytes free in {directory})"
    return message


FULL_BELOW_BYTES = 64 * 1024
"""Less free space than this under a SQLite database: its disk is full (a write needs a
few pages in the WAL)."""


def _status(directory: Path) -> os.statvfs_result | None:
    try:
        return os.statvfs(directory)
    except OSError:
        return None


def redacted(url: str) -> str:
    """A database URL fit for a message: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- not a URL SQLAlchemy reads: say nothing of it
        return "(the configured database)"


def _describe(exc: BaseException) -> Fault | None:
    if isinstance(exc, DBAPIError):
        wrapped = _describe(exc.orig) if exc.orig is not None else None
        return wrapped or _driver_fault(exc)
    if isinstance(exc, sqlite3.Error):
        return _sqlite_fault(exc)
    if isinstance(exc, PoolTimeoutError):
        return Fault("database", "no connection free within the pool timeout (overloaded?)")
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _pg_fault(sqlstate, exc)
    if isinstance(exc, OSError) and exc.errno in _OS_CAUSES:
        where = "database" if exc.errno == errno.ECONNREFUSED else "disk"
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        return Fault(where, _OS_CAUSES[exc.errno], detail)
    return None


def _sqlite_fault(exc: sqlite3.Error) -> Fault | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        text = str(exc).lower()
        code = next((c for words, c in _SQLITE_MESSAGES if words in text), None)
    cause = _SQLITE_CAUSES.get(code & 0xFF) if code is not None else None
    return Fault("database", cause) if cause else None


def _pg_fault(sqlstate: str, exc: BaseException) -> Fault | None:
    for prefix in (sqlstate, sqlstate[:3], sqlstate[:2]):
        if prefix in _PG_CAUSES:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return Fault("database", _PG_CAUSES[prefix], first)
    return None


def _driver_fault(exc: DBAPIError) -> Fault | None:
    """A driver error with no code we know: a lost connection still is a fault."""
    if exc.connection_invalidated:
        first = str(exc.orig).splitlines()[0] if exc.orig is not None else ""
        return Fault("database", "connection lost", first or None)
    return None
