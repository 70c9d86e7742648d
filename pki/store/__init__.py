"""The CA's storage Protocol. Every mutation carries its audit event and is written in
one transaction with it: there is no certificate without its record and audit entry,
and no audit entry for something that did not happen."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pki.audit import AuditEntry, AuditEvent, AuditHead
from pki.crl import RevokedEntry
from pki.records import (
    Authority,
    CertificateQuery,
    CertificateRecord,
    RevocationState,
    Rollover,
    Station,
    TrustAnchor,
    TrustRole,
)


class Store(Protocol):
    async def close(self) -> None: ...

    # stations
    async def add_station(self, station: Station, event: AuditEvent, at: datetime) -> None: ...
    async def get_station(self, station_id: str) -> Station | None: ...
    async def list_stations(self) -> list[Station]: ...
    async def remove_station(self, station_id: str, event: AuditEvent, at: datetime) -> None: ...
    async def set_secc_id(
        self, station_id: str, secc_id: str, event: AuditEvent, at: datetime
    ) -> None: ...

    # authorities (the CA's own keys and certificates)
    async def record_authorities(
        self,
        authorities: Sequence[tuple[Authority, CertificateRecord]],
        event: AuditEvent,
        at: datetime,
    ) -> None: ...
    async def renew_authority(
        self, authority: Authority, record: CertificateRecord, event: AuditEvent, at: datetime,
        previous_der: bytes,
    ) -> None:  # fmt: skip
        """The authority's new certificate (same name and key name), and its record;
        ConflictError if its certificate is no longer ``previous_der`` (changed
        meanwhile, e.g. by a root rollover in another process)."""
        ...

    async def get_authority(self, name: str) -> Authority | None: ...
    async def list_authorities(self) -> list[Authority]: ...

    # root rollovers
    async def open_rollover(
        self,
        rollover: Rollover,
        records: Sequence[CertificateRecord],
        event: AuditEvent,
        at: datetime,
    ) -> int:
        """Record an open rollover (its id is ignored) with the certificates it made;
        ConflictError while another rollover of the same authority is open."""
        ...

    async def rollovers(self, authority: str) -> list[Rollover]:
        """Every rollover of ``authority``, oldest first."""
        ...

    async def switch_rollover(
        self,
        rollover: Rollover,
        changed: Sequence[tuple[Authority, bytes]],
        records: Sequence[CertificateRecord],
        event: AuditEvent,
        at: datetime,
    ) -> None:
        """In one transaction: the open rollover becomes switched, ``changed``
        authorities (each with the certificate it must still have) get their new
        certificates and key names, ``records`` are recorded. StateError if the
        rollover is not open, ConflictError if an authority changed meanwhile."""
        ...

    async def abandon_rollover(
        self, rollover: Rollover, event: AuditEvent, at: datetime
    ) -> None: ...

    # certificates
    async def record_certificate(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> None: ...
    async def find_certificates(self, query: CertificateQuery) -> list[CertificateRecord]: ...
    async def revocation_state(self, serial: int, issuer_name_hash: str) -> RevocationState | None:
        """The status of the certificate (serial, issuer name hash), as OCSP needs it;
        None if there is no such record. Read per OCSP request: kept narrow and fast."""
        ...

    async def revoke_certificate(
        self, record: CertificateRecord, reason: str, event: AuditEvent, at: datetime
    ) -> CertificateRecord: ...
    async def due_certificates(self, now: datetime, limit: int) -> list[CertificateRecord]:
        """Valid station certificates past their renewal point, earliest first."""
        ...

    async def expiring_certificates(
        self, now: datetime, until: datetime, limit: int
    ) -> list[CertificateRecord]:
        """Valid station certificates expiring after ``now`` and by ``until``, earliest
        first."""
        ...

    async def supersede_certificate(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> bool:
        """valid -> superseded, with ``event``; False (and no entry) if it was not valid."""
        ...

    async def revoked_entries(self, issuer_ca: str, valid_at: datetime) -> list[RevokedEntry]:
        """Revoked certificates of ``issuer_ca`` not expired at ``valid_at``: an expired
        one may leave the CRL (RFC 5280 3.3); OCSP still answers revoked for it."""
        ...

    async def record_presented(
        self, record: CertificateRecord, event: AuditEvent, at: datetime
    ) -> CertificateRecord:
        """A station presented this certificate at ``at``: advance first/last seen of the
        stored one (last seen to the minute: no write for a reconnection within one), or
        store it as observed (with ``event``) if it is unknown. Returns the stored
        record, read now, whose status tells whether it was revoked."""
        ...

    # trust anchors the operator adds
    async def add_trust_anchor(self, anchor: TrustAnchor, event: AuditEvent, at: datetime) -> None:
        """ConflictError if the certificate is trusted already."""
        ...

    async def trust_anchors(self, role: TrustRole | None = None) -> list[TrustAnchor]: ...

    # CRLs
    async def allocate_crl_number(self, issuer_ca: str) -> int: ...
    async def record_crl(
        self, issuer_ca: str, number: int, der: bytes, event: AuditEvent, at: datetime
    ) -> None: ...

    # audit and settings
    async def latest_crl(self, issuer_ca: str) -> bytes | None:
        """The DER of the CA's CRL with the highest number, if it has one."""
        ...

    async def append_audit(self, event: AuditEvent, at: datetime) -> AuditEntry: ...
    async def audit_entries(
        self,
        limit: int | None = None,
        *,
        actions: Sequence[str] | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """In sequence order; ``limit`` keeps the most recent; ``actions`` and ``target``
        filter (the station event log is a view of the audit log)."""
        ...

    async def audit_head(self) -> AuditHead | None: ...
    async def get_setting(self, key: str) -> str | None: ...
    async def set_setting(self, key: str, value: str, event: AuditEvent, at: datetime) -> None: ...
