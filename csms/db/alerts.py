"""AlertStore on SQLAlchemy: the `alerts` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from csms.db.schema import alerts
from csms.services.alerts import Alert


class SqlAlertStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        code: str,
        station_id: str | None,
        message: str,
        at: datetime,
        once_key: str | None = None,
    ) -> int | None:
        try:
            async with self._engine.begin() as connection:
                result = await connection.execute(
                    insert(alerts)
                    .values(code=code, station_id=station_id, message=message, raised_at=at,
                            once_key=once_key)
                    .returning(alerts.c.id)
                )  # fmt: skip
                alert_id: int = result.scalar_one()
        except IntegrityError:
            if once_key is None:
                raise
            return None  # raised before
        return alert_id

    async def list(self, station_id: str | None, limit: int) -> list[Alert]:
        statement = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if station_id is not None:
            statement = statement.where(alerts.c.station_id == station_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [Alert(r.id, r.code, r.station_id, r.message, r.raised_at) for r in reversed(rows)]
