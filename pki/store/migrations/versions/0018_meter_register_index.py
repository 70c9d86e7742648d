"""ix_meter_samples_register: a transaction's samples by measurand and time, so that
the first and the last energy register reading of a TransactionEvent summary are read
from the index (they were sorted out of every sample of the transaction at each event)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMNS = ["station_id", "transaction_id", "measurand", "timestamp", "value"]


def upgrade() -> None:
    op.create_index("ix_meter_samples_register", "meter_samples", COLUMNS)
    # its first two columns serve every lookup the old index served
    op.drop_index("ix_meter_samples_transaction", table_name="meter_samples")


def downgrade() -> None:
    op.create_index(
        "ix_meter_samples_transaction", "meter_samples", ["station_id", "transaction_id"]
    )
    op.drop_index("ix_meter_samples_register", table_name="meter_samples")
