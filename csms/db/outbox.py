"""OutboxStore on SQLAlchemy: the `outbox` table. State changes are conditional updates
(WHERE state = the expected one), so two deliverers never both send a call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from csms.db.notify import announce_queued, notify_queued
from csms.db.schema import outbox
from csms.domain.outbox import CallState
from csms.services.outbox import OutboxItem
from pki.store.inline import Database


class SqlOutboxStore:
    """The delivery path (add, oldest queued, move) runs as units of work: inline on
    SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def add(
        self, station_id: str, action: str, payload: str, at: datetime, *, announce: bool = True
    ) -> int:
        statement = (
            insert(outbox)
            .values(
                station_id=station_id, action=action, payload=payload,
                state=CallState.QUEUED.value, attempts=0, created_at=at,
            )
            .returning(outbox.c.id)
        )  # fmt: skip

        def work(connection: Connection) -> int:
            item_id: int = connection.execute(statement).scalar_one()
            if announce:
                notify_queued(connection, station_id)
            return item_id

        item_id = await self._database.write(work)
        if announce:
            announce_queued(self._engine.url, station_id)
        return item_id

    async def oldest_queued(
        self, station_id: str, actions: frozenset[str] | None = None
    ) -> OutboxItem | None:
        statement = (
            select(outbox)
            .where(outbox.c.station_id == station_id, outbox.c.state == CallState.QUEUED)
            .order_by(outbox.c.id)
            .limit(1)
        )
        if actions is not None:
            statement = statement.where(outbox.c.action.in_(sorted(actions)))
        row = await self._database.read(lambda connection: connection.execute(statement).first())
        return _item(row) if row else None

    async def move(
        self,
        item_id: int,
        from_state: CallState,
        to_state: CallState,
        at: datetime,
        *,
        response: str | None = None,
        error: str | None = None,
        node_id: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {"state": to_state.value}
        if to_state is CallState.SENT:
            values.update(sent_at=at, attempts=outbox.c.attempts + 1, node_id=node_id)
        elif to_state is not CallState.QUEUED:
            values.update(finished_at=at, response=response, error=error)
        statement = (
            update(outbox)
            .where(outbox.c.id == item_id, outbox.c.state == from_state.value)
            .values(values)
        )
        moved: int = await self._database.write(
            lambda connection: connection.execute(statement).rowcount
        )
        return bool(moved)

    async def stations_with_queued(self, station_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        async with self._engine.connect() as connection:
            for start in range(0, len(station_ids), 500):  # bounded IN lists
                chunk = station_ids[start : start + 500]
                rows = await connection.execute(
                    select(outbox.c.station_id)
                    .where(outbox.c.state == CallState.QUEUED.value, outbox.c.station_id.in_(chunk))
                    .distinct()
                )
                found += [r.station_id for r in rows]
        return found

    async def list(self, station_id: str | None, limit: int) -> list[OutboxItem]:
        statement = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if station_id is not None:
            statement = statement.where(outbox.c.station_id == station_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_item(r) for r in reversed(rows)]


def _item(row: Row[Any]) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        station_id=row.station_id,
        action=row.action,
        payload=json.loads(row.payload),
        state=CallState(row.state),
        attempts=row.attempts,
        created_at=row.created_at,
        sent_at=row.sent_at,
        finished_at=row.finished_at,
        response=json.loads(row.response) if row.response else None,
        error=row.error,
    )
