"""stations.serial_number and stations.secc_id unique: one certificate subject (CN =
serial number; CN = SECC id for ISO 15118) identifies one registered station (issue 22).

A database that already holds duplicates is NOT resolved here: the upgrade fails before
changing anything, with a ConflictError (exit 5) naming each duplicated value and the
stations holding it. Which of two stations with one serial is the real one is the
operator's call, not something a migration may guess (keeping the older registration
would silently cut off a station; keeping the newer one might keep the impostor). The
message gives the SQL that removes or renames the registrations to drop; `pkictl db
upgrade` then completes. (The CLI cannot be used for it: every command opens the
database, and so migrates it, first.) NULL SECC ids are not duplicates (a station
registered without one).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pki.errors import ConflictError

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

HOW_TO_RESOLVE = (  # advice to the operator, never run
    "One serial or SECC id must identify one station: remove the stations that must not "
    "hold it (DELETE FROM stations WHERE id = '...'), or give them their own (UPDATE "
    "stations SET serial_number = '...' / secc_id = NULL WHERE id = '...'), then run "
    "`pkictl db upgrade`. Nothing was changed."
)
UNIQUE = {"serial_number": "uq_stations_serial_number", "secc_id": "uq_stations_secc_id"}


def _duplicates(column: str) -> list[str]:
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT {column}, id FROM stations WHERE {column} IN ("  # noqa: S608 -- constants
                f"SELECT {column} FROM stations WHERE {column} IS NOT NULL "
                f"GROUP BY {column} HAVING COUNT(*) > 1) ORDER BY {column}, created_at, id"
            )
        )
        .all()
    )
    held: dict[str, list[str]] = {}
    for value, station_id in rows:
        held.setdefault(value, []).append(station_id)
    return [
        f"{column} {value!r} is held by stations {', '.join(ids)}" for value, ids in held.items()
    ]


def upgrade() -> None:
    found = [line for column in UNIQUE for line in _duplicates(column)]
    if found:
        raise ConflictError(
            "cannot make station serial numbers and SECC ids unique (migration 0020): "
            f"{'; '.join(found)}. {HOW_TO_RESOLVE}"
        )
    with op.batch_alter_table("stations") as table:
        for column, name in UNIQUE.items():
            table.create_unique_constraint(name, [column])


def downgrade() -> None:
    with op.batch_alter_table("stations") as table:
        for name in UNIQUE.values():
            table.drop_constraint(name, type_="unique")
