"""A serial number and a SECC id each identify one station (issue 22, items 1 and 4):
unique constraints in the database (migration 0020), refusals naming the station that
holds the value, and an upgrade that refuses, changing nothing, a database that already
holds duplicates -- on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from pki.audit import AuditEvent
from pki.errors import ConflictError, IdentityTaken
from pki.records import Station
from pki.store.schema import stations
from pki.store.sql import SqlStore, _alembic_config, current_revision, head_revision

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CS001 = Station("CS001", "SN-0001", "DE*ABC*E0001", 3, None, AT)


def added(station_id: str) -> AuditEvent:
    return AuditEvent("station.added", "test", f"station:{station_id}")


async def test_a_serial_held_by_a_station_is_refused_naming_it(store: SqlStore) -> None:
    await store.add_station(CS001, added("CS001"), AT)
    with pytest.raises(IdentityTaken) as taken:
        await store.add_station(replace(CS001, id="CS003", secc_id=None), added("CS003"), AT)
    assert (taken.value.field, taken.value.value, taken.value.held_by) == (
        "serial", "SN-0001", "CS001",
    )  # fmt: skip
    assert "station 'CS001'" in str(taken.value)
    assert [s.id for s in await store.list_stations()] == ["CS001"]


async def test_a_secc_id_held_by_a_station_is_refused_naming_it(store: SqlStore) -> None:
    await store.add_station(CS001, added("CS001"), AT)
    with pytest.raises(IdentityTaken) as taken:
        await store.add_station(replace(CS001, id="CS003", serial_number="SN-3"), added("x"), AT)
    assert (taken.value.field, taken.value.held_by) == ("secc-id", "CS001")
    # stations without a SECC id are many
    for n in (4, 5):
        await store.add_station(
            replace(CS001, id=f"CS00{n}", serial_number=f"SN-{n}", secc_id=None), added("x"), AT
        )
    await store.set_secc_id("CS004", "DE*ABC*E0004", added("CS004"), AT)
    with pytest.raises(IdentityTaken) as taken:
        await store.set_secc_id("CS005", "DE*ABC*E0001", added("CS005"), AT)
    assert taken.value.held_by == "CS001"
    assert (await store.get_station("CS005")) == replace(
        CS001, id="CS005", serial_number="SN-5", secc_id=None
    )
    with pytest.raises(ConflictError, match="already registered"):
        await store.add_station(replace(CS001, serial_number="SN-9"), added("CS001"), AT)


async def test_the_database_itself_refuses_a_duplicate(store: SqlStore) -> None:
    """A constraint, not only a check: a writer that skips the store is refused too."""
    await store.add_station(CS001, added("CS001"), AT)
    row = {"security_profile": 3, "created_at": AT, "allow_expired": False}
    for duplicate in (
        {"id": "CS002", "serial_number": "SN-0001", "secc_id": None},
        {"id": "CS002", "serial_number": "SN-0002", "secc_id": "DE*ABC*E0001"},
    ):
        with pytest.raises(IntegrityError):
            async with store.engine.begin() as connection:
                await connection.execute(insert(stations).values(**row, **duplicate))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    url: str = request.getfixturevalue("postgres_url")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        await connection.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()
    return url


async def test_migration_0020_refuses_a_database_with_duplicates(empty_database: str) -> None:
    url = empty_database
    engine = create_async_engine(url)

    def migrate(connection: Any, revision: str) -> None:
        command.upgrade(_alembic_config(connection), revision)

    def insert_station(connection: Any, station_id: str, serial: str, secc: str | None) -> None:
        connection.execute(
            insert(stations).values(
                id=station_id, serial_number=serial, secc_id=secc, security_profile=3,
                created_at=AT, allow_expired=False,
            )
        )  # fmt: skip

    try:
        async with engine.begin() as connection:
            await connection.run_sync(migrate, "0019")
            for station_id, serial, secc in (
                ("CS001", "SN-0001", "SECC-1"), ("CS003", "SN-0001", None),
                ("CS004", "SN-0004", "SECC-1"), ("CS005", "SN-0005", None),
            ):  # fmt: skip
                await connection.run_sync(insert_station, station_id, serial, secc)
        with pytest.raises(ConflictError) as refused:
            async with engine.begin() as connection:
                await connection.run_sync(migrate, "head")
        message = str(refused.value)
        assert "serial_number 'SN-0001' is held by stations CS001, CS003" in message
        assert "secc_id 'SECC-1' is held by stations CS001, CS004" in message
        assert "Nothing was changed" in message
        async with engine.connect() as connection:
            assert await connection.run_sync(current_revision) == "0019"
        # The operator resolves them; the upgrade then completes.
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DELETE FROM stations WHERE id = 'CS003'")
            await connection.exec_driver_sql(
                "UPDATE stations SET secc_id = NULL WHERE id = 'CS004'"
            )
        async with engine.begin() as connection:
            await connection.run_sync(migrate, "head")
            assert await connection.run_sync(current_revision) == head_revision()
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.run_sync(insert_station, "CS006", "SN-0005", None)
    finally:
        await engine.dispose()
