"""Tables of the CA store (SQLAlchemy Core). Migrations in `migrations/` create them;
a test checks that the two never drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, returned timezone-aware: no naive datetime
    ever leaves the store, and comparisons behave the same on SQLite and PostgreSQL."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


stations = Table(
    "stations",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("serial_number", String(64), nullable=False),
    Column("secc_id", String(64), nullable=True),
    Column("security_profile", Integer, nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("allow_expired", Boolean, nullable=False, server_default=false()),
    # One certificate subject identifies one station: CN = serial (station TLS), CN = SECC
    # id (ISO 15118). Several stations may have no SECC id (NULLs are distinct).
    UniqueConstraint("serial_number", name="uq_stations_serial_number"),
    UniqueConstraint("secc_id", name="uq_stations_secc_id"),
)

authorities = Table(
    "authorities",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("issuer", String(64), nullable=True),
    Column("key_name", String(64), nullable=False),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial_hex", String(40), nullable=False),
    Column("issuer_name_hash", String(64), nullable=False),
    Column("issuer_dn", Text, nullable=False),
    Column("issuer_ca", String(64), nullable=True),
    Column("subject_dn", Text, nullable=False),
    Column("profile", String(64), nullable=True),
    Column("station_id", String(48), nullable=True),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("renew_after", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("fingerprint_sha256", String(64), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("first_seen", UTCDateTime, nullable=True),
    Column("last_seen", UTCDateTime, nullable=True),
    # (serial, issuer) identifies a certificate; serial first, so that it also serves
    # lookups by serial alone (`cert show`, OCSP). Every index costs each issuance a
    # b-tree update: none is kept that a query does not use.
    UniqueConstraint("serial_hex", "issuer_name_hash", name="uq_certificates_serial_issuer"),
    Index("ix_certificates_due", "status", "renew_after"),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_station", "station_id"),
)

crl_counters = Table(
    "crl_counters",
    metadata,
    Column("issuer_ca", String(64), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

crls = Table(
    "crls",
    metadata,
    Column("issuer_ca", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("der", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("action", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("target", String(256), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

trust_anchors = Table(
    "trust_anchors",
    metadata,
    Column("fingerprint_sha256", String(64), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("subject_dn", Text, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

rollovers = Table(
    "rollovers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("authority", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    # the authority's name while the rollover is open, NULL once it ended: unique, so at
    # most one rollover per authority is open on any database.
    Column("open_slot", String(64), nullable=True, unique=True),
    Column("key_name", String(64), nullable=False),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("link_der", LargeBinary, nullable=False),
    Column("previous_der", LargeBinary, nullable=False),  # the root in force at the start
    Column("started_at", UTCDateTime, nullable=False),
    Column("switched_at", UTCDateTime, nullable=True),
    UniqueConstraint("authority", "generation", name="uq_rollovers_generation"),
)
