"""The TransactionEvent summary, merged by one upsert without a read, on SQLite and
PostgreSQL: what was stored first wins, Started/Ended set their times, and the first and
last energy register reading are the earliest and latest of all events' readings
(migration 0019 keeps their times in the row, and fills them in for stored ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import create_engine

from csms.db.transactions import SqlTransactionStore
from csms.domain.metering import ENERGY_REGISTER, Sample
from csms.services.transactions import TransactionEventRecord
from pki.store.sql import SqlStore, _alembic_config


def test_migration_0019_fills_in_the_times_of_stored_readings(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0018")
        connection.exec_driver_sql(
            "INSERT INTO transactions (station_id, transaction_id, meter_start_wh, "
            "meter_stop_wh, events, updated_at) VALUES "
            "('CS001', 'TX-1', 1000, 3000, 3, '2026-11-27 10:30:00'), "
            "('CS001', 'TX-2', NULL, NULL, 1, '2026-11-27 10:30:00')"
        )
        samples = [(5, ENERGY_REGISTER, 1000.0), (1, "Power.Active.Import", 7.0),
                   (9, ENERGY_REGISTER, 2000.0), (20, ENERGY_REGISTER, 3000.0)]  # fmt: skip
        connection.exec_driver_sql(
            "INSERT INTO meter_samples (station_id, transaction_id, timestamp, measurand, "
            "value) VALUES ('CS001', 'TX-1', ?, ?, ?)",
            [
                (f"2026-11-27 10:{minute:02}:00", measurand, value)
                for minute, measurand, value in samples
            ],
        )
        command.upgrade(_alembic_config(connection), "head")
        rows = connection.exec_driver_sql(
            "SELECT transaction_id, meter_start_at, meter_stop_at FROM transactions "
            "ORDER BY transaction_id"
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("TX-1", "2026-11-27 10:05:00", "2026-11-27 10:20:00"),
        ("TX-2", None, None),
    ]


async def test_the_register_ends_are_the_earliest_and_latest_readings(store: SqlStore) -> None:
    """Several readings per event, in any order of events; other measurands, phases and
    units that are not energy do not count; kWh is converted; ties go by value."""
    transactions = SqlTransactionStore(store.database)
    at = datetime(2026, 11, 27, 10, tzinfo=UTC)

    def sample(minutes: int, value: float, measurand: str = ENERGY_REGISTER,
               phase: str | None = None, unit: str | None = "Wh") -> Sample:  # fmt: skip
        return Sample(at + timedelta(minutes=minutes), measurand, phase, value, unit)

    def event(seq_no: int, *samples: Sample) -> tuple[TransactionEventRecord, list[Sample]]:
        record = TransactionEventRecord(
            "CS001", "TX-9", seq_no, "Updated", at, "MeterValuePeriodic", False,
            payload="{}", received_at=at, id_token=None, evse_id=None, connector_id=None,
            stopped_reason=None,
        )  # fmt: skip
        return record, list(samples)

    events = [
        event(2, sample(20, 2.0, unit="kWh"), sample(19, 1900.0), sample(1, 5.0, phase="L1")),
        event(1, sample(10, 1500.0), sample(5, 1200.0), sample(0, 9.0, "Power.Active.Import")),
        event(3, sample(5, 1100.0), sample(40, 50.0, unit="A")),  # a tie at minute 5
        event(4),
        event(5, sample(20, 2500.0)),  # a tie at the end: the larger value is the last
    ]
    for record, samples in events:
        assert await transactions.record_event(record, samples)
    [summary] = await transactions.list()
    assert (summary.meter_start_wh, summary.meter_stop_wh, summary.events) == (1100.0, 2500.0, 5)


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
