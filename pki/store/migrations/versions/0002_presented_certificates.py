"""stations may renew an expired certificate; when certificates were presented

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

`stations.allow_expired`: admit this station with an expired certificate so it can renew
(OCPP A00.FR.429). `certificates.first_seen` / `last_seen`: when a station presented the
certificate at the TLS handshake (NULL: never presented).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allow_expired", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_seen", sa.DateTime(timezone=False), nullable=True))
        batch_op.add_column(sa.Column("last_seen", sa.DateTime(timezone=False), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_column("last_seen")
        batch_op.drop_column("first_seen")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("allow_expired")
