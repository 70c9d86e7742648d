"""SQLite wake-ups between the processes on one database (csms.db.notify): real Unix
datagram sockets in the wake directory next to the database file."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from csms.db.notify import announce_queued, outbox_wakeups


async def test_a_call_announced_reaches_each_listening_node_and_clears_dead_ones(
    tmp_path: Path,
) -> None:
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'pkictl.db'}")
    directory = tmp_path / "pkictl.db.wake"
    directory.mkdir()
    other_node = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other_node.bind(str(directory / "1.sock"))
    dead_node = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead_node.bind(str(directory / "2.sock"))
    dead_node.close()  # killed: its socket file stays behind
    with other_node:
        announce_queued(url, "CS001")
        assert other_node.recv(256) == b"CS001"
    assert not (directory / "2.sock").exists()


def test_no_socket_to_send_from_loses_nothing_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near the open-files limit (a node with 20,000 stations) the announcement is
    skipped: the call is committed already, and the poll finds it."""
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'pkictl.db'}")
    (tmp_path / "pkictl.db.wake").mkdir()

    def no_descriptors(*_: object) -> socket.socket:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_descriptors)
    announce_queued(url, "CS001")  # does not raise


async def test_a_node_is_woken_by_others_not_by_itself(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'pkictl.db'}")
    woken: list[str] = []
    async with outbox_wakeups(engine, woken.append) as listening:
        assert listening
        (path,) = (tmp_path / "pkictl.db.wake").glob("*.sock")
        announce_queued(engine.url, "CS001")  # by this process: it wakes itself in-process
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as cli:
            cli.sendto(b"CS002", str(path))  # as another process's announce does
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.01)
    assert woken == ["CS002"]
    assert not path.exists()
    await engine.dispose()


async def test_too_long_a_socket_path_leaves_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    engine = create_async_engine(f"sqlite+aiosqlite:///{deep / 'pkictl.db'}")
    async with outbox_wakeups(engine, lambda _: None) as listening:
        assert not listening
    assert "polling only" in caplog.text
    await engine.dispose()
