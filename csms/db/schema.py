"""Tables of the CSMS (SQLAlchemy Core), on the store's shared MetaData."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    Column("node_id", String(40), nullable=True),  # the node holding the connection
)

id_tokens = Table(
    "id_tokens",
    metadata,
    Column("id_token", String(255), primary_key=True),
    Column("type", String(20), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("transaction_id", String(36), primary_key=True),
    Column("id_token", String(255), nullable=True),
    Column("evse_id", Integer, nullable=True),
    Column("connector_id", Integer, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("stopped_reason", String(32), nullable=True),
    Column("meter_start_wh", Float, nullable=True),
    Column("meter_stop_wh", Float, nullable=True),
    Column("meter_start_at", UTCDateTime, nullable=True),  # the readings' times (0019)
    Column("meter_stop_at", UTCDateTime, nullable=True),
    Column("events", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

transaction_events = Table(
    "transaction_events",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("transaction_id", String(36), primary_key=True),
    Column("seq_no", Integer, primary_key=True),
    Column("event_type", String(16), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("trigger_reason", String(32), nullable=False),
    Column("offline", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

meter_samples = Table(
    "meter_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("transaction_id", String(36), nullable=True),
    Column("evse_id", Integer, nullable=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("measurand", String(64), nullable=False),
    Column("phase", String(8), nullable=True),
    Column("value", Float, nullable=False),
    Column("unit", String(16), nullable=True),
    Index("ix_meter_samples_transaction", "station_id", "transaction_id"),
)

station_reports = Table(
    "station_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("action", String(48), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_station_reports_station", "station_id", "id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("action", String(48), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("response", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("node_id", String(40), nullable=True),  # the node that sent it
    Index("ix_outbox_station_state", "station_id", "state", "id"),
    Index("ix_outbox_sent_by", "state", "node_id"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("stop_reason", String(16), nullable=True),  # "stopped" or "lost"
    Index("ix_nodes_live", "stopped_at", "heartbeat_at"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(40), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

renewals = Table(
    "renewals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    # station|kind while the renewal is open, NULL once it ended: unique, so a station has
    # at most one open renewal per kind on any database (NULLs never collide).
    Column("open_slot", String(96), nullable=True, unique=True),
    Column("old_serial", String(40), nullable=True),
    Column("new_serial", String(40), nullable=True),
    Column("csr_key_sha256", String(64), nullable=True),
    Column("outbox_id", Integer, nullable=True, index=True),
    Column("reason", Text, nullable=True),
    Column("requested_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("old_revoked_at", UTCDateTime, nullable=True),
    Column("csr_pem", Text, nullable=True),  # kept while the SECC id is asked for
    Index("ix_renewals_station", "station_id", "id"),
    Index("ix_renewals_state", "state", "id"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(32), nullable=False),
    Column("station_id", String(48), nullable=True),
    Column("message", Text, nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    # Set for alerts raised once per subject (e.g. certificate:SERIAL); NULLs never collide.
    Column("once_key", String(96), nullable=True),
    UniqueConstraint("once_key", name="uq_alerts_once_key"),
    Index("ix_alerts_station", "station_id", "id"),
)

installed_certificates = Table(
    "installed_certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("certificate_type", String(32), nullable=False),
    Column("hash_data", Text, nullable=False),  # OCPP CertificateHashData, JSON
    Column("children", Text, nullable=False),  # child CertificateHashData list, JSON
    Index("ix_installed_certificates_station", "station_id"),
)

inventory_refreshes = Table(
    "inventory_refreshes",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("refreshed_at", UTCDateTime, nullable=False),
)

rollover_stations = Table(
    "rollover_stations",
    metadata,
    Column("rollover_id", Integer, primary_key=True),
    Column("station_id", String(48), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("method", String(8), nullable=True),  # "root" or "link", once known
    Column("outbox_id", Integer, nullable=True, index=True),  # the call awaited
    Column("reason", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

ocsp_responses = Table(
    "ocsp_responses",
    metadata,
    # the CertID asked about: hash algorithm, issuer name and key hashes (hex), serial
    Column("algorithm", String(8), primary_key=True),
    Column("issuer_name_hash", String(128), primary_key=True),
    Column("issuer_key_hash", String(128), primary_key=True),
    Column("serial_hex", String(40), primary_key=True),
    Column("responder", Text, nullable=False),  # "ca:NAME" for ours, else the URL asked
    Column("cert_status", String(8), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("produced_at", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime, nullable=True),
)
