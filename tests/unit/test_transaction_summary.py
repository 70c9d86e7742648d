"""The TransactionEvent summary: its first and last energy register reading read from an
index (at the end of a long session the database must not sort every sample of the
transaction at each event: ix_meter_samples_register, migration 0018), and the row
merged by one upsert, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from csms.db.transactions import REGISTER_ENDS, SqlTransactionStore
from csms.domain.metering import ENERGY_REGISTER, Sample
from csms.services.transactions import TransactionEventRecord
from pki.store.sql import SqlStore


async def test_the_register_ends_are_read_in_index_order(sqlite_store: SqlStore) -> None:
    for statement in REGISTER_ENDS:
        sql = statement.params(station_id="CS001", transaction_id="TX-1").compile(
            sqlite_store.engine.sync_engine, compile_kwargs={"literal_binds": True}
        )
        async with sqlite_store.engine.connect() as connection:
            plan = " | ".join(
                row[-1] for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            )
        assert "ix_meter_samples_register" in plan
        assert "TEMP B-TREE" not in plan, plan


async def test_the_summary_merges_events_in_any_order(store: SqlStore) -> None:
    """The summary is written without being read: what was stored first wins, Started
    and Ended set their times whenever they arrive, every event counts once."""
    transactions = SqlTransactionStore(store.database)
    at = datetime(2026, 11, 27, 10, tzinfo=UTC)

    def event(kind: str, seq_no: int, minutes: int, **fields: Any) -> TransactionEventRecord:
        values: dict[str, Any] = {
            "id_token": None, "evse_id": None, "connector_id": None, "stopped_reason": None,
        } | fields  # fmt: skip
        when = at + timedelta(minutes=minutes)
        return TransactionEventRecord(
            "CS001", "TX-1", seq_no, kind, when, "MeterValuePeriodic", False,
            payload="{}", received_at=when, **values,
        )  # fmt: skip

    def register(minutes: int, wh: float) -> list[Sample]:
        return [Sample(at + timedelta(minutes=minutes), ENERGY_REGISTER, None, wh, "Wh")]

    # the offline queue delivers an Updated first, then Started, then Ended
    assert await transactions.record_event(
        event("Updated", 1, 10, id_token="LATE", evse_id=2), register(10, 1500.0)
    )
    assert await transactions.record_event(
        event("Started", 0, 0, id_token="FIRST", evse_id=1, connector_id=1), register(0, 1000.0)
    )
    assert await transactions.record_event(
        event("Ended", 2, 30, stopped_reason="Local"), register(30, 3250.0)
    )
    assert not await transactions.record_event(event("Updated", 1, 10), [])  # a replay
    [summary] = await transactions.list()
    assert (summary.id_token, summary.evse_id, summary.connector_id) == ("LATE", 2, 1)
    assert (summary.started_at, summary.ended_at) == (at, at + timedelta(minutes=30))
    assert summary.stopped_reason == "Local"
    assert (summary.meter_start_wh, summary.meter_stop_wh, summary.events) == (1000.0, 3250.0, 3)
