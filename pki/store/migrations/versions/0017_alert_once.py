"""alerts.once_key: an alert raised once per subject (a certificate about to expire
unrenewed is announced once, however many scans see it)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("once_key", sa.String(96), nullable=True))
        batch.create_unique_constraint("uq_alerts_once_key", ["once_key"])


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint("uq_alerts_once_key", type_="unique")
        batch.drop_column("once_key")
