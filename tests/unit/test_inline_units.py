"""Units of work on SQLite (pki.store.inline.Database): inline on the loop, all or
nothing, and -- while another connection holds the write lock -- still done, on the
async path, once the lock is free."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, event, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from pki.store.schema import settings
from pki.store.sql import SqlStore


def put(key: str, value: str) -> Callable[[Connection], object]:
    return lambda connection: connection.execute(insert(settings).values(key=key, value=value))


def value_of(key: str) -> Callable[[Connection], str | None]:
    return lambda connection: connection.execute(
        select(settings.c.value).where(settings.c.key == key)
    ).scalar_one_or_none()


async def test_a_failing_unit_leaves_nothing(sqlite_store: SqlStore) -> None:
    database = sqlite_store.database

    def half_then_fail(connection: Connection) -> None:
        connection.execute(insert(settings).values(key="half", value="written"))
        connection.execute(insert(settings).values(key="half", value="again"))  # duplicate

    with pytest.raises(IntegrityError):
        await database.write(half_then_fail)
    assert await database.read(value_of("half")) is None


async def test_a_unit_waits_out_another_process_holding_the_write_lock(
    sqlite_store: SqlStore,
) -> None:
    database = sqlite_store.database
    path = sqlite_store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)  # another process, as the CLI
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO settings (key, value) VALUES ('other', 'first')")
    write = asyncio.create_task(database.write(put("mine", "second")))
    await asyncio.sleep(0.2)
    assert not write.done()  # not written past the lock, not failed either
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 15)
    assert await database.read(value_of("mine")) == "second"
    assert await database.read(value_of("other")) == "first"


async def test_units_wait_for_the_lock_on_the_loop_not_on_the_async_path(
    sqlite_store: SqlStore,
) -> None:
    """A unit that found the lock taken and queued on the async path would hold the lock
    across thread hops once it got it, sending every unit behind it the same way (a
    convoy that held outbox moves for seconds in a renewal campaign). They wait on the
    loop instead and never touch the async engine while the lock comes free in time."""
    database = sqlite_store.database
    async_transactions: list[object] = []
    event.listen(sqlite_store.engine.sync_engine, "begin", async_transactions.append)
    path = sqlite_store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writes = [asyncio.create_task(database.write(put(f"k{i}", "v"))) for i in range(20)]
    await asyncio.sleep(0.3)  # well past the old retries (31 ms), well inside the timeout
    assert not any(write.done() for write in writes)
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(asyncio.gather(*writes), 15)
    assert [await database.read(value_of(f"k{i}")) for i in range(20)] == ["v"] * 20
    assert async_transactions == []


async def test_units_go_on_after_a_database_error(sqlite_store: SqlStore) -> None:
    """The inline connection is held between units; one a unit broke is replaced."""
    database = sqlite_store.database
    with pytest.raises(OperationalError):
        await database.write(lambda connection: connection.execute(text("SELECT * FROM nowhere")))
    with pytest.raises(OperationalError):
        await database.read(lambda connection: connection.execute(text("SELECT * FROM nowhere")))
    await database.write(put("after", "error"))
    assert await database.read(value_of("after")) == "error"


async def test_units_of_one_turn_commit_together(sqlite_store: SqlStore) -> None:
    """Group commit: the units asked for in one turn of the loop share one transaction;
    a failing one among them leaves nothing of its own and takes nothing of the others'."""
    database = sqlite_store.database
    commits: list[object] = []
    await database.write(put("warm", "up"))  # the inline engine exists from here on
    event.listen(database._inline, "commit", commits.append)

    def half_then_fail(connection: Connection) -> None:
        connection.execute(insert(settings).values(key="half", value="written"))
        raise RuntimeError("the unit's own failure")

    units = [put(f"g{i}", "v") for i in range(10)]
    units.insert(5, half_then_fail)
    outcomes = await asyncio.gather(*(database.write(u) for u in units), return_exceptions=True)
    assert len(commits) == 1
    assert [type(o) for o in outcomes].count(RuntimeError) == 1
    assert isinstance(outcomes[5], RuntimeError)
    assert await database.read(value_of("half")) is None
    assert [await database.read(value_of(f"g{i}")) for i in range(10)] == ["v"] * 10


async def test_a_unit_is_done_even_if_its_caller_gives_up_before_the_commit(
    sqlite_store: SqlStore,
) -> None:
    """A write asked for is never dropped: callers record outcomes from `except
    CancelledError:` handlers (the outbox puts a call back in the queue there), and a
    second cancellation must not lose that write."""
    database = sqlite_store.database
    kept = asyncio.create_task(database.write(put("kept", "v")))
    given_up = asyncio.create_task(database.write(put("given-up", "v")))
    await asyncio.sleep(0)  # both queued
    given_up.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await given_up
    assert await database.read(value_of("kept")) == "v"
    assert await database.read(value_of("given-up")) == "v"


async def test_units_go_to_the_async_path_when_the_lock_stays_taken(
    sqlite_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the pauses on the loop, each unit of the batch queues on the async engine
    (which waits for the lock with its own busy timeout) and is done there."""
    monkeypatch.setattr("pki.store.inline.busy_pauses", lambda: iter([0.01, 0.01]))
    database = sqlite_store.database
    on_async_path: list[object] = []
    run_async = database._run_async

    async def counted(work: Callable[[Connection], object]) -> object:
        on_async_path.append(work)
        return await run_async(work)

    monkeypatch.setattr(database, "_run_async", counted)
    path = sqlite_store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writes = [asyncio.create_task(database.write(put(f"a{i}", "v"))) for i in range(3)]
    await asyncio.sleep(0.3)
    assert len(on_async_path) == 3  # each waiting for the lock on the async engine
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(asyncio.gather(*writes), 15)
    assert [await database.read(value_of(f"a{i}")) for i in range(3)] == ["v"] * 3
