"""The SQL of root rollovers, on a connection the caller's transaction owns: a rollover
opens, switches or ends in the same transaction as its certificates and audit entry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pki.errors import ConflictError, StateError
from pki.records import Authority, CertificateRecord, Rollover, RolloverState
from pki.store.rows import certificate_values
from pki.store.schema import authorities, certificates, rollovers, settings

AUTHORITIES_REVISION = "authorities.revision"
"""A setting that changes whenever an authority's certificate or key changes under a
running service: processes that cache issuers compare it to know when to reload."""


def to_rollover(row: Row[Any]) -> Rollover:
    return Rollover(
        id=row.id, authority=row.authority, generation=row.generation,
        state=RolloverState(row.state), key_name=row.key_name,
        certificate_der=row.certificate_der, link_der=row.link_der,
        previous_der=row.previous_der,
        started_at=row.started_at, switched_at=row.switched_at,
    )  # fmt: skip


async def insert_rollover(
    connection: AsyncConnection,
    rollover: Rollover,
    records: Sequence[CertificateRecord],
    at: datetime,
) -> int:
    result = await connection.execute(
        insert(rollovers).values(
            authority=rollover.authority,
            generation=rollover.generation,
            state=RolloverState.OPEN.value,
            open_slot=rollover.authority,
            key_name=rollover.key_name,
            certificate_der=rollover.certificate_der,
            link_der=rollover.link_der,
            previous_der=rollover.previous_der,
            started_at=rollover.started_at,
        )
    )
    await connection.execute(insert(certificates), [certificate_values(r, at) for r in records])
    (rollover_id,) = result.inserted_primary_key or (None,)
    assert isinstance(rollover_id, int)
    return rollover_id


async def end_rollover(
    connection: AsyncConnection, rollover_id: int, state: RolloverState, at: datetime
) -> None:
    """open -> ``state``; StateError if it is not open (any more)."""
    result = await connection.execute(
        update(rollovers)
        .where(rollovers.c.id == rollover_id, rollovers.c.state == RolloverState.OPEN.value)
        .values(
            state=state.value,
            open_slot=None,
            switched_at=at if state is RolloverState.SWITCHED else None,
        )
    )
    if result.rowcount != 1:
        raise StateError(f"rollover {rollover_id} is not open")


async def replace_authorities(
    connection: AsyncConnection,
    changed: Sequence[tuple[Authority, bytes]],
    records: Sequence[CertificateRecord],
    at: datetime,
    revision: str | None,
) -> None:
    """New certificates (and key names) for existing authorities, each only if it still
    has the certificate given with it; the records of new certificates; and, when
    ``revision`` is given, a new AUTHORITIES_REVISION."""
    for authority, previous_der in changed:
        result = await connection.execute(
            update(authorities)
            .where(authorities.c.name == authority.name)
            .where(authorities.c.certificate_der == previous_der)
            .values(certificate_der=authority.certificate_der, key_name=authority.key_name)
        )
        if result.rowcount != 1:
            raise ConflictError(
                f"authority {authority.name!r} changed meanwhile (or is gone); nothing was "
                "written: try again"
            )
    if records:
        await connection.execute(insert(certificates), [certificate_values(r, at) for r in records])
    if revision is None:
        return
    updated = await connection.execute(
        update(settings).where(settings.c.key == AUTHORITIES_REVISION).values(value=revision)
    )
    if updated.rowcount == 0:
        await connection.execute(insert(settings).values(key=AUTHORITIES_REVISION, value=revision))


async def select_rollovers(connection: AsyncConnection, authority: str) -> list[Rollover]:
    rows = await connection.execute(
        select(rollovers).where(rollovers.c.authority == authority).order_by(rollovers.c.id)
    )
    return [to_rollover(r) for r in rows]
