"""Database and disk faults reach the user as one line and exit code 1, not as a
traceback (#22 item 21): a locked database, a read-only database file, a database path
that is a directory, a full disk. Nothing is half written.

Tests run as root, which ignores file permissions: a read-only file is made with
`chattr +i` and a full disk with a small tmpfs; each is skipped where the machine does
not allow it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_test_support import INIT_ARGS, Run, as_json, make_runner, query


def one_line_error(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: database "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def stations(home: Path) -> list[str]:
    return [row[0] for row in query(home, "SELECT id FROM stations")]


@pytest.mark.slow
def test_a_locked_database_is_one_line_and_exit_1(pkictl: Run, home: Path) -> None:
    holder = sqlite3.connect(home / "pkictl.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holding the database
        result = pkictl("station", "add", "CS900", "--serial", "SN-900", expect=1)
    finally:
        holder.close()
    line = one_line_error(result.stderr, "locked", str(home / "pkictl.db"))
    assert result.stdout == ""
    assert line.endswith("locked by another connection or process (SQLITE_BUSY)")
    assert "CS900" not in stations(home)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_database_is_one_line_and_exit_1(pkictl: Run, home: Path) -> None:
    with immutable(home / "pkictl.db"):
        assert len(as_json(pkictl("station", "list", "--json"))) == 0  # reading works
        result = pkictl("station", "add", "CS901", "--serial", "SN-901", expect=1)
        one_line_error(result.stderr, "read-only")
        serial = as_json(pkictl("cert", "list", "--json"))[0]["serial"]
        result = pkictl("cert", "revoke", serial, "--reason", "superseded", "--json", expect=1)
        assert as_json(result)["error"] == "StorageError"
        assert as_json(result)["exit_code"] == 1
    assert "CS901" not in stations(home)


def test_a_database_path_that_is_a_directory_is_one_line_and_exit_1(home: Path) -> None:
    """As a process of its own: aiosqlite's thread of the failed connection outlives
    the event loop, which only matters to a test runner that lives on."""
    (home / "pkictl.db").rename(home / "kept.db")
    (home / "pkictl.db").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKICTL_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pkictl"), "--home", str(home), "station", "list"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    one_line_error(done.stderr, "cannot open the database file")


def fill(directory: Path) -> None:
    with (directory / "filler").open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_a_full_disk_is_one_line_and_exit_1(home: Path, small_disk: Path) -> None:
    moved = small_disk / "ca"
    shutil.copytree(home, moved)
    pkictl = make_runner(moved)
    fill(small_disk)
    result = pkictl("station", "add", "CS902", "--serial", "SN-902", expect=1)
    one_line_error(result.stderr, "disk full")
    (small_disk / "filler").unlink()
    assert "CS902" not in stations(moved)
    pkictl("station", "add", "CS902", "--serial", "SN-902")  # room again: it works


@pytest.fixture
def read_only_view(home: Path, tmp_path: Path) -> Iterator[Path]:
    """The home seen through a read-only bind mount: a read-only home."""
    view = tmp_path / "read-only"
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(home), str(view)], capture_output=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(view)]
        done = subprocess.run(remount, capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.decode().strip()}")
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=True)


def test_a_read_only_home_is_one_line_and_exit_1(home: Path, read_only_view: Path) -> None:
    """SQLite in WAL mode cannot even read without creating its -shm file beside the
    database: every command says so in one line."""
    pkictl = make_runner(read_only_view)
    result = pkictl("station", "add", "CS903", "--serial", "SN-903", expect=1)
    one_line_error(result.stderr, "read-only file system", str(read_only_view / "pkictl.db"))
    one_line_error(pkictl("station", "list", expect=1).stderr, "read-only file system")
    one_line_error(pkictl("crl", "cso-root", expect=1).stderr, "read-only")
    assert "CS903" not in stations(home)


async def _set_read_only(url: str, on: bool) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute("SET default_transaction_read_only = off")
        name = parsed.database
        setting = (
            "SET default_transaction_read_only = on"
            if on
            else ("RESET default_transaction_read_only")
        )
        await connection.execute(f'ALTER DATABASE "{name}" {setting}')
    finally:
        await connection.close()


@pytest.mark.postgres
def test_a_read_only_postgresql_database_is_one_line_and_exit_1(
    tmp_path: Path, fresh_postgres: str
) -> None:
    import asyncio

    home = tmp_path / "ca"
    pkictl = make_runner(home, global_args=("--database-url", fresh_postgres))
    pkictl(*INIT_ARGS)
    asyncio.run(_set_read_only(fresh_postgres, True))
    try:
        result = pkictl("station", "add", "CS904", "--serial", "SN-904", expect=1)
    finally:
        asyncio.run(_set_read_only(fresh_postgres, False))
    line = one_line_error(result.stderr, "the database is read-only")
    assert "postgresql+asyncpg://" in line
    assert as_json(pkictl("station", "list", "--json")) == []
