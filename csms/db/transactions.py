"""TransactionStore on SQLAlchemy: transactions, their events and meter samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, and_, case, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from csms.db.schema import meter_samples, transaction_events, transactions
from csms.domain.metering import Sample, register_wh
from csms.services.transactions import TransactionEventRecord, TransactionSummary
from pki.store.inline import Database
from pki.store.prepared import Prepared
from pki.store.sql import upsert


class SqlTransactionStore:
    """Writes are units of work (`Database.write`): inline on SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def record_event(self, event: TransactionEventRecord, samples: Sequence[Sample]) -> bool:
        upsert_summary = _summary_upsert(self._engine.dialect)

        def work(connection: Connection) -> None:
            EVENT_INSERT.execute(
                connection,
                {
                    "station_id": event.station_id,
                    "transaction_id": event.transaction_id,
                    "seq_no": event.seq_no,
                    "event_type": event.event_type,
                    "timestamp": event.timestamp,
                    "trigger_reason": event.trigger_reason,
                    "offline": event.offline,
                    "payload": event.payload,
                    "received_at": event.received_at,
                },
            )
            _insert_samples(
                connection, event.station_id, event.transaction_id, event.evse_id, samples
            )
            upsert_summary.execute(connection, _summary_values(event, samples))

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


# Statements built once: a TransactionEvent is a quarter of a station's messages, and
# building its statements anew cost more than running them (bench/RESULTS.md).
EVENT_INSERT = Prepared(insert(transaction_events))
SAMPLES_INSERT = Prepared(insert(meter_samples))
_SUMMARY_UPSERTS: dict[str, Prepared] = {}


def _summary_upsert(dialect: Dialect) -> Prepared:
    """The summary row written without reading it first: what was stored first wins
    (token, EVSE, connector), Started/Ended set their times, every event counts once,
    and the energy register's first and last reading are whichever is earliest and
    latest of the stored ones and this event's (by time, then value)."""
    prepared = _SUMMARY_UPSERTS.get(dialect.name)
    if prepared is None:
        inserting = upsert(dialect, transactions, {})
        new, stored = inserting.excluded, transactions.c
        start = (
            (new.meter_start_at, new.meter_start_wh),
            (stored.meter_start_at, stored.meter_start_wh),
        )
        stop = (new.meter_stop_at, new.meter_stop_wh), (stored.meter_stop_at, stored.meter_stop_wh)
        earlier, later = _replaces(*start, earliest=True), _replaces(*stop, earliest=False)
        statement = inserting.on_conflict_do_update(
            index_elements=[stored.station_id, stored.transaction_id],
            set_={
                "id_token": func.coalesce(stored.id_token, new.id_token),
                "evse_id": func.coalesce(stored.evse_id, new.evse_id),
                "connector_id": func.coalesce(stored.connector_id, new.connector_id),
                "started_at": func.coalesce(new.started_at, stored.started_at),
                "ended_at": func.coalesce(new.ended_at, stored.ended_at),
                "stopped_reason": func.coalesce(new.stopped_reason, stored.stopped_reason),
                "meter_start_at": case((earlier, new.meter_start_at), else_=stored.meter_start_at),
                "meter_start_wh": case((earlier, new.meter_start_wh), else_=stored.meter_start_wh),
                "meter_stop_at": case((later, new.meter_stop_at), else_=stored.meter_stop_at),
                "meter_stop_wh": case((later, new.meter_stop_wh), else_=stored.meter_stop_wh),
                "events": stored.events + 1,
                "updated_at": new.updated_at,
            },
        )
        prepared = _SUMMARY_UPSERTS[dialect.name] = Prepared(statement)
    return prepared


def _replaces(new: tuple[Any, Any], stored: tuple[Any, Any], *, earliest: bool) -> Any:
    """This event's reading (time, Wh) replaces the stored one: there is none stored,
    or this one comes first (``earliest``), or last; by time, then value."""
    before, after = (new, stored) if earliest else (stored, new)
    in_order = or_(before[0] < after[0], and_(before[0] == after[0], before[1] < after[1]))
    return and_(new[0].is_not(None), or_(stored[0].is_(None), in_order))


def _summary_values(event: TransactionEventRecord, samples: Sequence[Sample]) -> dict[str, Any]:
    """The row as this event would insert it; `_summary_upsert` merges it with a stored one."""
    readings = register_wh(samples)
    first, last = (readings[0], readings[-1]) if readings else ((None, None), (None, None))
    return {
        "station_id": event.station_id,
        "transaction_id": event.transaction_id,
        "id_token": event.id_token,
        "evse_id": event.evse_id,
        "connector_id": event.connector_id,
        "started_at": event.timestamp if event.event_type == "Started" else None,
        "ended_at": event.timestamp if event.event_type == "Ended" else None,
        "stopped_reason": event.stopped_reason or None,
        "meter_start_at": first[0],
        "meter_start_wh": first[1],
        "meter_stop_at": last[0],
        "meter_stop_wh": last[1],
        "events": 1,
        "updated_at": event.received_at,
    }


def _insert_samples(
    connection: Connection,
    station_id: str,
    transaction_id: str | None,
    evse_id: int | None,
    samples: Sequence[Sample],
) -> None:
    if not samples:
        return
    SAMPLES_INSERT.execute(
        connection,
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
