"""Rows <-> records: the one mapping between the store's tables and pki.records values,
shared by the SQLAlchemy adapter and the SQLite fast path so both write the same bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row

from pki.audit import AuditEntry, AuditEvent
from pki.records import (
    Authority,
    AuthorityRole,
    CertificateRecord,
    CertificateSource,
    CertificateStatus,
    Station,
)


@dataclass(frozen=True)
class PendingWrite:
    """A certificate to record (None for an audit entry alone) and its audit event:
    one item of a batched write."""

    record: CertificateRecord | None
    event: AuditEvent
    at: datetime


CERTIFICATE_COLUMNS = (
    "serial_hex",
    "issuer_name_hash",
    "issuer_dn",
    "issuer_ca",
    "subject_dn",
    "profile",
    "station_id",
    "not_before",
    "not_after",
    "renew_after",
    "status",
    "source",
    "der",
    "fingerprint_sha256",
    "revoked_at",
    "revocation_reason",
    "created_at",
    "first_seen",
    "last_seen",
)


def certificate_values(record: CertificateRecord, at: datetime) -> dict[str, Any]:
    return {
        "serial_hex": record.serial_hex,
        "issuer_name_hash": record.issuer_name_hash,
        "issuer_dn": record.issuer_dn,
        "issuer_ca": record.issuer_ca,
        "subject_dn": record.subject_dn,
        "profile": record.profile,
        "station_id": record.station_id,
        "not_before": record.not_before,
        "not_after": record.not_after,
        "renew_after": record.renew_after,
        "status": record.status.value,
        "source": record.source.value,
        "der": record.der,
        "fingerprint_sha256": record.fingerprint_sha256,
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
        "created_at": at,
        "first_seen": record.first_seen,
        "last_seen": record.last_seen,
    }


AUDIT_COLUMNS = ("seq", "at", "action", "actor", "target", "outcome", "detail", "prev_hash", "hash")


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    event_ = entry.event
    return {
        "seq": entry.seq,
        "at": entry.at,
        "action": event_.action,
        "actor": event_.actor,
        "target": event_.target,
        "outcome": event_.outcome,
        "detail": json.dumps(dict(event_.detail), sort_keys=True, default=str),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def to_certificate(row: Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=int(row.serial_hex, 16),
        issuer_dn=row.issuer_dn,
        issuer_ca=row.issuer_ca,
        subject_dn=row.subject_dn,
        profile=row.profile,
        station_id=row.station_id,
        not_before=row.not_before,
        not_after=row.not_after,
        renew_after=row.renew_after,
        status=CertificateStatus(row.status),
        source=CertificateSource(row.source),
        der=row.der,
        fingerprint_sha256=row.fingerprint_sha256,
        issuer_name_hash=row.issuer_name_hash,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
    )


def to_station(row: Row[Any] | SimpleNamespace) -> Station:
    return Station(
        id=row.id,
        serial_number=row.serial_number,
        secc_id=row.secc_id,
        security_profile=row.security_profile,
        password_hash=row.password_hash,
        created_at=row.created_at,
        allow_expired=bool(row.allow_expired),
    )


def to_authority(row: Row[Any]) -> Authority:
    return Authority(
        name=row.name,
        role=AuthorityRole(row.role),
        profile=row.profile,
        issuer=row.issuer,
        key_name=row.key_name,
        certificate_der=row.certificate_der,
        created_at=row.created_at,
    )


def to_audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        event=AuditEvent(
            action=row.action,
            actor=row.actor,
            target=row.target,
            outcome=row.outcome,
            detail=json.loads(row.detail),
        ),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
