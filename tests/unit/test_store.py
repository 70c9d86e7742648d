"""The SQL store on SQLite and PostgreSQL: stations, certificates, revocation, CRL
numbers, settings, schema drift against the migrations, and the SQLite fast path.

Every mutation is checked together with its audit entry: an operation that fails must
leave neither a row nor an entry behind, and every success leaves exactly one of each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import event, inspect, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import create_async_engine

import csms.db.schema  # noqa: F401 -- registers the CSMS's tables on the shared metadata
from pki.audit import AuditEvent, verify_chain
from pki.authority import CertificateAuthority, IssuedCertificate
from pki.clock import FixedClock
from pki.crl import RevokedEntry
from pki.errors import ConflictError, NotFoundError, StateError
from pki.records import (
    CertificateQuery,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    Station,
)
from pki.store import sqlite_fast
from pki.store.schema import audit_log, certificates, metadata
from pki.store.sql import MIGRATIONS, SqlStore, head_revision, open_store, schema_revision

EVENT = AuditEvent("test.event", "test")


# --- helpers --------------------------------------------------------------------------


async def audit_actions(store: SqlStore) -> list[str]:
    return [entry.event.action for entry in await store.audit_entries()]


async def assert_chain_intact(store: SqlStore) -> None:
    assert verify_chain(await store.audit_entries(), await store.audit_head()) == []


async def scalar(store: SqlStore, sql: str, **params: Any) -> Any:
    async with store.engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one()


def observed_record(
    *,
    serial: int,
    issuer_cn: str = "Observed Test CA",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    renew_after: datetime | None = None,
) -> CertificateRecord:
    """A record of a real self-signed certificate (fresh P-256 key: unique fingerprint)
    under ``issuer_cn`` with ``serial``; the record's dates may be set independently."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    record = CertificateRecord.from_certificate(
        certificate,
        renew_after=start + timedelta(days=300),
        source=CertificateSource.OBSERVED,
        issuer_ca=None,
        profile=None,
        station_id=None,
    )
    changes = {
        k: v
        for k, v in {
            "not_before": not_before,
            "not_after": not_after,
            "renew_after": renew_after,
        }.items()
        if v is not None
    }
    return dataclasses.replace(record, **changes)


async def issue(
    ca: CertificateAuthority,
    make_csr: Callable[..., str],
    *,
    days: int | None = None,
    station_id: str = "CS001",
    cn: str = "SN-0001",
    profile: str = "charging-station",
    dc: str | None = None,
) -> IssuedCertificate:
    return await ca.issue_for_station(
        csr_pem=make_csr(cn=cn, dc=dc),
        profile_name=profile,
        station_id=station_id,
        actor="test",
        days=days,
    )


# --- stations -------------------------------------------------------------------------


async def test_station_add_get_list_remove(store: SqlStore, clock: FixedClock) -> None:
    now = clock.now()
    first = Station("CS001", "SN-0001", "SECC0001", 3, None, now)
    second = Station("CS000", "SN-0000", None, 2, "$argon2id$not-a-real-hash", now)
    assert await store.get_station("CS001") is None
    assert await store.list_stations() == []

    await store.add_station(first, AuditEvent("station.added", "test", "CS001"), now)
    await store.add_station(second, AuditEvent("station.added", "test", "CS000"), now)

    got = await store.get_station("CS001")
    assert got == first
    assert got is not None
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert await store.list_stations() == [second, first]  # ordered by id

    await store.remove_station("CS001", AuditEvent("station.removed", "test", "CS001"), now)
    assert await store.get_station("CS001") is None
    assert await store.list_stations() == [second]
    assert await audit_actions(store) == ["station.added", "station.added", "station.removed"]
    await assert_chain_intact(store)


async def test_duplicate_station_is_a_conflict_and_writes_nothing(
    store: SqlStore, station: Station, clock: FixedClock
) -> None:
    await store.add_station(station, AuditEvent("station.added", "test"), clock.now())
    impostor = dataclasses.replace(station, serial_number="SN-9999")
    with pytest.raises(ConflictError, match="CS001"):
        await store.add_station(impostor, AuditEvent("station.added", "test"), clock.now())
    assert await store.get_station(station.id) == station
    assert await audit_actions(store) == ["station.added"]


async def test_removing_a_missing_station_is_not_found_and_writes_nothing(
    store: SqlStore, clock: FixedClock
) -> None:
    with pytest.raises(NotFoundError, match="CS404"):
        await store.remove_station("CS404", AuditEvent("station.removed", "test"), clock.now())
    assert await store.audit_entries() == []
    assert await store.audit_head() is None


# --- certificates ---------------------------------------------------------------------


async def test_find_certificates_filters_and_orders_by_not_after(
    ca: CertificateAuthority, make_csr: Callable[..., str], clock: FixedClock
) -> None:
    store = ca.store
    assert isinstance(store, SqlStore)
    await store.add_station(
        Station("CS002", "SN-0002", None, 3, None, clock.now()),
        AuditEvent("station.added", "test", "CS002"),
        clock.now(),
    )
    late = await issue(ca, make_csr, days=300)
    early = await issue(ca, make_csr, days=100)
    middle = await issue(ca, make_csr, days=200)
    secc = await issue(ca, make_csr, profile="v2g-secc", cn="SECC0001", dc="CPO")  # 60 days
    other = await issue(ca, make_csr, days=250, station_id="CS002", cn="SN-0002")

    def serials(records: list[CertificateRecord]) -> list[int]:
        return [r.serial for r in records]

    by_station = await store.find_certificates(CertificateQuery(station_id="CS001"))
    assert by_station == [secc.record, early.record, middle.record, late.record]
    assert [r.not_after for r in by_station] == sorted(r.not_after for r in by_station)
    assert by_station[1].not_after == early.chain[0].not_valid_after_utc

    by_profile = await store.find_certificates(CertificateQuery(profile="charging-station"))
    assert serials(by_profile) == serials([early.record, middle.record, other.record, late.record])

    both = await store.find_certificates(CertificateQuery(station_id="CS002", profile="v2g-secc"))
    assert both == []

    by_serial = await store.find_certificates(CertificateQuery(serial=middle.record.serial))
    assert by_serial == [middle.record]

    expiring = await store.find_certificates(
        CertificateQuery(expiring_before=clock.now() + timedelta(days=150))
    )
    assert serials(expiring) == serials([secc.record, early.record])

    limited = await store.find_certificates(CertificateQuery(station_id="CS001", limit=2))
    assert limited == [secc.record, early.record]

    everything = await store.find_certificates(CertificateQuery())
    assert [r.not_after for r in everything] == sorted(r.not_after for r in everything)
    assert {r.station_id for r in everything} == {None, "CS001", "CS002"}  # + authorities
    assert (await audit_actions(store)).count("certificate.issued") == 5
    await assert_chain_intact(store)


@pytest.mark.parametrize(
    "microsecond", [0, 123_456, 999_999], ids=["second", "microsecond", "max-micro"]
)
async def test_datetimes_round_trip_utc_aware_and_exact(store: SqlStore, microsecond: int) -> None:
    plus_two = timezone(timedelta(hours=2))
    minus_five = timezone(timedelta(hours=-5, minutes=-30))
    record = observed_record(
        serial=0x1234,
        not_before=datetime(2025, 3, 30, 1, 59, 59, microsecond, tzinfo=plus_two),
        not_after=datetime(2030, 12, 31, 23, 59, 59, microsecond, tzinfo=UTC),
        renew_after=datetime(2029, 2, 28, 18, 0, 1, microsecond, tzinfo=minus_five),
    )
    at = datetime(2025, 6, 1, 12, 0, 0, microsecond, tzinfo=plus_two)
    await store.record_certificate(record, AuditEvent("certificate.observed", "test"), at)
    revoked_at = datetime(2026, 1, 2, 3, 4, 5, microsecond, tzinfo=minus_five)
    await store.revoke_certificate(record, "superseded", EVENT, revoked_at)

    (found,) = await store.find_certificates(CertificateQuery(serial=0x1234))
    for name in ("not_before", "not_after", "renew_after", "revoked_at"):
        value = getattr(found, name)
        assert value.tzinfo is UTC, name
        expected = revoked_at if name == "revoked_at" else getattr(record, name)
        assert value == expected, name
        assert value.microsecond == microsecond, name
    entries = await store.audit_entries()
    assert [e.at for e in entries] == [at, revoked_at]
    assert all(e.at.tzinfo is UTC for e in entries)


async def test_presented_certificates_keep_first_seen_and_move_last_seen(store: SqlStore) -> None:
    """A certificate seen at handshakes: recorded (observed) the first time; later
    sightings move last_seen (not within a minute of the last) and keep first_seen --
    also for a certificate we issued, which had none."""
    first = datetime(2026, 3, 1, 8, 0, 0, 123_456, tzinfo=UTC)
    record = observed_record(serial=0x5EE1)
    event = AuditEvent("certificate.observed", "test")
    seen = await store.record_presented(record, event, first)
    assert (seen.first_seen, seen.last_seen) == (first, first)
    again = await store.record_presented(record, event, first + timedelta(seconds=30))
    assert again.last_seen == first  # within a minute: not written
    later = first + timedelta(days=30)
    moved = await store.record_presented(record, event, later)
    assert (moved.first_seen, moved.last_seen) == (first, later)
    (stored,) = await store.find_certificates(CertificateQuery(serial=0x5EE1))
    assert (stored.first_seen, stored.last_seen) == (first, later)
    assert stored.first_seen.tzinfo is UTC
    assert [e.event.action for e in await store.audit_entries()].count(
        "certificate.observed"
    ) == 1  # recorded once, sighted thrice
    await store.revoke_certificate(stored, "keyCompromise", EVENT, later)
    revoked = await store.record_presented(record, event, later + timedelta(days=1))
    assert revoked.status is CertificateStatus.REVOKED  # the sighting returns the row as it is
    issued = observed_record(serial=0x1551)  # recorded without a sighting, as issued
    await store.record_certificate(issued, AuditEvent("certificate.issued", "test"), first)
    sighted = await store.record_presented(issued, event, later)
    assert (sighted.first_seen, sighted.last_seen) == (later, later)
    (stored,) = await store.find_certificates(CertificateQuery(serial=0x1551))
    assert (stored.first_seen, stored.last_seen) == (later, later)


async def test_duplicate_issuer_and_serial_is_a_conflict_and_writes_nothing(
    store: SqlStore,
) -> None:
    first = observed_record(serial=0xABCDEF)
    twin = observed_record(serial=0xABCDEF)  # same issuer name and serial, other key
    assert first.fingerprint_sha256 != twin.fingerprint_sha256
    at = datetime.now(UTC)
    await store.record_certificate(first, AuditEvent("certificate.observed", "test"), at)
    with pytest.raises(ConflictError, match="abcdef"):
        await store.record_certificate(twin, AuditEvent("certificate.observed", "test"), at)

    assert await store.find_certificates(CertificateQuery(serial=0xABCDEF)) == [first]
    assert await audit_actions(store) == ["certificate.observed"]
    await assert_chain_intact(store)

    # Same serial under another issuer name is a different certificate: accepted.
    elsewhere = observed_record(serial=0xABCDEF, issuer_cn="Another Observed CA")
    await store.record_certificate(elsewhere, AuditEvent("certificate.observed", "test"), at)
    assert len(await store.find_certificates(CertificateQuery(serial=0xABCDEF))) == 2


async def test_concurrent_records_with_one_duplicate(store: SqlStore) -> None:
    """Concurrent recordings (one batch): only the duplicate fails; every other one is
    committed with exactly one audit entry each."""
    at = datetime.now(UTC)
    existing = observed_record(serial=0x100)
    await store.record_certificate(existing, AuditEvent("certificate.observed", "0"), at)
    fresh = [observed_record(serial=0x101 + i) for i in range(4)]
    twin = observed_record(serial=0x100)  # same issuer and serial as ``existing``
    results = await asyncio.gather(
        store.record_certificate(fresh[0], AuditEvent("certificate.observed", "1"), at),
        store.record_certificate(fresh[1], AuditEvent("certificate.observed", "2"), at),
        store.record_certificate(twin, AuditEvent("certificate.observed", "twin"), at),
        store.record_certificate(fresh[2], AuditEvent("certificate.observed", "3"), at),
        store.record_certificate(fresh[3], AuditEvent("certificate.observed", "4"), at),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "ConflictError",
        "NoneType",
        "NoneType",
    ]
    found = await store.find_certificates(CertificateQuery())
    assert sorted(r.fingerprint_sha256 for r in found) == sorted(
        r.fingerprint_sha256 for r in [existing, *fresh]
    )
    assert sorted(e.event.actor for e in await store.audit_entries()) == ["0", "1", "2", "3", "4"]
    await assert_chain_intact(store)


async def test_concurrent_twins_only_one_is_recorded(store: SqlStore) -> None:
    at = datetime.now(UTC)
    one, two = observed_record(serial=0x200), observed_record(serial=0x200)
    results = await asyncio.gather(
        store.record_certificate(one, AuditEvent("certificate.observed", "one"), at),
        store.record_certificate(two, AuditEvent("certificate.observed", "two"), at),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "NoneType"]
    (found,) = await store.find_certificates(CertificateQuery(serial=0x200))
    winner = "one" if results[0] is None else "two"
    assert found == (one if winner == "one" else two)
    assert [e.event.actor for e in await store.audit_entries()] == [winner]
    await assert_chain_intact(store)


async def test_failure_after_the_certificate_insert_rolls_everything_back(
    store: SqlStore,
) -> None:
    """The audit append fails (a planted row occupies the next sequence number) after
    the certificate row was inserted: the row must go too (SQLite: the fast path)."""
    at = datetime.now(UTC)
    await store.append_audit(EVENT, at)
    async with store.engine.begin() as connection:
        await connection.execute(
            audit_log.insert().values(
                seq=2,
                at=at,
                action="planted",
                actor="test",
                target=None,
                outcome="ok",
                detail="{}",
                prev_hash="0" * 64,
                hash="0" * 64,
            )
        )
    record = observed_record(serial=0x5EED)
    with pytest.raises(ConflictError):
        await store.record_certificate(record, AuditEvent("certificate.observed", "test"), at)
    assert await store.find_certificates(CertificateQuery(serial=0x5EED)) == []
    assert await scalar(store, "SELECT count(*) FROM certificates") == 0
    assert await audit_actions(store) == ["test.event", "planted"]
    assert (await store.audit_head()) is not None
    assert (await store.audit_head()).seq == 1  # type: ignore[union-attr]


async def test_revoke_certificate(
    ca: CertificateAuthority, make_csr: Callable[..., str], clock: FixedClock
) -> None:
    store = ca.store
    assert isinstance(store, SqlStore)
    kept = await issue(ca, make_csr)
    target = await issue(ca, make_csr)
    clock.advance(timedelta(hours=1, microseconds=5))
    when = clock.now()

    revoked = await store.revoke_certificate(
        target.record, "keyCompromise", AuditEvent("certificate.revoked", "test"), when
    )
    assert revoked.status is CertificateStatus.REVOKED
    assert revoked.revoked_at == when
    assert revoked.revocation_reason == "keyCompromise"
    assert (
        dataclasses.replace(
            revoked, status=CertificateStatus.VALID, revoked_at=None, revocation_reason=None
        )
        == target.record
    )
    assert await store.find_certificates(CertificateQuery(serial=target.record.serial)) == [revoked]
    (untouched,) = await store.find_certificates(CertificateQuery(serial=kept.record.serial))
    assert untouched.status is CertificateStatus.VALID
    assert untouched.revoked_at is None

    assert await store.revoked_entries("cso-station-ca", when) == [
        RevokedEntry(target.record.serial, when, "keyCompromise")
    ]
    assert await store.revoked_entries("cso-station-ca", target.record.not_after) == []
    assert await store.revoked_entries("cpo-sub-ca-2", when) == []

    entries_before = len(await store.audit_entries())
    with pytest.raises(StateError, match="already revoked"):
        await store.revoke_certificate(
            target.record, "superseded", AuditEvent("certificate.revoked", "test"), when
        )
    assert len(await store.audit_entries()) == entries_before
    (still,) = await store.find_certificates(CertificateQuery(serial=target.record.serial))
    assert still.revocation_reason == "keyCompromise"
    await assert_chain_intact(store)


async def test_crl_numbers_increase_per_ca_independently(store: SqlStore) -> None:
    first = [await store.allocate_crl_number("cso-station-ca") for _ in range(3)]
    other = [await store.allocate_crl_number("cpo-sub-ca-2") for _ in range(2)]
    later = await store.allocate_crl_number("cso-station-ca")
    assert first == [1, 2, 3]
    assert other == [1, 2]
    assert later == 4


async def test_crl_numbers_are_unique_under_concurrency(store: SqlStore) -> None:
    assert await store.allocate_crl_number("ca") == 1
    numbers = await asyncio.gather(*(store.allocate_crl_number("ca") for _ in range(8)))
    assert sorted(numbers) == list(range(2, 10))


async def test_first_crl_numbers_are_unique_under_concurrency(store: SqlStore) -> None:
    """The first allocation for a CA creates its counter row; concurrent first
    allocations (the scheduler and `pkictl crl` at once) must not collide. To make the
    race certain rather than likely, another connection blocks the counter table until
    every allocation is waiting for it, then lets them all go at once."""
    count = 4
    if store.engine.dialect.name == "sqlite":
        lock = HeldWriteLock(sqlite_path(store), 0.3)
        try:
            numbers = await asyncio.gather(*(store.allocate_crl_number("ca") for _ in range(count)))
        finally:
            lock.join()
    else:
        async with store.engine.begin() as blocker:
            await blocker.execute(text("LOCK TABLE crl_counters IN EXCLUSIVE MODE"))
            tasks = [asyncio.create_task(store.allocate_crl_number("ca")) for _ in range(count)]
            waiting = 0
            for _ in range(200):
                waiting = await scalar(
                    store,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                if waiting >= count:
                    break
                await asyncio.sleep(0.02)
            assert waiting == count, "the allocations never queued on the table lock"
        numbers = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [repr(n) for n in numbers if isinstance(n, BaseException)]
    assert failures == []
    assert sorted(numbers) == list(range(1, count + 1))  # type: ignore[type-var]


async def test_settings_get_and_set(store: SqlStore) -> None:
    at = datetime.now(UTC)
    assert await store.get_setting("ocsp.url") is None
    await store.set_setting("ocsp.url", "http://a/ocsp", AuditEvent("setting.set", "test"), at)
    assert await store.get_setting("ocsp.url") == "http://a/ocsp"
    await store.set_setting("ocsp.url", "http://b/ocsp", AuditEvent("setting.set", "test"), at)
    await store.set_setting("other", "x" * 5000, AuditEvent("setting.set", "test"), at)
    assert await store.get_setting("ocsp.url") == "http://b/ocsp"
    assert await store.get_setting("other") == "x" * 5000
    assert await audit_actions(store) == ["setting.set"] * 3
    await assert_chain_intact(store)


# --- schema ---------------------------------------------------------------------------


async def test_migrations_match_the_schema_module(store: SqlStore) -> None:
    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_store_opens_at_the_head_alembic_computes(store: SqlStore) -> None:
    """Opening a store skips Alembic when the database is current, by a head revision
    read off the file names: it must be the head of Alembic's own revision graph."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    async with store.engine.connect() as connection:
        assert await connection.run_sync(schema_revision) == (head_revision(),) * 2


async def test_an_older_database_is_migrated_when_opened(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await (await open_store(url)).close()

    def downgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, "0018")

    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(downgrade)
    await engine.dispose()
    store = await open_store(url)
    try:
        async with store.engine.connect() as connection:
            assert await connection.run_sync(schema_revision) == (head_revision(),) * 2
            indexes = await connection.run_sync(
                lambda sync: [i["name"] for i in inspect(sync).get_indexes("meter_samples")]
            )
        assert "ix_meter_samples_transaction" in indexes  # made by 0019
    finally:
        await store.close()


async def test_due_for_renewal_index_exists(store: SqlStore) -> None:
    def indexes(connection: Any) -> dict[str, list[str]]:
        return {
            index["name"]: list(index["column_names"])
            for index in inspect(connection).get_indexes("certificates")
        }

    async with store.engine.connect() as connection:
        found = await connection.run_sync(indexes)
    assert found["ix_certificates_due"] == ["status", "renew_after"]


async def test_schema_drift_check_can_fail(store: SqlStore) -> None:
    """The drift check above sees a change: an index dropped behind the schema's back."""

    def diff(connection: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async with store.engine.begin() as connection:
        await connection.execute(text("DROP INDEX ix_certificates_due"))
        differences = await connection.run_sync(diff)
    assert [d[0] for d in differences] == ["add_index"]
    assert differences[0][1].name == "ix_certificates_due"


# --- the SQLite fast path -------------------------------------------------------------


def sqlite_path(store: SqlStore) -> str:
    database = store.engine.url.database
    assert database is not None
    return database


async def raw_rows(store: SqlStore, table: Any) -> list[tuple[Any, ...]]:
    """Rows as the SQLite driver stores them (no type processing)."""
    async with store.engine.connect() as connection:
        result = await connection.exec_driver_sql(
            f"SELECT * FROM {table.name} ORDER BY 1"  # noqa: S608 -- a schema table name
        )
        return [tuple(row) for row in result.all()]


class HeldWriteLock:
    """Another connection holding the SQLite write lock (BEGIN IMMEDIATE) until a timer
    commits it from another thread."""

    def __init__(self, path: str, seconds: float) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("BEGIN IMMEDIATE")
        self.released_at: float | None = None
        self._timer = threading.Timer(seconds, self._release)
        self._timer.start()

    def _release(self) -> None:
        self._connection.execute("COMMIT")
        self.released_at = time.monotonic()

    def join(self) -> None:
        self._timer.join()
        self._connection.close()


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 3, 30, 1, 59, 59, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, 23, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        None,
    ],
)
def test_fast_datetime_processors_match_sqlalchemy(value: datetime | None) -> None:
    """The fused UTCDateTime processors of the fast path store and read exactly what the
    chained SQLAlchemy processors do."""
    dialect = sqlite_dialect.dialect()
    column = certificates.c.not_after.type
    bind = column.dialect_impl(dialect).bind_processor(dialect)
    result = column.dialect_impl(dialect).result_processor(dialect, None)
    assert bind is not None
    assert result is not None
    stored = bind(value)  # TypeDecorator's processors chain process_bind_param
    fast_bind = sqlite_fast.bind_processor(column, dialect)
    fast_result = sqlite_fast.result_processor(column, dialect)
    assert fast_bind is not None
    assert fast_result is not None
    assert fast_bind(value) == stored
    fast_read = fast_result(stored)
    assert fast_read == result(stored)
    assert fast_read == value
    if value is not None:
        assert fast_read.tzinfo is UTC


def test_fast_datetime_processor_refuses_naive_datetimes() -> None:
    dialect = sqlite_dialect.dialect()
    process = sqlite_fast.bind_processor(certificates.c.not_after.type, dialect)
    assert process is not None
    with pytest.raises(ValueError, match="timezone-aware"):
        process(datetime(2025, 1, 1))  # noqa: DTZ001 -- the point of the test


async def test_fast_path_rows_read_back_like_sqlalchemy_rows(sqlite_store: SqlStore) -> None:
    """One record written by the fast path, an identical one by the SQLAlchemy path
    (forced by a held write lock): stored bytes and read-back values are the same."""
    store = sqlite_store
    when = {
        "not_before": datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=1))),
        "not_after": datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC),
        "renew_after": datetime(2025, 10, 3, 4, 5, 6, 789_000, tzinfo=UTC),
    }
    at = datetime(2025, 1, 1, 12, 0, 0, 654_321, tzinfo=UTC)
    fast = observed_record(serial=1, **when)
    slow = observed_record(serial=2, **when)

    await store.record_certificate(fast, AuditEvent("certificate.observed", "fast"), at)
    lock = HeldWriteLock(sqlite_path(store), 0.3)
    try:
        await store.record_certificate(slow, AuditEvent("certificate.observed", "slow"), at)
    finally:
        lock.join()

    assert await store.find_certificates(CertificateQuery(serial=1)) == [fast]
    assert await store.find_certificates(CertificateQuery(serial=2)) == [slow]

    columns = [c.name for c in certificates.c]
    rows = [dict(zip(columns, row, strict=True)) for row in await raw_rows(store, certificates)]
    assert len(rows) == 2
    for column in ("not_before", "not_after", "renew_after", "created_at", "revoked_at"):
        assert rows[0][column] == rows[1][column], column
        assert type(rows[0][column]) is type(rows[1][column]), column
    for column in ("status", "source", "issuer_name_hash", "issuer_dn", "profile"):
        assert rows[0][column] == rows[1][column], column

    audit = await raw_rows(store, audit_log)
    assert [row[1] for row in audit] == [audit[0][1]] * 2  # "at", stored identically
    entries = await store.audit_entries()
    assert [e.event.actor for e in entries] == ["fast", "slow"]
    assert all(e.at == at for e in entries)
    await assert_chain_intact(store)

    # get_station (the fast path) and list_stations (SQLAlchemy) read the same station.
    station = Station("CS001", "SN-0001", None, 3, "hash", at + timedelta(microseconds=7))
    await store.add_station(station, AuditEvent("station.added", "test"), at)
    assert await store.get_station("CS001") == station
    assert await store.list_stations() == [station]


async def test_record_waits_for_a_write_lock_held_elsewhere(
    sqlite_ca: CertificateAuthority, make_csr: Callable[..., str]
) -> None:
    store = sqlite_ca.store
    assert isinstance(store, SqlStore)
    await issue(sqlite_ca, make_csr)  # the fast path is open and warm
    before = len(await store.audit_entries())

    hold = 0.5
    async_transactions: list[object] = []

    def on_async_path(connection: object) -> None:
        async_transactions.append(connection)

    event.listen(store.engine.sync_engine, "begin", on_async_path)
    lock = HeldWriteLock(sqlite_path(store), hold)
    try:
        issued = await issue(sqlite_ca, make_csr)
        finished = time.monotonic()
    finally:
        lock.join()
        event.remove(store.engine.sync_engine, "begin", on_async_path)
    assert lock.released_at is not None
    assert finished >= lock.released_at  # it waited for the lock instead of failing
    assert async_transactions == []  # on the loop, not holding the lock across thread hops

    assert await store.find_certificates(CertificateQuery(serial=issued.record.serial)) == [
        issued.record
    ]
    entries = await store.audit_entries()
    assert len(entries) == before + 1
    assert entries[-1].event.action == "certificate.issued"
    assert entries[-1].event.detail["serial"] == issued.record.serial_hex
    await assert_chain_intact(store)

    # Back to normal afterwards: the next issuance goes through (fast) without waiting.
    started = time.monotonic()
    await issue(sqlite_ca, make_csr)
    assert time.monotonic() - started < hold
    assert len(await store.audit_entries()) == before + 2


async def test_fast_path_integrity_error_rolls_back_and_releases_the_lock(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store
    at = datetime.now(UTC)
    record = observed_record(serial=0x77)
    await store.record_certificate(record, AuditEvent("certificate.observed", "test"), at)
    with pytest.raises(ConflictError):  # same serial and issuer: IntegrityError on the insert
        await store.record_certificate(record, AuditEvent("certificate.observed", "test"), at)

    # The failed transaction did not keep the write lock: another writer gets it at once.
    other = sqlite3.connect(sqlite_path(store), isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()

    assert await scalar(store, "SELECT count(*) FROM certificates") == 1
    assert await audit_actions(store) == ["certificate.observed"]
    # And the store keeps working on the fast path.
    await store.record_certificate(
        observed_record(serial=0x78), AuditEvent("certificate.observed", "test"), at
    )
    assert await scalar(store, "SELECT count(*) FROM certificates") == 2
    await assert_chain_intact(store)
