"""ocsp_responses: the OCSP responses kept by CertID -- ours as signed, others as
fetched for GetCertificateStatus and contract checks -- for `pkictl ocsp status` and
to survive a restart

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ocsp_responses",
        sa.Column("algorithm", sa.String(length=8), nullable=False),
        sa.Column("issuer_name_hash", sa.String(length=128), nullable=False),
        sa.Column("issuer_key_hash", sa.String(length=128), nullable=False),
        sa.Column("serial_hex", sa.String(length=40), nullable=False),
        sa.Column("responder", sa.Text(), nullable=False),
        sa.Column("cert_status", sa.String(length=8), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("produced_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("algorithm", "issuer_name_hash", "issuer_key_hash", "serial_hex"),
    )


def downgrade() -> None:
    op.drop_table("ocsp_responses")
