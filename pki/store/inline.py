"""Units of work on SQLite run on the event loop's thread, committed together.

aiosqlite runs each statement in its own thread: a hop there and back per statement,
and on a loop busy with sockets every hop back waits for the GIL. For the CSMS's small
writes (a report, a transaction event with its samples, an outbox row) the hops cost
far more than SQLite does: a local WAL transaction takes tens of microseconds. So on a
file-backed SQLite database a unit of work -- a function of a synchronous SQLAlchemy
Connection -- runs inline, on a connection of its own with busy timeout 0.

Group commit: the units asked for during one turn of the loop (the messages of every
station whose frame arrived in that turn) run at the start of the next, one after the
other in one BEGIN IMMEDIATE transaction, each in a SAVEPOINT of its own -- a unit that
fails leaves nothing and the others go on -- and one COMMIT; then each caller gets its
result or its error. No caller hears of its write before it is committed, and a
unit is done even if its caller gave up waiting. The BEGIN
and the COMMIT (its WAL pages written once for all) were a quarter of a unit's cost.

If another connection or process holds the write lock, the batch tries again after
short pauses on the loop (`busy_pauses`), and only past the busy timeout its units
queue on the async engine (`AsyncConnection.run_sync`), each in a transaction of its
own; a call from another thread takes the async path at once. PostgreSQL always takes
the async path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import SingletonThreadPool

from pki.store.checkpoint import without_autocheckpoint
from pki.store.sqlite_fast import busy_pauses, is_busy, sqlite_file

T = TypeVar("T")
READ_ONLY = "pkictl.read_only"
Work = Callable[[Connection], T]
Queued = tuple[Work[Any], "asyncio.Future[Any]"]


class _Busy(Exception):
    """The write lock is held elsewhere: take the async path."""


def _busy(exc: OperationalError | sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY, from a statement (wrapped by SQLAlchemy) or from the BEGIN (sent to
    the driver directly)."""
    if isinstance(exc, sqlite3.OperationalError):
        return is_busy(exc)
    return isinstance(exc.orig, sqlite3.OperationalError) and is_busy(exc.orig)


def _inline_engine(path: str) -> Engine:
    engine = create_engine(f"sqlite:///{path}", poolclass=SingletonThreadPool, pool_size=1)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        without_autocheckpoint(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # a unit that writes takes the write lock at once (never a lock upgrade half
        # way); a read only snapshots
        # (straight to the driver: SQLAlchemy's execution machinery cost more than the
        # BEGIN itself, on every unit of work)
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.execute("BEGIN" if connection.info.get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


class Database:
    """The async engine, and (on a file SQLite database) the inline path beside it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        path = sqlite_file(str(engine.url)) if engine.dialect.name == "sqlite" else None
        self._inline = _inline_engine(path) if path else None
        self._held: Connection | None = None
        self._thread: int | None = None
        self._queued: list[Queued] = []
        self._retrying: set[asyncio.Future[None]] = set()

    async def write(self, work: Work[T]) -> T:
        """``work`` in one transaction (or savepoint), committed before this returns."""
        if self._inline is None or not self._on_loop_thread():
            return await self._run_async(work)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queued.append((work, done))
        if len(self._queued) == 1:
            loop.call_soon(self._commit_queued)
        result: T = await done
        return result

    def _commit_queued(self) -> None:
        """The units queued since the last turn, in one transaction (`write`)."""
        batch, self._queued = self._queued, []
        # a caller that gave up meanwhile still has its unit done (and not told): a
        # write asked for is never dropped -- callers record outcomes from `except
        # CancelledError:` handlers, as they could when a unit ran at once
        try:
            _settle(batch, self._run_units([work for work, _ in batch]))
        except _Busy:
            retry = asyncio.ensure_future(self._retry_busy(batch))
            self._retrying.add(retry)  # (a task is only weakly held by the loop)
            retry.add_done_callback(self._retrying.discard)
        except BaseException as exc:  # the BEGIN or the COMMIT: nothing is committed
            _settle(batch, [exc] * len(batch))
            if not isinstance(exc, Exception):
                raise

    async def _retry_busy(self, batch: list[Queued]) -> None:
        for pause in busy_pauses():
            await asyncio.sleep(pause)
            try:
                _settle(batch, self._run_units([work for work, _ in batch]))
            except _Busy:
                continue
            except Exception as exc:  # noqa: BLE001 -- handed to every caller
                _settle(batch, [exc] * len(batch))
            return
        # the lock stayed taken: each unit on the async engine
        await asyncio.gather(*(self._async_into(work, done) for work, done in batch))

    async def _async_into(self, work: Work[Any], done: asyncio.Future[Any]) -> None:
        try:
            outcome: Any = await self._run_async(work)
        except Exception as exc:  # noqa: BLE001 -- handed to the caller
            outcome = exc
        _settle([(work, done)], [outcome])

    async def read(self, work: Work[T]) -> T:
        """``work``, which only reads (inline on SQLite, one snapshot: WAL readers do
        not wait for writers; on PostgreSQL, at its READ COMMITTED)."""
        if self._inline is not None and self._on_loop_thread():
            held = self._connection()
            held.info[READ_ONLY] = True
            try:
                with held.begin():  # the snapshot ends with the work
                    return work(held)
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _busy(exc):  # (a WAL reader waits only in rare recovery cases)
                    self._drop()
                    raise
            finally:
                if not held.closed:  # (dropped after an error)
                    held.info.pop(READ_ONLY, None)
        async with self.engine.connect() as connection:
            return await connection.run_sync(work)

    async def _run_async(self, work: Work[T]) -> T:
        async with self.engine.begin() as connection:
            return await connection.run_sync(work)

    def _on_loop_thread(self) -> bool:
        """The inline connection belongs to the first thread that used it -- the event
        loop's, in `pkictl serve` and the CLI; a call from any other runs async."""
        current = threading.get_ident()
        if self._thread is None:
            self._thread = current
        return self._thread == current

    def _connection(self) -> Connection:
        """The inline connection, held open between units of work: opening and closing
        a SQLAlchemy Connection (pool checkout, reset on return) for every unit cost
        about as much as a small unit itself."""
        if self._held is None:
            assert self._inline is not None
            self._held = self._inline.connect()
        return self._held

    def _drop(self) -> None:
        """Forget the held connection after an unexpected database error: the next
        unit of work starts on a fresh one."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _run_units(self, units: list[Work[Any]]) -> list[Any]:
        """Each unit's result, or the exception it raised (its savepoint rolled back),
        all committed in one transaction; _Busy if the write lock is held elsewhere."""
        outcomes: list[Any] = []
        if not units:
            return outcomes
        connection = self._connection()
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        try:
            with connection.begin():
                for work in units:
                    driver.execute("SAVEPOINT unit")
                    try:
                        outcomes.append(work(connection))
                    except (OperationalError, sqlite3.OperationalError):
                        raise  # the database, not the unit: the whole batch
                    except Exception as exc:  # noqa: BLE001 -- handed to its caller
                        driver.execute("ROLLBACK TO unit")
                        outcomes.append(exc)
                    driver.execute("RELEASE unit")
        except (OperationalError, sqlite3.OperationalError) as exc:
            if _busy(exc):
                raise _Busy from None  # rolled back by the context manager
            self._drop()
            raise
        return outcomes

    def close(self) -> None:
        self._drop()
        if self._inline is not None:
            self._inline.dispose()


def _settle(batch: list[Queued], outcomes: list[Any]) -> None:
    """Each caller its result, or its exception raised; one that gave up is skipped."""
    for (_, done), outcome in zip(batch, outcomes, strict=True):
        if done.done():
            continue
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)
