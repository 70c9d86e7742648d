"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Dates are naive UTC (pki.store.schema.UTCDateTime). The audit head row is seeded here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "authorities",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=True),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("serial_hex", sa.String(length=40), nullable=False),
        sa.Column("issuer_name_hash", sa.String(length=64), nullable=False),
        sa.Column("issuer_dn", sa.Text(), nullable=False),
        sa.Column("issuer_ca", sa.String(length=64), nullable=True),
        sa.Column("subject_dn", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("station_id", sa.String(length=48), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=False), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=False), nullable=False),
        sa.Column("renew_after", sa.DateTime(timezone=False), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("serial_hex", "issuer_name_hash", name="uq_certificates_serial_issuer"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index("ix_certificates_due", ["status", "renew_after"], unique=False)
        batch_op.create_index("ix_certificates_not_after", ["not_after"], unique=False)
        batch_op.create_index("ix_certificates_station", ["station_id"], unique=False)

    op.create_table(
        "crl_counters",
        sa.Column("issuer_ca", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_ca"),
    )
    op.create_table(
        "crls",
        sa.Column("issuer_ca", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("issuer_ca", "number"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "stations",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("serial_number", sa.String(length=64), nullable=False),
        sa.Column("secc_id", sa.String(length=64), nullable=True),
        sa.Column("security_profile", sa.Integer(), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("stations")
    op.drop_table("settings")
    op.drop_table("crls")
    op.drop_table("crl_counters")
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_station")
        batch_op.drop_index("ix_certificates_serial")
        batch_op.drop_index("ix_certificates_not_after")
        batch_op.drop_index("ix_certificates_due")

    op.drop_table("certificates")
    op.drop_table("authorities")
    op.drop_table("audit_log")
    op.drop_table("audit_head")
