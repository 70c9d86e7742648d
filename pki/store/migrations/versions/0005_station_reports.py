"""station reports: what stations tell the CSMS without expecting anything back

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

StatusNotification, NotifyEvent, NotifyReport, FirmwareStatusNotification and
LogStatusNotification, stored as received (`csms.db.schema.station_reports`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("station_reports", schema=None) as batch_op:
        batch_op.create_index("ix_station_reports_station", ["station_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("station_reports")
