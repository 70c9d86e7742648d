"""trust anchors the operator adds: station CAs (a manufacturer's factory CA), and
later MO / V2G roots

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust_anchors",
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("subject_dn", sa.Text(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=False), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint_sha256"),
    )


def downgrade() -> None:
    op.drop_table("trust_anchors")
