"""ResponseLog on SQLAlchemy: `ocsp_responses`, one row per CertID, replaced by the
newest response."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import Row, select

from csms.db.schema import ocsp_responses
from csms.services.ocsp import LoggedResponse
from pki.store.inline import Database
from pki.store.sql import upsert

TABLE = ocsp_responses
KEY = ("algorithm", "issuer_name_hash", "issuer_key_hash", "serial_hex")


def _response(row: Row[Any]) -> LoggedResponse:
    return LoggedResponse(**{k: getattr(row, k) for k in LoggedResponse.__dataclass_fields__})


class SqlResponseLog:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def keep(self, response: LoggedResponse) -> None:
        values = asdict(response)
        statement = upsert(self._engine.dialect, TABLE, values).on_conflict_do_update(
            index_elements=list(KEY), set_={k: v for k, v in values.items() if k not in KEY}
        )
        await self._database.write(lambda connection: connection.execute(statement))

    async def get(
        self, algorithm: str, issuer_name_hash: str, issuer_key_hash: str, serial_hex: str
    ) -> LoggedResponse | None:
        statement = select(TABLE).where(
            TABLE.c.algorithm == algorithm,
            TABLE.c.issuer_name_hash == issuer_name_hash,
            TABLE.c.issuer_key_hash == issuer_key_hash,
            TABLE.c.serial_hex == serial_hex,
        )
        row = await self._database.read(lambda connection: connection.execute(statement).first())
        return _response(row) if row else None

    async def list(self, limit: int) -> list[LoggedResponse]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(TABLE).order_by(TABLE.c.produced_at.desc()).limit(limit)
            )
            return [_response(r) for r in rows]
