"""nodes, leases; station_sessions.node_id, outbox.node_id: several `pkictl serve`
processes sharing one database (ADR 13)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("stop_reason", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_nodes_live", "nodes", ["stopped_at", "heartbeat_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("station_sessions") as table:
        table.add_column(sa.Column("node_id", sa.String(length=40), nullable=True))
    with op.batch_alter_table("outbox") as table:
        table.add_column(sa.Column("node_id", sa.String(length=40), nullable=True))
    op.create_index("ix_outbox_sent_by", "outbox", ["state", "node_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_sent_by", table_name="outbox")
    with op.batch_alter_table("outbox") as table:
        table.drop_column("node_id")
    with op.batch_alter_table("station_sessions") as table:
        table.drop_column("node_id")
    op.drop_table("leases")
    op.drop_index("ix_nodes_live", table_name="nodes")
    op.drop_table("nodes")
