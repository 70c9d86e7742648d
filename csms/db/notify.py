"""Wake-ups between nodes (ADR 13), so that the node holding a station delivers a call
queued elsewhere (another node, the CLI) at once instead of at its next poll.

- PostgreSQL: the transaction that queues a call sends NOTIFY on the outbox channel,
  and each node LISTENs on a connection of its own.
- SQLite (every node on the database's host): once the call is committed, a datagram
  with the station id goes to each node's Unix socket in ``<database file>.wake/``
  (one socket per serving process, named by its pid, private to the home's owner).

Polling stays the fallback: a lost notification or datagram, or a node that could not
listen, delays a call by one poll interval, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pki.store.sqlite_fast import sqlite_file

LOG = logging.getLogger("pkictl.notify")
OUTBOX_CHANNEL = "pkictl_outbox"
SOCKET_PATH_MAX = 107  # sun_path, less its NUL
_LISTENING_HERE: set[str] = set()  # this process's sockets: it wakes itself in-process


def notify_queued(connection: Connection, station_id: str) -> None:
    """In a unit of work that queued a call for ``station_id``: tell the nodes (sent on
    commit, dropped on rollback). PostgreSQL only: see `announce_queued`."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(OUTBOX_CHANNEL, station_id)))


def announce_queued(url: URL, station_id: str) -> None:
    """After the commit of a call queued for ``station_id``: tell the other nodes on
    SQLite (nothing elsewhere). Never raises: a node that misses it polls."""
    directory = wake_directory(url)
    if directory is None:
        return
    try:
        sockets = [entry.path for entry in os.scandir(directory) if entry.name.endswith(".sock")]
    except OSError:
        return  # no node has listened here yet
    payload = station_id.encode()
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:  # out of file descriptors, say: the call is queued, the poll finds it
        return
    with sender:
        sender.setblocking(False)
        for path in sockets:
            if path in _LISTENING_HERE:
                continue
            try:
                sender.sendto(payload, path)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # its node was killed: nobody reads it
                    with contextlib.suppress(OSError):
                        Path(path).unlink()
                # EAGAIN: its queue is full of wake-ups it has yet to act on


@functools.lru_cache(maxsize=8)
def wake_directory(url: URL) -> Path | None:
    """Where the serving processes on the SQLite database at ``url`` bind their sockets
    (None: not a file database)."""
    file = sqlite_file(url.render_as_string(hide_password=False))
    return None if file is None else Path(file).resolve().parent / f"{Path(file).name}.wake"


@contextlib.asynccontextmanager
async def _datagram_wakeups(directory: Path, wake: Callable[[str], None]) -> AsyncIterator[bool]:
    """This process's socket in the wake directory while open; ``wake`` for each
    datagram. Yields False (polling only) where it cannot listen."""
    receiver = _bind(directory / f"{os.getpid()}.sock")
    if receiver is None:
        yield False
        return

    def readable() -> None:
        for _ in range(256):  # then the loop's other work gets a turn
            try:
                wake(receiver.recv(256).decode(errors="replace"))
            except BlockingIOError:
                return

    loop = asyncio.get_running_loop()
    loop.add_reader(receiver.fileno(), readable)
    _LISTENING_HERE.add(receiver.getsockname())
    try:
        yield True
    finally:
        loop.remove_reader(receiver.fileno())
        _unbind(receiver)


def _unbind(receiver: socket.socket) -> None:
    path = receiver.getsockname()
    _LISTENING_HERE.discard(path)
    receiver.close()
    with contextlib.suppress(OSError):
        Path(path).unlink()


def _bind(path: Path) -> socket.socket | None:
    """A non-blocking datagram socket bound at ``path``, or None (logged)."""
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        LOG.warning("outbox wake-ups are off (polling only): %s is too long a socket path", path)
        return None
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.unlink(missing_ok=True)  # left by a dead process that had our pid
        receiver.bind(str(path))
        receiver.setblocking(False)
    except OSError as exc:
        receiver.close()
        LOG.warning("outbox wake-ups are off (polling only): %s", exc)
        return None
    return receiver


@contextlib.asynccontextmanager
async def outbox_wakeups(engine: AsyncEngine, wake: Callable[[str], None]) -> AsyncIterator[bool]:
    """While open, ``wake(station_id)`` for every call queued on any node or by the CLI.
    Yields whether wake-ups are on (the LISTEN succeeded, or the socket is bound)."""
    if engine.dialect.name != "postgresql":
        directory = wake_directory(engine.url)
        if directory is None:
            yield False
            return
        async with _datagram_wakeups(directory, wake) as listening:
            yield listening
        return
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 -- PostgreSQL only

    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def received(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
        wake(payload)

    try:
        listener = await asyncpg.connect(dsn, timeout=10)
        await listener.add_listener(OUTBOX_CHANNEL, received)
    except (OSError, asyncpg.PostgresError) as exc:
        LOG.warning("outbox notifications are off (polling only): %s", exc)
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await listener.close(timeout=5)
