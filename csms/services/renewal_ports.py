"""The renewal workflow's records, settings and the ports it works through (stores, the
CA, the station registry, revocation): what `csms.services.renewals` needs from the
rest of the system, kept apart from the workflow itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from csms.domain.renewal import CertificateKind, RenewalState
from pki.authority import IssuedCertificate
from pki.records import CertificateRecord


@dataclass(frozen=True)
class Renewal:
    id: int
    station_id: str
    kind: CertificateKind
    state: RenewalState
    requested_by: str
    created_at: datetime
    updated_at: datetime
    old_serial: str | None = None
    new_serial: str | None = None
    csr_key_sha256: str | None = None
    outbox_id: int | None = None
    reason: str | None = None
    csr_pem: str | None = None
    """A V2G CSR waiting for the station's SECC id."""


class RenewalStore(Protocol):
    async def open_renewal(self, station_id: str, kind: CertificateKind) -> Renewal | None: ...
    async def open_renewals(self, station_id: str) -> list[Renewal]:
        """The station's open renewals, one per kind at most (one query at connect)."""
        ...

    async def create(
        self,
        station_id: str,
        kind: CertificateKind,
        state: RenewalState,
        *,
        requested_by: str,
        old_serial: str | None,
        at: datetime,
    ) -> Renewal | None:
        """A new open renewal; None when the station already has one of this kind."""
        ...

    async def create_many(
        self,
        wanted: Sequence[tuple[str, CertificateKind, str | None]],
        *,
        requested_by: str,
        at: datetime,
    ) -> list[Renewal]:
        """A `due` renewal for each (station, kind, old serial) that has none open, in one
        transaction; the open renewal of each, in the order given."""
        ...

    async def move(
        self, renewal_id: int, from_state: RenewalState, to_state: RenewalState, at: datetime,
        **fields: Any,
    ) -> bool:  # fmt: skip
        """Advance if still in ``from_state`` (and set ``fields``); False otherwise."""
        ...

    async def set_outbox_id(self, renewal_id: int, outbox_id: int) -> None: ...
    async def get(self, renewal_id: int) -> Renewal: ...
    async def get_many(self, renewal_ids: Sequence[int]) -> list[Renewal]:
        """In the order asked; LookupError if one is unknown."""
        ...

    async def by_outbox_id(self, outbox_id: int) -> Renewal | None: ...
    async def in_state(self, state: RenewalState) -> list[Renewal]: ...
    async def count_open(self) -> int: ...
    async def triggered_online(self, before: datetime, limit: int) -> list[Renewal]:
        """Renewals `triggered` since before ``before`` of connected stations."""
        ...

    async def count_in_flight(self) -> int:
        """Open renewals past `due` whose station is connected: the ones loading us."""
        ...

    async def waiting(
        self, limit: int, station_id: str | None = None, node_id: str | None = None
    ) -> list[Renewal]:
        """Renewals still `due` (held back by the cap) of connected stations, oldest
        first; with ``node_id``, only of stations that node holds."""
        ...

    async def replaced_unrevoked(self, confirmed_before: datetime) -> list[Renewal]:
        """Confirmed renewals whose replaced certificate is not revoked yet."""
        ...

    async def set_old_revoked(self, renewal_ids: Sequence[int], at: datetime) -> None: ...
    async def failures_since_success(
        self, station_id: str, kind: CertificateKind
    ) -> list[datetime]:
        """When each renewal failed since the last confirmed one, newest first."""
        ...

    async def online(self, station_ids: Sequence[str]) -> set[str]:
        """Those of ``station_ids`` connected now (to any node)."""
        ...

    async def list(
        self, station_id: str | None, limit: int, *, latest_only: bool = False
    ) -> list[Renewal]:
        """Most recent first, returned oldest first; ``latest_only``: the last renewal of
        each station and kind, i.e. where each stands now."""
        ...


class StationIssuer(Protocol):
    """The CA's issuance pipeline, as the renewal workflow uses it."""

    async def issue_for_station(
        self, *, csr_pem: str, profile_name: str, station_id: str, actor: str
    ) -> IssuedCertificate: ...

    async def issued(self, serial_hex: str) -> IssuedCertificate:
        """A certificate this CA issued, with its chain, from its record."""
        ...

    async def due_for_renewal(
        self, limit: int, by: datetime | None = None
    ) -> list[CertificateRecord]:
        """Past their renewal point now (or ``by``)."""
        ...

    async def expiring_in_use(self, within: timedelta, limit: int) -> list[CertificateRecord]: ...
    async def station_certificates(self, station_id: str) -> list[CertificateRecord]: ...
    async def certificates_of_stations(
        self, station_ids: Sequence[str]
    ) -> dict[str, list[CertificateRecord]]: ...
    async def supersede(self, serial_hex: str, actor: str) -> bool:
        """Mark a certificate superseded (still valid, replaced); False if it is not."""
        ...


@dataclass(frozen=True)
class RenewalSettings:
    """The daemon's knobs, from the [renewal] table of pkictl.toml."""

    scan_interval_s: int = 3600
    max_in_flight: int = 100
    retry_after_s: int = 600
    max_attempts: int = 5
    jitter_s: int = 3 * 86400
    """Each certificate's renewal starts up to this long after its renewal point (a
    fixed offset derived from its serial, at most a quarter of the time left then), so
    a fleet issued in one day does not renew -- and expire again -- in one day."""
    expiry_warning_days: int = 90
    """A station certificate in use this close to its expiry whose renewal is not
    progressing (none started after its jitter, the last one failed or was abandoned,
    the station offline) raises the warning `certificate-expiring`, once
    (`csms.services.expiry`)."""
    expiry_critical_days: int = 30
    expiry_alert_days: int = 14
    """Any station certificate still in use this close to its expiry raises the critical
    alert `certificate-expiring`, once per level: `expiry_critical_days`, then this
    one (levels below a certificate's renewal lead only: a short-lived SECC certificate
    renewed 20 days before expiry is not critical at 30)."""
    max_certificates_per_day: int = 5
    """A station's CSR past this many certificates of one kind issued to it in the last
    24 hours is refused (Rejected, TooManyCertificates) and alerted (`certificate-burst`):
    a station cannot make the CA sign without end. A newer CSR within one renewal
    replaces its unconfirmed certificate (revoked at once), and counts."""
    revoke_replaced_after_s: int = 7 * 86400
    """Grace period before a superseded certificate is revoked (reason superseded): a
    station that has not switched yet (a second SECC, a slow reboot) keeps working."""


@dataclass(frozen=True)
class DueCertificate:
    """A station's current certificate past its renewal point, with no renewal open."""

    station_id: str
    kind: CertificateKind
    serial_hex: str
    starts_at: datetime
    """The renewal point plus this certificate's jitter."""
    not_after: datetime


class Revoker(Protocol):
    async def revoke(self, serial: int, reason: str, actor: str) -> tuple[CertificateRecord, Any]:
        """Revoke, and publish the CA's next CRL."""
        ...

    async def revoke_all(
        self, serials: Sequence[tuple[int, str]], reason: str, actor: str
    ) -> list[CertificateRecord]:
        """Revoke each (serial, actor) not revoked yet; publish each CA's CRL once."""
        ...


class StationDirectory(Protocol):
    async def secc_id(self, station_id: str) -> str | None: ...
    async def set_secc_id(self, station_id: str, secc_id: str, actor: str) -> None:
        """IdentityTaken if another station holds ``secc_id`` (the refusal audited);
        InputError if it is no usable CN."""
        ...


@dataclass(frozen=True)
class SignAnswer:
    """The SignCertificateResponse: Accepted, or Rejected with OCPP's reasonCode."""

    accepted: bool
    reason_code: str | None = None
    detail: str | None = None
