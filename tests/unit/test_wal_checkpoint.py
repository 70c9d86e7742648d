"""WAL checkpoints run on their own thread (pki.store.checkpoint): the event loop's
connections never copy the log back inside a COMMIT, and the log still stays small."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from pki.store.checkpoint import WalCheckpointer, without_autocheckpoint
from pki.store.schema import settings
from pki.store.sql import SqlStore

ROUND_ROWS = 300
PAYLOAD = "x" * 4000  # about a page per row


def _wal_database(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    without_autocheckpoint(connection)
    return connection


def _write_round(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO t (payload) VALUES (?)", [(PAYLOAD,)] * ROUND_ROWS)
    connection.execute("COMMIT")


def _wait_for_checkpoints(checkpointer: WalCheckpointer, more: int) -> None:
    until, target = time.monotonic() + 10, checkpointer.checkpoints + more
    while checkpointer.checkpoints < target:
        assert time.monotonic() < until, "the checkpoint thread did not run"
        time.sleep(0.01)


def test_the_log_is_reused_when_the_thread_checkpoints(tmp_path: Path) -> None:
    connection = _wal_database(tmp_path / "db.sqlite")
    wal = tmp_path / "db.sqlite-wal"
    _write_round(connection)
    one_round = wal.stat().st_size
    _write_round(connection)  # no autocheckpoint, no thread: the log grows
    assert wal.stat().st_size > 1.8 * one_round

    checkpointer = WalCheckpointer(str(tmp_path / "db.sqlite"), interval_s=0.02)
    checkpointer.start()
    try:
        _wait_for_checkpoints(checkpointer, 2)
        grown = wal.stat().st_size
        for _ in range(3):  # each round starts the log afresh: it does not grow
            _write_round(connection)
            _wait_for_checkpoints(checkpointer, 2)
        assert wal.stat().st_size == grown
    finally:
        checkpointer.close()
        connection.close()
    check = sqlite3.connect(tmp_path / "db.sqlite")
    assert check.execute("SELECT count(*) FROM t").fetchone() == (5 * ROUND_ROWS,)
    check.close()


async def test_the_loops_connections_leave_checkpoints_to_the_thread(
    sqlite_store: SqlStore,
) -> None:
    await sqlite_store.database.write(
        lambda connection: connection.execute(insert(settings).values(key="k", value="v"))
    )
    inline = await sqlite_store.database.read(
        lambda connection: connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    )
    fast = sqlite_store._fast  # the issuance path's own connection
    assert fast is not None
    assert fast.read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()) == (0,)
    assert inline == 0
    checkpointer = sqlite_store._checkpointer
    assert checkpointer is not None
    await sqlite_store.close()
    assert checkpointer.checkpoints >= 1  # the last one, at close


def _busy_processes(path: Path, stop: threading.Event) -> tuple[list[threading.Thread], list[int]]:
    """What two busy serving processes do to the database: one commits small
    transactions without pause, two others read in turns (each snapshot held for a
    moment, the next begun before it ends). Then some reader always reads from the log,
    and a commit always lands between a checkpoint and the next write: the log is never
    seen both copied back and unread, which is when a writer would start it afresh."""
    written = [0]

    def write() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        without_autocheckpoint(connection)
        while not stop.is_set():
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO t (payload) VALUES (?)", [(PAYLOAD,)] * 4)
            connection.execute("COMMIT")
            written[0] += 4
            time.sleep(0.0005)
        connection.close()

    def read(offset_s: float) -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        time.sleep(offset_s)
        while not stop.is_set():
            connection.execute("BEGIN")
            connection.execute("SELECT count(*) FROM t").fetchone()
            time.sleep(0.004)
            connection.execute("COMMIT")
        connection.close()

    threads = [threading.Thread(target=write)]
    threads += [threading.Thread(target=read, args=(offset,)) for offset in (0.0, 0.002)]
    for thread in threads:
        thread.start()
    return threads, written


@pytest.mark.parametrize("restarts", [True, False])
def test_the_log_stays_short_while_two_processes_are_busy(tmp_path: Path, restarts: bool) -> None:
    path = tmp_path / "db.sqlite"
    _wal_database(path).close()
    wal = tmp_path / "db.sqlite-wal"
    checkpointer = WalCheckpointer(
        str(path), interval_s=0.02, restart_frames=200 if restarts else 10**9
    )
    stop = threading.Event()
    holder = sqlite3.connect(path)  # (the log outlives the others: measured at the end)
    checkpointer.start()
    threads, written = _busy_processes(path, stop)
    try:
        _wait_for_checkpoints(checkpointer, 40)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        log_pages = wal.stat().st_size / 4096
        checkpointer.close()
        holder.close()
    assert written[0] > 1000  # pages, about
    if restarts:
        assert checkpointer.restarts >= 1
        assert log_pages < written[0] / 4
    else:  # as two serving processes saw before: each commit made the file longer
        assert log_pages > written[0] * 3 / 4
