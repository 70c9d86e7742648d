"""transactions.meter_start_at / meter_stop_at: the times of the first and the last energy
register reading, so that a TransactionEvent merges its own readings into the summary in
its upsert, without reading the transaction's samples (two SELECTs per event before).
Nothing reads the samples in register order any more: ix_meter_samples_register (0018)
gives way to the narrower index on (station, transaction) it had replaced.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TRANSACTION = ["station_id", "transaction_id"]
REGISTER = [*TRANSACTION, "measurand", "timestamp", "value"]
_REGISTER = """
    SELECT {end}(s.timestamp) FROM meter_samples s
    WHERE s.station_id = transactions.station_id
      AND s.transaction_id = transactions.transaction_id
      AND s.measurand = 'Energy.Active.Import.Register' AND s.phase IS NULL
      AND (s.unit IS NULL OR s.unit IN ('Wh', 'kWh'))
"""


def upgrade() -> None:
    with op.batch_alter_table("transactions") as table:
        table.add_column(sa.Column("meter_start_at", sa.DateTime(), nullable=True))
        table.add_column(sa.Column("meter_stop_at", sa.DateTime(), nullable=True))
    # the readings stored so far: their times, from the samples they were read from
    op.execute(
        f"UPDATE transactions SET meter_start_at = ({_REGISTER.format(end='min')}), "  # noqa: S608 -- constants
        f"meter_stop_at = ({_REGISTER.format(end='max')}) WHERE meter_start_wh IS NOT NULL"
    )
    op.create_index("ix_meter_samples_transaction", "meter_samples", TRANSACTION)
    op.drop_index("ix_meter_samples_register", table_name="meter_samples")


def downgrade() -> None:
    op.create_index("ix_meter_samples_register", "meter_samples", REGISTER)
    op.drop_index("ix_meter_samples_transaction", table_name="meter_samples")
    with op.batch_alter_table("transactions") as table:
        table.drop_column("meter_stop_at")
        table.drop_column("meter_start_at")
