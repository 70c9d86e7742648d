"""Tables of the CSMS (SQLAlchemy Core), on the store's shared MetaData."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Integer, String, Table

from pki.store.schema import UTCDateTime, metadata

station_sessions = Table(
    "station_sessions",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("online", Boolean, nullable=False),
    Column("security_profile", Integer, nullable=False),
    Column("remote", String(64), nullable=False),
    Column("boot_pending", Boolean, nullable=False),
    Column("certificate_serial", String(40), nullable=True),
    Column("certificate_not_after", UTCDateTime, nullable=True),
    Column("connected_at", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
)
