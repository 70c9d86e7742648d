"""CampaignStore on SQLAlchemy: `rollover_stations`, one row per station and rollover.
Every step is a conditional update (WHERE state = the expected one), so an answer
handled twice moves the entry once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from csms.db.schema import rollover_stations
from csms.domain.rollover import InstallMethod, StationRolloverState
from csms.services.rollover import CampaignEntry

TABLE = rollover_stations


def _entry(row: Row[Any]) -> CampaignEntry:
    return CampaignEntry(
        rollover_id=row.rollover_id, station_id=row.station_id,
        state=StationRolloverState(row.state),
        method=InstallMethod(row.method) if row.method else None,
        outbox_id=row.outbox_id, reason=row.reason, updated_at=row.updated_at,
    )  # fmt: skip


class SqlCampaignStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self, rollover_id: int, station_id: str, outbox_id: int | None, at: datetime
    ) -> bool:
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(TABLE).values(
                        rollover_id=rollover_id,
                        station_id=station_id,
                        state=StationRolloverState.PENDING.value,
                        outbox_id=outbox_id,
                        updated_at=at,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def by_call(self, outbox_id: int) -> CampaignEntry | None:
        return await self._one(TABLE.c.outbox_id == outbox_id)

    async def get(self, rollover_id: int, station_id: str) -> CampaignEntry | None:
        return await self._one((TABLE.c.rollover_id == rollover_id)
                               & (TABLE.c.station_id == station_id))  # fmt: skip

    async def move(
        self, entry: CampaignEntry, to_state: StationRolloverState, at: datetime,
        **fields: Any,
    ) -> bool:  # fmt: skip
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(TABLE)
                .where(
                    TABLE.c.rollover_id == entry.rollover_id,
                    TABLE.c.station_id == entry.station_id,
                    TABLE.c.state == entry.state.value,
                )
                .values(state=to_state.value, updated_at=at, **fields)
            )
        return bool(result.rowcount == 1)

    async def list(self, rollover_id: int) -> list[CampaignEntry]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(TABLE).where(TABLE.c.rollover_id == rollover_id)
                .order_by(TABLE.c.station_id)
            )  # fmt: skip
            return [_entry(r) for r in rows]

    async def _one(self, condition: Any) -> CampaignEntry | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(TABLE).where(condition))).first()
        return _entry(row) if row else None
