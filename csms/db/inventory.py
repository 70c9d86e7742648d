"""InventoryStore on SQLAlchemy: `installed_certificates`, replaced as a whole by each
answer, and `inventory_refreshes` (when, so that an empty inventory is told apart from
one never asked for)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from csms.db.schema import installed_certificates, inventory_refreshes
from csms.services.inventory import InstalledCertificate
from pki.hashdata import CertificateHashData
from pki.store.sql import upsert


class SqlInventoryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def replace(
        self, station_id: str, installed: Sequence[InstalledCertificate], at: datetime
    ) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(installed_certificates).where(
                    installed_certificates.c.station_id == station_id
                )
            )
            if installed:
                await connection.execute(
                    insert(installed_certificates),
                    [
                        {
                            "station_id": station_id,
                            "certificate_type": i.certificate_type,
                            "hash_data": json.dumps(i.hash_data.as_reported()),
                            "children": json.dumps([c.as_reported() for c in i.children]),
                        }
                        for i in installed
                    ],
                )
            statement = upsert(
                connection.dialect, inventory_refreshes,
                {"station_id": station_id, "refreshed_at": at},
            )  # fmt: skip
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["station_id"], set_={"refreshed_at": at}
                )
            )

    async def refreshed_at(self, station_id: str) -> datetime | None:
        async with self._engine.connect() as connection:
            found: datetime | None = (
                await connection.execute(
                    select(inventory_refreshes.c.refreshed_at).where(
                        inventory_refreshes.c.station_id == station_id
                    )
                )
            ).scalar_one_or_none()
        return found

    async def list(self, station_id: str) -> list[InstalledCertificate]:
        at = await self.refreshed_at(station_id)
        if at is None:
            return []
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(installed_certificates)
                .where(installed_certificates.c.station_id == station_id)
                .order_by(installed_certificates.c.id)
            )
            return [
                InstalledCertificate(
                    station_id,
                    r.certificate_type,
                    CertificateHashData.from_ocpp(json.loads(r.hash_data)),
                    tuple(CertificateHashData.from_ocpp(c) for c in json.loads(r.children)),
                    at,
                )
                for r in rows
            ]
