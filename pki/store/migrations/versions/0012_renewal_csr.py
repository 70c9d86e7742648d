"""renewals.csr_pem: a V2G CSR kept while the station's SECC id is asked for
(GetVariables ISO15118Ctrlr.SeccId)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("renewals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("csr_pem", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("renewals", schema=None) as batch_op:
        batch_op.drop_column("csr_pem")
