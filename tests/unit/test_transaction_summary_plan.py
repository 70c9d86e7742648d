"""The TransactionEvent summary reads a transaction's first and last energy register
reading from an index: at the end of a long session the database must not sort every
sample of the transaction at each event (ix_meter_samples_register, migration 0018)."""

from __future__ import annotations

from sqlalchemy import text

from csms.db.transactions import register_ends
from pki.store.sql import SqlStore


async def test_the_register_ends_are_read_in_index_order(sqlite_store: SqlStore) -> None:
    for statement in register_ends("CS001", "TX-1"):
        sql = statement.compile(
            sqlite_store.engine.sync_engine, compile_kwargs={"literal_binds": True}
        )
        async with sqlite_store.engine.connect() as connection:
            plan = " | ".join(
                row[-1] for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            )
        assert "ix_meter_samples_register" in plan
        assert "TEMP B-TREE" not in plan, plan
