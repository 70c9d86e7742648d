"""rollovers, rollover_stations: root CA rollovers and their per-station campaign

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollovers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("open_slot", sa.String(length=64), nullable=True),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("link_der", sa.LargeBinary(), nullable=False),
        sa.Column("previous_der", sa.LargeBinary(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("switched_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_slot"),
        sa.UniqueConstraint("authority", "generation", name="uq_rollovers_generation"),
    )
    op.create_table(
        "rollover_stations",
        sa.Column("rollover_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("rollover_id", "station_id"),
    )
    with op.batch_alter_table("rollover_stations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rollover_stations_outbox_id"), ["outbox_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("rollover_stations")
    op.drop_table("rollovers")
