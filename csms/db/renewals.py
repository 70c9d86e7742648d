"""RenewalStore on SQLAlchemy: the `renewals` table. Every step is a conditional update
(WHERE state = the expected one), and `open_slot` keeps one open renewal per station and
kind, so concurrent requests join one renewal instead of starting two."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from csms.db.schema import renewals, station_sessions
from csms.domain.renewal import ENDED, UNDER_WAY, CertificateKind, RenewalState
from csms.services.renewal_ports import Renewal
from pki.store.inline import Database
from pki.store.sql import upsert


def _slot(station_id: str, kind: CertificateKind) -> str:
    return f"{station_id}|{kind.value}"


class SqlRenewalStore:
    """Each step of a renewal is a unit of work: inline on SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    async def open_renewal(self, station_id: str, kind: CertificateKind) -> Renewal | None:
        return await self._one(renewals.c.open_slot == _slot(station_id, kind))

    async def open_renewals(self, station_id: str) -> list[Renewal]:
        slots = [_slot(station_id, kind) for kind in CertificateKind]
        statement = select(renewals).where(renewals.c.open_slot.in_(slots))
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(row) for row in rows]

    async def create(
        self,
        station_id: str,
        kind: CertificateKind,
        state: RenewalState,
        *,
        requested_by: str,
        old_serial: str | None,
        at: datetime,
    ) -> Renewal | None:
        statement = (
            insert(renewals)
            .values(
                station_id=station_id, kind=kind.value, state=state.value,
                open_slot=_slot(station_id, kind), old_serial=old_serial,
                requested_by=requested_by, created_at=at, updated_at=at,
            )
            .returning(renewals.c.id)
        )  # fmt: skip
        try:
            renewal_id: int = await self._database.write(
                lambda connection: connection.execute(statement).scalar_one()
            )
        except IntegrityError:
            return None  # one is open already
        return await self.get(renewal_id)

    async def create_many(
        self,
        wanted: Sequence[tuple[str, CertificateKind, str | None]],
        *,
        requested_by: str,
        at: datetime,
    ) -> list[Renewal]:
        slots = [_slot(station_id, kind) for station_id, kind, _ in wanted]
        rows = [
            {"station_id": station_id, "kind": kind.value, "state": RenewalState.DUE.value,
             "open_slot": slot, "old_serial": old_serial, "requested_by": requested_by,
             "created_at": at, "updated_at": at}
            for (station_id, kind, old_serial), slot in zip(wanted, slots, strict=True)
        ]  # fmt: skip

        def work(connection: Connection) -> list[Renewal]:
            if rows:
                connection.execute(
                    upsert(connection.dialect, renewals, rows[0]).on_conflict_do_nothing(
                        index_elements=[renewals.c.open_slot]
                    ),
                    rows,
                )  # (an open one stays as it is)
            statement = select(renewals).where(renewals.c.open_slot.in_(slots))
            found = {row.open_slot: _renewal(row) for row in connection.execute(statement)}
            return [found[slot] for slot in slots]

        return await self._database.write(work)

    async def move(
        self, renewal_id: int, from_state: RenewalState, to_state: RenewalState, at: datetime,
        **fields: Any,
    ) -> bool:  # fmt: skip
        values: dict[str, Any] = {"state": to_state.value, "updated_at": at, **fields}
        if to_state in ENDED:
            values["open_slot"] = None
        statement = (
            update(renewals)
            .where(renewals.c.id == renewal_id, renewals.c.state == from_state.value)
            .values(values)
        )
        moved: int = await self._database.write(
            lambda connection: connection.execute(statement).rowcount
        )
        return bool(moved)

    async def set_outbox_id(self, renewal_id: int, outbox_id: int) -> None:
        statement = update(renewals).where(renewals.c.id == renewal_id).values(outbox_id=outbox_id)
        await self._database.write(lambda connection: connection.execute(statement))

    async def get(self, renewal_id: int) -> Renewal:
        found = await self._one(renewals.c.id == renewal_id)
        if found is None:
            raise LookupError(f"no renewal #{renewal_id}")
        return found

    async def get_many(self, renewal_ids: Sequence[int]) -> list[Renewal]:
        found: dict[int, Renewal] = {}
        for start in range(0, len(renewal_ids), 500):  # bounded IN lists
            chunk = renewal_ids[start : start + 500]
            found.update((r.id, r) for r in await self._all(renewals.c.id.in_(chunk)))
        if missing := [i for i in renewal_ids if i not in found]:
            raise LookupError(f"no renewal #{missing[0]}")
        return [found[i] for i in renewal_ids]

    async def by_outbox_id(self, outbox_id: int) -> Renewal | None:
        return await self._one(renewals.c.outbox_id == outbox_id)

    async def in_state(self, state: RenewalState) -> list[Renewal]:
        statement = select(renewals).where(renewals.c.state == state.value).order_by(renewals.c.id)
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(r) for r in rows]

    async def replaced_unrevoked(self, confirmed_before: datetime) -> list[Renewal]:
        statement = (
            select(renewals)
            .where(
                renewals.c.state == RenewalState.CONFIRMED.value,
                renewals.c.updated_at <= confirmed_before,
                renewals.c.old_serial.is_not(None),
                renewals.c.old_revoked_at.is_(None),
            )
            .order_by(renewals.c.id)
            .limit(1000)
        )
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(r) for r in rows]

    async def set_old_revoked(self, renewal_ids: Sequence[int], at: datetime) -> None:
        statement = update(renewals).where(renewals.c.id.in_(renewal_ids)).values(old_revoked_at=at)
        await self._database.write(lambda connection: connection.execute(statement))

    async def count_in_flight(self) -> int:
        statement = (
            select(func.count())
            .select_from(renewals.join(
                station_sessions, station_sessions.c.station_id == renewals.c.station_id
            ))
            .where(
                renewals.c.state.in_(sorted(UNDER_WAY)),  # ix_renewals_state
                station_sessions.c.online.is_(True),
            )
        )  # fmt: skip
        count: int = await self._database.read(
            lambda connection: connection.execute(statement).scalar_one()
        )
        return count

    async def waiting(
        self, limit: int, station_id: str | None = None, node_id: str | None = None
    ) -> list[Renewal]:
        statement = (
            select(renewals)
            .join(station_sessions, station_sessions.c.station_id == renewals.c.station_id)
            .where(
                renewals.c.state == RenewalState.DUE.value,
                renewals.c.open_slot.is_not(None),
                station_sessions.c.online.is_(True),
            )
            .order_by(renewals.c.id)
            .limit(limit)
        )
        if station_id is not None:
            statement = statement.where(renewals.c.station_id == station_id)
        if node_id is not None:
            statement = statement.where(station_sessions.c.node_id == node_id)
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(r) for r in rows]

    async def online(self, station_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(station_ids), 500):  # bounded IN lists
            statement = select(station_sessions.c.station_id).where(
                station_sessions.c.station_id.in_(station_ids[start : start + 500]),
                station_sessions.c.online.is_(True),
            )
            found.update(row[0] for row in await self._read_all(statement))
        return found

    async def triggered_online(self, before: datetime, limit: int) -> list[Renewal]:
        statement = (
            select(renewals)
            .join(station_sessions, station_sessions.c.station_id == renewals.c.station_id)
            .where(
                renewals.c.state == RenewalState.TRIGGERED.value,  # ix_renewals_state
                renewals.c.updated_at <= before,
                station_sessions.c.online.is_(True),
            )
            .order_by(renewals.c.id)
            .limit(limit)
        )
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(r) for r in rows]

    async def count_open(self) -> int:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(func.count()).select_from(renewals).where(renewals.c.open_slot.is_not(None))
            )
            return int(result.scalar_one())

    async def failures_since_success(
        self, station_id: str, kind: CertificateKind
    ) -> list[datetime]:
        statement = (
            select(renewals.c.state, renewals.c.updated_at)
            .where(renewals.c.station_id == station_id, renewals.c.kind == kind.value)
            .order_by(renewals.c.id.desc())
            .limit(100)
        )
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        failures = []
        for row in rows:
            if row.state == RenewalState.CONFIRMED.value:
                break
            if row.state == RenewalState.FAILED.value:
                failures.append(row.updated_at)
        return failures

    async def list(
        self, station_id: str | None, limit: int, *, latest_only: bool = False
    ) -> list[Renewal]:
        statement = select(renewals).order_by(renewals.c.id.desc()).limit(limit)
        if station_id is not None:
            statement = statement.where(renewals.c.station_id == station_id)
        if latest_only:
            latest = select(func.max(renewals.c.id)).group_by(
                renewals.c.station_id, renewals.c.kind
            )
            statement = statement.where(renewals.c.id.in_(latest.scalar_subquery()))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_renewal(r) for r in reversed(rows)]

    async def _read_all(self, statement: Any) -> Sequence[Any]:
        rows: Sequence[Any] = await self._database.read(
            lambda connection: connection.execute(statement).all()
        )
        return rows

    async def _all(self, condition: Any) -> Sequence[Renewal]:
        statement = select(renewals).where(condition)
        rows = await self._database.read(lambda connection: connection.execute(statement).all())
        return [_renewal(r) for r in rows]

    async def _one(self, condition: Any) -> Renewal | None:
        statement = select(renewals).where(condition)
        row = await self._database.read(lambda connection: connection.execute(statement).first())
        return _renewal(row) if row else None


def _renewal(row: Row[Any]) -> Renewal:
    return Renewal(
        id=row.id,
        station_id=row.station_id,
        kind=CertificateKind(row.kind),
        state=RenewalState(row.state),
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        old_serial=row.old_serial,
        new_serial=row.new_serial,
        csr_key_sha256=row.csr_key_sha256,
        outbox_id=row.outbox_id,
        reason=row.reason,
        csr_pem=row.csr_pem,
    )
