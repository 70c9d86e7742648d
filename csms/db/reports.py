"""ReportStore on SQLAlchemy: the `station_reports` table (writes inline on SQLite)."""

from __future__ import annotations

from sqlalchemy import insert, select

from csms.db.schema import station_reports
from csms.services.reports import Report
from pki.store.inline import Database
from pki.store.prepared import Prepared

REPORT_INSERT = Prepared(insert(station_reports))
"""Built once (statements built per report cost more than running them), run through
the driver on SQLite (`Prepared`)."""


class SqlReportStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def add(self, report: Report) -> None:
        row = {
            "station_id": report.station_id,
            "action": report.action,
            "received_at": report.received_at,
            "payload": report.payload,
        }
        await self._database.write(lambda connection: REPORT_INSERT.execute(connection, row))

    async def list(self, station_id: str, limit: int) -> list[Report]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(station_reports)
                    .where(station_reports.c.station_id == station_id)
                    .order_by(station_reports.c.id.desc())
                    .limit(limit)
                )
            ).all()
        return [Report(r.station_id, r.action, r.received_at, r.payload) for r in reversed(rows)]
