"""installed_certificates, inventory_refreshes: what each station reported installed
(GetInstalledCertificateIds), and when

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installed_certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("certificate_type", sa.String(length=32), nullable=False),
        sa.Column("hash_data", sa.Text(), nullable=False),
        sa.Column("children", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("installed_certificates", schema=None) as batch_op:
        batch_op.create_index("ix_installed_certificates_station", ["station_id"], unique=False)
    op.create_table(
        "inventory_refreshes",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("station_id"),
    )


def downgrade() -> None:
    op.drop_table("inventory_refreshes")
    op.drop_table("installed_certificates")
