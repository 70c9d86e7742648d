"""TransactionEvent and MeterValues: stored once, whatever a station replays.

Stations queue transaction events while offline and send them again when back; an event
is identified by (station, transactionId, seqNo) and stored once. The transaction's
summary (start, end, meter start/stop, energy) is recomputed from what is stored, so
the order events arrive in does not matter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from csms.domain.fields import parse_time
from csms.domain.metering import DroppedSample, Sample, read_samples
from pki.clock import Clock

LOG = logging.getLogger("pkictl.transactions")


@dataclass(frozen=True)
class TransactionEventRecord:
    station_id: str
    transaction_id: str
    seq_no: int
    event_type: str
    timestamp: datetime
    trigger_reason: str
    offline: bool
    id_token: str | None
    evse_id: int | None
    connector_id: int | None
    stopped_reason: str | None
    payload: str
    received_at: datetime


@dataclass(frozen=True)
class TransactionSummary:
    station_id: str
    transaction_id: str
    id_token: str | None
    evse_id: int | None
    connector_id: int | None
    started_at: datetime | None
    ended_at: datetime | None
    stopped_reason: str | None
    meter_start_wh: float | None
    meter_stop_wh: float | None
    events: int

    @property
    def energy_wh(self) -> float | None:
        if self.meter_start_wh is None or self.meter_stop_wh is None:
            return None
        return self.meter_stop_wh - self.meter_start_wh


class TransactionStore(Protocol):
    async def record_event(self, event: TransactionEventRecord, samples: Sequence[Sample]) -> bool:
        """Store the event, its samples and the updated summary in one transaction;
        False (and nothing written) when the event is stored already."""
        ...

    async def record_samples(
        self, station_id: str, evse_id: int | None, samples: Sequence[Sample]
    ) -> None: ...
    async def list(self, station_id: str | None = None) -> list[TransactionSummary]: ...


def _log_dropped(station_id: str, message: str, dropped: Sequence[DroppedSample]) -> None:
    for sample in dropped:
        LOG.warning(
            "%s: %s: %s = %r dropped: %s", station_id, message, sample.field,
            sample.value, sample.reason,
        )  # fmt: skip


class TransactionService:
    def __init__(self, store: TransactionStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def event(self, station_id: str, payload: Mapping[str, Any]) -> bool:
        """One TransactionEvent (snake_case payload); False when it was a replay.
        Raises `InvalidField` (nothing stored) for a timestamp that is no date-time;
        sampled values that are no reading are dropped and logged (`read_samples`)."""
        info = payload["transaction_info"]
        timestamp = parse_time(payload["timestamp"], "timestamp")
        samples, dropped = read_samples(payload.get("meter_value", []))
        id_token = payload.get("id_token") or {}
        evse = payload.get("evse") or {}
        record = TransactionEventRecord(
            station_id=station_id,
            transaction_id=str(info["transaction_id"]),
            seq_no=int(payload["seq_no"]),
            event_type=str(payload["event_type"]),
            timestamp=timestamp,
            trigger_reason=str(payload["trigger_reason"]),
            offline=bool(payload.get("offline", False)),
            id_token=id_token.get("id_token"),
            evse_id=evse.get("id"),
            connector_id=evse.get("connector_id"),
            stopped_reason=info.get("stopped_reason"),
            payload=json.dumps(payload, sort_keys=True, default=str),
            received_at=self._clock.now(),
        )
        _log_dropped(
            station_id, f"TransactionEvent {record.transaction_id!r} seqNo {record.seq_no}", dropped
        )
        return await self._store.record_event(record, samples)

    async def meter_values(
        self, station_id: str, evse_id: int, meter_value: Sequence[Mapping[str, Any]]
    ) -> None:
        samples, dropped = read_samples(meter_value)
        _log_dropped(station_id, "MeterValues", dropped)
        await self._store.record_samples(station_id, evse_id, samples)

    async def list(self, station_id: str | None = None) -> list[TransactionSummary]:
        return await self._store.list(station_id)
