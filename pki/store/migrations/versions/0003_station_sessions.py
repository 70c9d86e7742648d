"""station sessions: who is connected, since when, with which certificate

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

The table belongs to the CSMS (`csms.db.schema`); the database has one history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_sessions",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("security_profile", sa.Integer(), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("boot_pending", sa.Boolean(), nullable=False),
        sa.Column("certificate_serial", sa.String(length=40), nullable=True),
        sa.Column("certificate_not_after", sa.DateTime(timezone=False), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("station_id"),
    )


def downgrade() -> None:
    op.drop_table("station_sessions")
