"""TokenStore on SQLAlchemy: the `id_tokens` table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from csms.db.schema import id_tokens
from csms.services.tokens import IdToken, TokenStatus
from pki.store.sql import upsert


class SqlTokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, id_token: str, type_: str) -> IdToken | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(id_tokens).where(
                        id_tokens.c.id_token == id_token, id_tokens.c.type == type_
                    )
                )
            ).first()
        return _token(row) if row else None

    async def save(self, token: IdToken) -> None:
        values = {
            "id_token": token.id_token,
            "type": token.type,
            "status": token.status.value,
            "created_at": token.created_at,
        }
        statement = upsert(self._engine.dialect, id_tokens, values).on_conflict_do_update(
            index_elements=[id_tokens.c.id_token, id_tokens.c.type],
            set_={"status": token.status.value},
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def list(self) -> list[IdToken]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(id_tokens).order_by(id_tokens.c.type, id_tokens.c.id_token)
                )
            ).all()
        return [_token(r) for r in rows]


def _token(row: Row[Any]) -> IdToken:
    return IdToken(row.id_token, row.type, TokenStatus(row.status), row.created_at)
