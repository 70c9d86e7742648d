"""SessionStore on SQLAlchemy: the `station_sessions` table."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from csms.db.schema import station_sessions
from csms.services.sessions import SessionRecord
from pki.store.sql import upsert


class SqlSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(self, record: SessionRecord) -> None:
        values = asdict(record)
        statement = upsert(self._engine.dialect, station_sessions, values).on_conflict_do_update(
            index_elements=[station_sessions.c.station_id], set_=values
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def seen(self, station_id: str, at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(station_sessions)
                .where(station_sessions.c.station_id == station_id)
                .values(last_seen=at)
            )

    async def offline(self, station_id: str, at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(station_sessions)
                .where(station_sessions.c.station_id == station_id)
                .values(online=False, last_seen=at)
            )

    async def all_offline(self, at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(station_sessions)
                .where(station_sessions.c.online.is_(True))
                .values(online=False)
            )

    async def list(self) -> list[SessionRecord]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(station_sessions).order_by(station_sessions.c.station_id)
                )
            ).all()
        return [SessionRecord(**row._asdict()) for row in rows]
