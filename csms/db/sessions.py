"""SessionStore on SQLAlchemy: the `station_sessions` table."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from csms.db.schema import station_sessions
from csms.services.sessions import SessionRecord
from pki.records import CertificateStatus
from pki.store.inline import Database
from pki.store.schema import certificates
from pki.store.sql import upsert


class SqlSessionStore:
    """Connections, disconnections and sightings are units of work: inline on SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine
        # Built once: at every connection, building the upsert cost more than running it.
        names = [column.name for column in station_sessions.c]
        insert_ = upsert(self._engine.dialect, station_sessions, {n: bindparam(n) for n in names})
        self._save = insert_.on_conflict_do_update(
            index_elements=[station_sessions.c.station_id],
            set_={n: insert_.excluded[n] for n in names if n != "station_id"},
        )

    async def save(self, record: SessionRecord) -> None:
        values = asdict(record)
        await self._database.write(lambda connection: connection.execute(self._save, values))

    async def seen(self, station_id: str, at: datetime) -> None:
        statement = (
            update(station_sessions)
            .where(station_sessions.c.station_id == station_id)
            .values(last_seen=at)
        )
        await self._database.write(lambda connection: connection.execute(statement))

    async def offline(self, station_id: str, node_id: str | None, at: datetime) -> None:
        statement = (
            update(station_sessions)
            .where(station_sessions.c.station_id == station_id,
                   station_sessions.c.node_id.is_(None) if node_id is None
                   else station_sessions.c.node_id == node_id)
            .values(online=False, last_seen=at)
        )  # fmt: skip
        await self._database.write(lambda connection: connection.execute(statement))

    async def held_elsewhere(self, station_ids: list[str], node_id: str) -> list[str]:
        def work(connection: Connection) -> list[str]:
            found: list[str] = []
            for start in range(0, len(station_ids), 500):  # bounded IN lists
                found += connection.execute(
                    select(station_sessions.c.station_id).where(
                        station_sessions.c.station_id.in_(station_ids[start : start + 500]),
                        station_sessions.c.node_id != node_id,
                    )
                ).scalars()
            return found

        return await self._database.read(work)

    async def revoked_serials(self, serials: list[str]) -> set[str]:
        def work(connection: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(serials), 500):  # bounded IN lists
                found.update(
                    connection.execute(
                        select(certificates.c.serial_hex).where(
                            certificates.c.serial_hex.in_(serials[start : start + 500]),
                            certificates.c.status == CertificateStatus.REVOKED.value,
                        )
                    ).scalars()
                )
            return found

        return await self._database.read(work)

    async def list(self) -> list[SessionRecord]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(station_sessions).order_by(station_sessions.c.station_id)
                )
            ).all()
        return [SessionRecord(**row._asdict()) for row in rows]
