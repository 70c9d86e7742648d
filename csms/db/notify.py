"""Wake-ups between nodes on PostgreSQL (ADR 13): a call queued for a station sends
NOTIFY on the outbox channel in the transaction that queues it, and each node LISTENs
on a connection of its own, so the node holding the station delivers at once instead
of at its next poll. Polling stays the fallback (and SQLite's only way): a lost
notification, or a listening connection that dropped, delays a call by one poll
interval, never loses it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

LOG = logging.getLogger("pkictl.notify")
OUTBOX_CHANNEL = "pkictl_outbox"


def notify_queued(connection: Connection, station_id: str) -> None:
    """In a unit of work that queued a call for ``station_id``: tell the nodes (sent on
    commit, dropped on rollback). Nothing on SQLite."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(OUTBOX_CHANNEL, station_id)))


@contextlib.asynccontextmanager
async def outbox_wakeups(engine: AsyncEngine, wake: Callable[[str], None]) -> AsyncIterator[bool]:
    """While open, ``wake(station_id)`` for every call queued on any node or by the CLI.
    Yields whether notifications are on (PostgreSQL and the LISTEN succeeded)."""
    if engine.dialect.name != "postgresql":
        yield False
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
