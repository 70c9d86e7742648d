"""ix_renewals_state: renewals by state (the in-flight count and the held-back queue
of the renewal cap, the recovery of half-done steps)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_renewals_state", "renewals", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_renewals_state", table_name="renewals")
