"""TransactionStore on SQLAlchemy: transactions, their events and meter samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, insert, or_, select
from sqlalchemy.exc import IntegrityError

from csms.db.schema import meter_samples, transaction_events, transactions
from csms.domain.metering import ENERGY_REGISTER, TO_WH, Sample, register_wh
from csms.services.transactions import TransactionEventRecord, TransactionSummary
from pki.store.inline import Database
from pki.store.sql import upsert


class SqlTransactionStore:
    """Writes are units of work (`Database.write`): inline on SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def record_event(self, event: TransactionEventRecord, samples: Sequence[Sample]) -> bool:
        def work(connection: Connection) -> None:
            connection.execute(
                insert(transaction_events).values(
                    station_id=event.station_id,
                    transaction_id=event.transaction_id,
                    seq_no=event.seq_no,
                    event_type=event.event_type,
                    timestamp=event.timestamp,
                    trigger_reason=event.trigger_reason,
                    offline=event.offline,
                    payload=event.payload,
                    received_at=event.received_at,
                )
            )
            _insert_samples(
                connection, event.station_id, event.transaction_id, event.evse_id, samples
            )
            _update_summary(connection, event)

        try:
            await self._database.write(work)
        except IntegrityError:
            return False  # (station, transaction, seqNo) stored already: a replay
        return True

    async def record_samples(
        self, station_id: str, evse_id: int | None, samples: Sequence[Sample]
    ) -> None:
        await self._database.write(
            lambda connection: _insert_samples(connection, station_id, None, evse_id, samples)
        )

    async def list(self, station_id: str | None = None) -> list[TransactionSummary]:
        statement = select(transactions).order_by(
            transactions.c.started_at, transactions.c.transaction_id
        )
        if station_id is not None:
            statement = statement.where(transactions.c.station_id == station_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            TransactionSummary(
                station_id=r.station_id,
                transaction_id=r.transaction_id,
                id_token=r.id_token,
                evse_id=r.evse_id,
                connector_id=r.connector_id,
                started_at=r.started_at,
                ended_at=r.ended_at,
                stopped_reason=r.stopped_reason,
                meter_start_wh=r.meter_start_wh,
                meter_stop_wh=r.meter_stop_wh,
                events=r.events,
            )
            for r in rows
        ]


def _update_summary(connection: Connection, event: TransactionEventRecord) -> None:
    key = (
        transactions.c.station_id == event.station_id,
        transactions.c.transaction_id == event.transaction_id,
    )
    existing = (connection.execute(select(transactions).where(*key))).first()
    ends = [
        connection.execute(statement).first()
        for statement in register_ends(event.station_id, event.transaction_id)
    ]
    readings = register_wh(
        [Sample(r.timestamp, r.measurand, r.phase, r.value, r.unit) for r in ends if r]
    )
    values = {
        "station_id": event.station_id,
        "transaction_id": event.transaction_id,
        "id_token": _first(existing, "id_token", event.id_token),
        "evse_id": _first(existing, "evse_id", event.evse_id),
        "connector_id": _first(existing, "connector_id", event.connector_id),
        "started_at": event.timestamp
        if event.event_type == "Started"
        else _first(existing, "started_at", None),
        "ended_at": event.timestamp
        if event.event_type == "Ended"
        else _first(existing, "ended_at", None),
        "stopped_reason": event.stopped_reason or _first(existing, "stopped_reason", None),
        "meter_start_wh": readings[0][1] if readings else None,
        "meter_stop_wh": readings[-1][1] if readings else None,
        "events": (existing.events if existing else 0) + 1,
        "updated_at": event.received_at,
    }
    connection.execute(
        upsert(connection.dialect, transactions, values).on_conflict_do_update(
            index_elements=[transactions.c.station_id, transactions.c.transaction_id],
            set_=values,
        )
    )


def register_ends(station_id: str, transaction_id: str) -> tuple[Select[Any], Select[Any]]:
    """The first and the last energy register reading of a transaction, one row each,
    read in the order of ix_meter_samples_register: an event at the end of a long
    session costs what the first one did (no sort of the transaction's samples)."""
    register = select(meter_samples).where(
        meter_samples.c.station_id == station_id,
        meter_samples.c.transaction_id == transaction_id,
        meter_samples.c.measurand == ENERGY_REGISTER,
        meter_samples.c.phase.is_(None),
        or_(meter_samples.c.unit.is_(None), meter_samples.c.unit.in_(list(TO_WH))),
    )
    return (
        register.order_by(meter_samples.c.timestamp, meter_samples.c.value).limit(1),
        register.order_by(meter_samples.c.timestamp.desc(), meter_samples.c.value.desc()).limit(1),
    )


def _first(existing: Row[Any] | None, column: str, new: Any) -> Any:
    """The value stored first wins; the event fills it only when it is still empty."""
    stored = getattr(existing, column) if existing is not None else None
    return stored if stored is not None else new


def _insert_samples(
    connection: Connection,
    station_id: str,
    transaction_id: str | None,
    evse_id: int | None,
    samples: Sequence[Sample],
) -> None:
    if not samples:
        return
    connection.execute(
        insert(meter_samples),
        [
            {
                "station_id": station_id,
                "transaction_id": transaction_id,
                "evse_id": evse_id,
                "timestamp": s.timestamp,
                "measurand": s.measurand,
                "phase": s.phase,
                "value": s.value,
                "unit": s.unit,
            }
            for s in samples
        ],
    )
