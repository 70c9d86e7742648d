"""alerts: what an operator must act on (failed or abandoned renewals)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

`csms.db.schema.alerts`, written by `csms.services.alerts`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_station", ["station_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("alerts")
