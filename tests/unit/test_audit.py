"""The audit hash chain: pure seal/verify_chain, then tampering with a real database.

Every tampering test asserts the exact problem list, so that a check which stops
detecting something (or starts blaming the wrong entry) fails here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import text

from pki.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditHead,
    entry_hash,
    seal,
    verify_chain,
)
from pki.authority import CertificateAuthority
from pki.clock import FixedClock
from pki.errors import IssuanceRefused
from pki.records import Station
from pki.store.sql import SqlStore

T0 = datetime(2025, 5, 17, 8, 30, 0, 123_456, tzinfo=UTC)


# --- pure: seal and verify_chain ------------------------------------------------------


def events(count: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            action=f"test.action{i}",
            actor="operator",
            target=f"station:CS{i:03d}" if i % 2 else None,
            outcome="ok" if i % 3 else "refused",
            detail={"index": i, "nested": {"list": [i, str(i)], "none": None}},
        )
        for i in range(1, count + 1)
    ]


def chain(count: int = 5) -> tuple[list[AuditEntry], AuditHead]:
    entries: list[AuditEntry] = []
    previous: AuditHead | None = None
    for i, event in enumerate(events(count)):
        entry = seal(event, at=T0 + timedelta(seconds=i), previous=previous)
        entries.append(entry)
        previous = AuditHead(entry.seq, entry.hash)
    assert previous is not None
    return entries, previous


def test_seal_links_each_entry_to_the_previous_one() -> None:
    entries, head = chain(3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[1].prev_hash == entries[0].hash
    assert entries[2].prev_hash == entries[1].hash
    assert len({e.hash for e in entries}) == 3
    assert head == AuditHead(3, entries[2].hash)
    assert entries[1].hash == entry_hash(entries[0].hash, 2, entries[1].at, entries[1].event)


def test_intact_chain_has_no_problems() -> None:
    entries, head = chain()
    assert verify_chain(entries, head) == []
    assert verify_chain([], None) == []


def test_hash_does_not_depend_on_detail_key_order() -> None:
    one = seal(AuditEvent("a", "b", detail={"x": 1, "y": 2}), at=T0, previous=None)
    two = seal(AuditEvent("a", "b", detail={"y": 2, "x": 1}), at=T0, previous=None)
    assert one.hash == two.hash


@pytest.mark.parametrize(
    "change",
    [
        {"action": "certificate.issued"},
        {"actor": "intruder"},
        {"target": "station:CS999"},
        {"outcome": "ok!"},
        {"detail": {"index": 3, "nested": {"list": [3, "3"], "none": None}, "x": 1}},
        {"detail": {"index": 3, "nested": {"list": [3, "3"], "none": 0}}},
    ],
    ids=["action", "actor", "target", "outcome", "detail-added", "detail-value"],
)
def test_edited_event_field_is_detected(change: dict[str, Any]) -> None:
    entries, head = chain()
    edited = entries[2]
    entries[2] = dataclasses.replace(edited, event=dataclasses.replace(edited.event, **change))
    assert verify_chain(entries, head) == ["entry 3: content does not match its hash (edited)"]


def test_edited_time_is_detected() -> None:
    entries, head = chain()
    entries[1] = dataclasses.replace(entries[1], at=entries[1].at + timedelta(microseconds=1))
    assert verify_chain(entries, head) == ["entry 2: content does not match its hash (edited)"]


def test_edited_and_rehashed_entry_breaks_the_next_link() -> None:
    entries, head = chain()
    forged_event = dataclasses.replace(entries[1].event, actor="intruder")
    forged = seal(forged_event, at=entries[1].at, previous=AuditHead(1, entries[0].hash))
    entries[1] = forged
    assert verify_chain(entries, head) == ["entry 3: link to the previous entry is broken"]


def test_deleted_middle_entry_is_detected() -> None:
    entries, head = chain()
    del entries[2]
    assert verify_chain(entries, head) == [
        "entry 3 is missing (next is 4)",
        "entry 4: link to the previous entry is broken",
    ]


def test_deleted_first_entry_is_detected() -> None:
    entries, head = chain()
    del entries[0]
    assert verify_chain(entries, head) == [
        "entry 1 is missing (next is 2)",
        "entry 2: link to the previous entry is broken",
    ]


def test_deleted_tail_is_detected_through_the_head() -> None:
    entries, head = chain()
    del entries[-2:]
    assert verify_chain(entries, head) == [
        "log ends at entry 3 but the head records entry 5: entries were deleted from the end"
    ]


def test_everything_deleted_is_detected_through_the_head() -> None:
    _, head = chain()
    assert verify_chain([], head) == [
        "log ends at entry 0 but the head records entry 5: entries were deleted from the end"
    ]


def test_missing_head_is_detected() -> None:
    entries, _ = chain()
    assert verify_chain(entries, None) == ["audit head is missing"]


def test_head_with_another_hash_is_detected() -> None:
    entries, head = chain()
    problems = verify_chain(entries, AuditHead(head.seq, "f" * 64))
    assert len(problems) == 1
    assert "head records entry 5" in problems[0]


def test_reordered_entries_are_detected() -> None:
    entries, head = chain()
    entries[1], entries[2] = entries[2], entries[1]
    problems = verify_chain(entries, head)
    assert "entry 3: link to the previous entry is broken" in problems
    assert "entry 2: link to the previous entry is broken" in problems
    assert "entry 4: link to the previous entry is broken" in problems


def test_same_instant_in_another_timezone_seals_the_same_entry() -> None:
    """A store keeps instants (UTC), not offsets: an entry sealed with a +02:00 time
    must verify once read back in UTC."""
    plus_two = timezone(timedelta(hours=2))
    entry = seal(AuditEvent("a", "b"), at=T0.astimezone(plus_two), previous=None)
    read_back = dataclasses.replace(entry, at=entry.at.astimezone(UTC))
    assert verify_chain([read_back], AuditHead(1, entry.hash)) == []


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        seal(AuditEvent("a", "b"), at=T0.replace(tzinfo=None), previous=None)


def test_detail_mapping_hashes_like_the_dict_it_reads_back_as() -> None:
    detail = {"serial": "1f", "count": 2}
    entry = seal(AuditEvent("a", "b", detail=MappingProxyType(detail)), at=T0, previous=None)
    read_back = dataclasses.replace(entry, event=AuditEvent("a", "b", detail=dict(detail)))
    assert verify_chain([read_back], AuditHead(1, entry.hash)) == []


# --- a real database ------------------------------------------------------------------


async def audited_operations(store: SqlStore, clock: FixedClock) -> None:
    """Five audited operations through the store: entries 1..5."""
    now = clock.now()
    station = Station("CS900", "SN-0900", None, 2, None, now)
    await store.add_station(station, AuditEvent("station.added", "op", "CS900", "ok"), now)
    clock.advance(timedelta(seconds=1, microseconds=1))
    await store.set_setting(
        "crl.interval", "3600", AuditEvent("setting.set", "op", detail={"v": 3600}), clock.now()
    )
    clock.advance(timedelta(seconds=1))
    await store.append_audit(
        AuditEvent("login.failed", "op", "CS900", "refused", {"ip": "10.0.0.1"}), clock.now()
    )
    clock.advance(timedelta(seconds=1))
    await store.remove_station("CS900", AuditEvent("station.removed", "op", "CS900"), clock.now())
    clock.advance(timedelta(seconds=1))
    await store.set_setting("crl.interval", "60", AuditEvent("setting.set", "op"), clock.now())


async def problems(store: SqlStore) -> list[str]:
    return verify_chain(await store.audit_entries(), await store.audit_head())


async def execute(store: SqlStore, sql: str, **params: Any) -> int:
    async with store.engine.begin() as connection:
        result = await connection.execute(text(sql), params)
        return result.rowcount


async def test_untouched_database_log_verifies(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    entries = await store.audit_entries()
    assert [e.event.action for e in entries] == [
        "station.added",
        "setting.set",
        "login.failed",
        "station.removed",
        "setting.set",
    ]
    assert entries[2].event.detail == {"ip": "10.0.0.1"}
    assert entries[2].event.outcome == "refused"
    assert await store.audit_head() == AuditHead(5, entries[-1].hash)
    assert await problems(store) == []
    assert [e.seq for e in await store.audit_entries(limit=2)] == [4, 5]


async def test_edited_row_is_detected(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    assert await execute(store, "UPDATE audit_log SET detail = :d WHERE seq = 3", d="{}") == 1
    assert await problems(store) == ["entry 3: content does not match its hash (edited)"]


async def test_edited_actor_is_detected(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    assert await execute(store, "UPDATE audit_log SET actor = 'root' WHERE seq = 1") == 1
    assert await problems(store) == ["entry 1: content does not match its hash (edited)"]


async def test_deleted_middle_row_is_detected(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    assert await execute(store, "DELETE FROM audit_log WHERE seq = 3") == 1
    assert await problems(store) == [
        "entry 3 is missing (next is 4)",
        "entry 4: link to the previous entry is broken",
    ]


async def test_deleted_last_row_is_detected(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    assert await execute(store, "DELETE FROM audit_log WHERE seq = 5") == 1
    assert await problems(store) == [
        "log ends at entry 4 but the head records entry 5: entries were deleted from the end"
    ]


async def test_deleted_head_is_detected(store: SqlStore, clock: FixedClock) -> None:
    await audited_operations(store, clock)
    assert await execute(store, "DELETE FROM audit_head") == 1
    assert await problems(store) == ["audit head is missing"]


async def test_non_utc_times_verify_after_the_round_trip(store: SqlStore) -> None:
    """The store keeps instants in UTC; an entry appended with a +02:00 (or -05:30) time
    must still verify when read back."""
    for offset in (timedelta(hours=2), timedelta(hours=-5, minutes=-30)):
        at = datetime(2025, 7, 1, 12, 0, 0, 5, tzinfo=timezone(offset))
        await store.append_audit(AuditEvent("clock.test", "op", detail={"o": str(offset)}), at)
        await store.set_setting("k", str(offset), AuditEvent("setting.set", "op"), at)
    await store.append_audit(
        AuditEvent("mapping.test", "op", detail=MappingProxyType({"a": [1, 2]})), at
    )
    entries = await store.audit_entries()
    assert len(entries) == 5
    assert all(e.at.utcoffset() == timedelta(0) for e in entries)
    assert await problems(store) == []


async def test_ca_operations_chain_and_tampering(
    ca: CertificateAuthority, make_csr: Callable[..., str], clock: FixedClock
) -> None:
    """Issuance (the SQLite fast path), a refusal, a revocation and a CRL chain into one
    log; forging the serial in the issuance entry is detected."""
    store = ca.store
    assert isinstance(store, SqlStore)
    issued = await ca.issue_for_station(
        csr_pem=make_csr(), profile_name="charging-station", station_id="CS001", actor="op"
    )
    with pytest.raises(IssuanceRefused):
        await ca.issue_for_station(
            csr_pem=make_csr(), profile_name="charging-station", station_id="CS404", actor="op"
        )
    clock.advance(timedelta(minutes=5))
    await ca.revoke(issued.record.serial, "keyCompromise", "op")
    await ca.crl("cso-station-ca", "op")

    entries = await store.audit_entries()
    assert [e.event.action for e in entries] == [
        "ca.init",
        "station.added",
        "certificate.issued",
        "certificate.refused",
        "certificate.revoked",
        "crl.generated",
    ]
    assert await problems(store) == []

    issued_seq = entries[2].seq
    forged = dict(entries[2].event.detail, serial="1")
    assert (
        await execute(
            store,
            "UPDATE audit_log SET detail = :d WHERE seq = :s",
            d=json.dumps(forged, sort_keys=True),
            s=issued_seq,
        )
        == 1
    )
    assert await problems(store) == [
        f"entry {issued_seq}: content does not match its hash (edited)"
    ]
