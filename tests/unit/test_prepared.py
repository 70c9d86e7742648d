"""Prepared statements (pki.store.prepared) store exactly what SQLAlchemy's own execution
stores, through the driver, and fail as it fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy import insert as sql_insert
from sqlalchemy.exc import IntegrityError

from csms.db.reports import REPORT_INSERT
from csms.db.transactions import EVENT_INSERT, SAMPLES_INSERT, _summary_upsert
from pki.store.prepared import Prepared
from pki.store.sql import SqlStore

AT = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)


def _event(station: str, seq_no: int) -> dict[str, Any]:
    return {"station_id": station, "transaction_id": "TX-1", "seq_no": seq_no,
            "event_type": "Updated", "timestamp": AT, "trigger_reason": "MeterValuePeriodic",
            "offline": True, "payload": '{"a": 1}', "received_at": AT}  # fmt: skip


def _sample(station: str, minutes: int) -> dict[str, Any]:
    return {"station_id": station, "transaction_id": None, "evse_id": 1,
            "timestamp": AT + timedelta(minutes=minutes), "measurand": "Voltage",
            "phase": "L1", "value": 229.5, "unit": "V"}  # fmt: skip


def _summary(station: str, wh: float) -> dict[str, Any]:
    return {"station_id": station, "transaction_id": "TX-1", "id_token": "T", "evse_id": 1,
            "connector_id": None, "started_at": AT, "ended_at": None, "stopped_reason": None,
            "meter_start_at": AT, "meter_start_wh": wh, "meter_stop_at": AT,
            "meter_stop_wh": wh, "events": 1, "updated_at": AT}  # fmt: skip


def _report(station: str, _: int) -> dict[str, Any]:
    return {"station_id": station, "action": "StatusNotification", "received_at": AT,
            "payload": "{}"}  # fmt: skip


CASES: dict[str, tuple[Callable[[Any], Prepared], Callable[[str, int], dict[str, Any]], str]] = {
    "event": (lambda _: EVENT_INSERT, _event, "transaction_events"),
    "samples": (lambda _: SAMPLES_INSERT, _sample, "meter_samples"),
    "report": (lambda _: REPORT_INSERT, _report, "station_reports"),
    "summary upsert": (_summary_upsert, _summary, "transactions"),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_driver_stores_what_sqlalchemy_stores(sqlite_store: SqlStore, case: str) -> None:
    prepared_of, row_of, table = CASES[case]
    statements: list[str] = []
    database = sqlite_store.database
    await database.write(lambda connection: None)  # the inline engine exists from here on
    event.listen(database._inline, "before_cursor_execute", lambda *a: statements.append(a[2]))

    def write(station: str, through_driver: bool) -> Callable[[Connection], None]:
        def work(connection: Connection) -> None:
            prepared = prepared_of(connection.dialect)
            for rows in ([row_of(station, 1)], [row_of(station, 2), row_of(station, 3)]):
                if through_driver:
                    prepared.execute(connection, rows if len(rows) > 1 else rows[0])
                else:
                    connection.execute(prepared.statement, rows)
            if case == "summary upsert":  # the conflict branch, with its own bound `+ 1`
                later = {**row_of(station, 4), "meter_stop_at": AT + timedelta(hours=1)}
                if through_driver:
                    prepared.execute(connection, later)
                else:
                    connection.execute(prepared.statement, later)

        return work

    await database.write(write("BY-SQLALCHEMY", through_driver=False))
    by_sqlalchemy = len(statements)
    await database.write(write("BY-DRIVER", through_driver=True))
    assert len(statements) == by_sqlalchemy  # the driver's: no SQLAlchemy execution

    def stored(station: str) -> Callable[[Connection], list[tuple[Any, ...]]]:
        def read(connection: Connection) -> list[tuple[Any, ...]]:
            driver = connection.connection.driver_connection
            assert driver is not None
            cursor = driver.execute(
                f"SELECT * FROM {table} WHERE station_id = ? ORDER BY rowid",  # noqa: S608
                (station,),
            )
            names = [d[0] for d in cursor.description]
            return [
                tuple(v for n, v in zip(names, row, strict=True) if n not in ("id", "station_id"))
                for row in cursor.fetchall()
            ]

        return read

    expected = await database.read(stored("BY-SQLALCHEMY"))
    assert expected  # something was stored, as text exactly alike
    assert await database.read(stored("BY-DRIVER")) == expected


async def test_a_driver_error_is_sqlalchemys_error(sqlite_store: SqlStore) -> None:
    database = sqlite_store.database
    await database.write(lambda connection: EVENT_INSERT.execute(connection, _event("CS", 1)))
    with pytest.raises(IntegrityError):
        await database.write(lambda connection: EVENT_INSERT.execute(connection, _event("CS", 1)))


def test_values_sqlalchemy_would_compute_are_refused() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name", String, default=lambda: "computed"))  # fmt: skip
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with engine.begin() as connection, pytest.raises(ValueError, match="compute at execution"):
        Prepared(sql_insert(table)).execute(connection, {"id": 1})
    engine.dispose()
