"""renewals: the certificate renewal workflow, one row per attempt, persisted per step

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

`csms.db.schema.renewals`; its states are `csms.domain.renewal`'s transition table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "renewals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("open_slot", sa.String(length=96), nullable=True),
        sa.Column("old_serial", sa.String(length=40), nullable=True),
        sa.Column("new_serial", sa.String(length=40), nullable=True),
        sa.Column("csr_key_sha256", sa.String(length=64), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_slot"),
    )
    with op.batch_alter_table("renewals", schema=None) as batch_op:
        batch_op.create_index("ix_renewals_station", ["station_id", "id"], unique=False)
        batch_op.create_index("ix_renewals_outbox_id", ["outbox_id"], unique=False)


def downgrade() -> None:
    op.drop_table("renewals")
