"""NodeStore on SQLAlchemy: the `nodes` and `leases` tables. Declaring a node lost and
taking a lease are conditional updates, so concurrent nodes agree on one outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update

from csms.db.schema import leases, nodes, outbox, station_sessions
from csms.domain.outbox import CallState
from csms.services.nodes import NodeRecord
from pki.store.inline import Database
from pki.store.sql import upsert

STOPPED, LOST = "stopped", "lost"


class SqlNodeStore:
    """Every call is one unit of work (inline on SQLite)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def register(self, node: NodeRecord) -> None:
        statement = insert(nodes).values(
            id=node.id, host=node.host, pid=node.pid, started_at=node.started_at,
            heartbeat_at=node.heartbeat_at,
        )  # fmt: skip
        await self._database.write(lambda connection: connection.execute(statement))

    async def heartbeat(self, node_id: str, at: datetime, lease_until: datetime) -> bool:
        def work(connection: Connection) -> bool:
            lost = connection.execute(
                select(nodes.c.stop_reason).where(nodes.c.id == node_id)
            ).scalar_one_or_none()
            connection.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(heartbeat_at=at, stopped_at=None, stop_reason=None)
            )
            connection.execute(
                update(leases).where(leases.c.holder == node_id).values(expires_at=lease_until)
            )
            return lost == LOST

        return await self._database.write(work)

    async def stop(self, node_id: str, at: datetime) -> None:
        def work(connection: Connection) -> None:
            connection.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(stopped_at=at, stop_reason=STOPPED)
            )
            connection.execute(leases.delete().where(leases.c.holder == node_id))

        await self._database.write(work)

    async def reap(
        self,
        silent_since: datetime | None,
        at: datetime,
        *,
        sweep: bool,
        dead: Sequence[str] = (),
        patient: Sequence[str] = (),
        patient_since: datetime | None = None,
    ) -> list[str]:
        conditions: list[ColumnElement[bool]] = [nodes.c.id.in_(list(dead))]
        if silent_since is not None:
            conditions.append(
                and_(nodes.c.heartbeat_at < silent_since, nodes.c.id.not_in(list(patient)))
            )
            if patient and patient_since is not None:
                conditions.append(
                    and_(nodes.c.heartbeat_at < patient_since, nodes.c.id.in_(list(patient)))
                )
        gone = or_(*conditions)

        def work(connection: Connection) -> list[str]:
            silent = connection.execute(
                select(nodes.c.id).where(nodes.c.stopped_at.is_(None), gone)
            ).scalars().all()  # fmt: skip
            lost = [
                node_id for node_id in silent
                if connection.execute(
                    update(nodes)
                    .where(nodes.c.id == node_id, nodes.c.stopped_at.is_(None))
                    .values(stopped_at=at, stop_reason=LOST)
                ).rowcount == 1
            ]  # fmt: skip
            if lost:  # what they led is free for another node now
                connection.execute(leases.delete().where(leases.c.holder.in_(lost)))
            if not (sweep or lost):
                return lost
            for column, condition, values in (
                (station_sessions.c.node_id, station_sessions.c.online.is_(True),
                 {"online": False}),
                (outbox.c.node_id, outbox.c.state == CallState.SENT.value,
                 {"state": CallState.QUEUED.value, "node_id": None}),
            ):  # fmt: skip
                table = column.table
                connection.execute(
                    update(table).where(condition, _gone(column, lost, sweep=sweep)).values(values)
                )
            return lost

        return await self._database.write(work)

    async def take_lease(self, name: str, node_id: str, at: datetime, until: datetime) -> bool:
        def work(connection: Connection) -> bool:
            taken = connection.execute(
                update(leases)
                .where(leases.c.name == name,
                       or_(leases.c.holder == node_id, leases.c.expires_at < at))
                .values(holder=node_id, expires_at=until)
            ).rowcount  # fmt: skip
            if taken:
                return True
            values = {"name": name, "holder": node_id, "expires_at": until}
            inserted = connection.execute(  # a first holder; else another node holds it
                upsert(connection.dialect, leases, values).on_conflict_do_nothing(
                    index_elements=[leases.c.name]
                )
            ).rowcount
            return bool(inserted)

        return await self._database.write(work)

    async def list(self, *, include_stopped: bool, at: datetime) -> list[NodeRecord]:
        online = (
            select(station_sessions.c.node_id, func.count().label("stations"))
            .where(station_sessions.c.online.is_(True))
            .group_by(station_sessions.c.node_id)
            .subquery()
        )
        statement = (
            select(nodes, func.coalesce(online.c.stations, 0).label("stations"))
            .outerjoin(online, online.c.node_id == nodes.c.id)
            .order_by(nodes.c.started_at, nodes.c.id)
        )
        if not include_stopped:
            statement = statement.where(nodes.c.stopped_at.is_(None))

        def work(connection: Connection) -> list[NodeRecord]:
            held: dict[str, list[str]] = {}
            for lease in connection.execute(
                select(leases).where(leases.c.expires_at >= at).order_by(leases.c.name)
            ):
                held.setdefault(lease.holder, []).append(lease.name)
            return [
                NodeRecord(
                    **{key: row._mapping[key] for key in NODE_FIELDS},
                    leases=tuple(held.get(row.id, ())),
                )
                for row in connection.execute(statement)
            ]

        return await self._database.read(work)


NODE_FIELDS = ("id", "host", "pid", "started_at", "heartbeat_at", "stopped_at", "stop_reason",
               "stations")  # fmt: skip


def _gone(column: ColumnElement[Any], lost: list[str], *, sweep: bool) -> ColumnElement[bool]:
    """Rows held by the nodes just declared lost -- or, sweeping, by any node not live
    and by none (rows written before there were nodes)."""
    if not sweep:
        return column.in_(lost)
    live = select(nodes.c.id).where(nodes.c.stopped_at.is_(None)).scalar_subquery()
    return or_(column.is_(None), column.not_in(live))
