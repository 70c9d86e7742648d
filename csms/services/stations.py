"""Registering charging stations: the identities certificates are bound to.

A serial number and a SECC id each identify one registered station (unique constraints
in the database; a duplicate is a ConflictError naming the station that holds it).
Removing a station revokes the certificates this CA issued to it (cessationOfOperation)
and publishes the CRLs concerned, unless the operator keeps them: a removed id registered
again, or a new station given the old serial, starts without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509

from pki.audit import AuditEvent
from pki.clock import Clock
from pki.credentials import hash_password
from pki.errors import IdentityTaken, InputError, NotFoundError
from pki.records import (
    STATION_ID_PATTERN,
    CertificateQuery,
    CertificateRecord,
    CertificateStatus,
    Station,
)
from pki.store import Store

MAX_NAME_LENGTH = 64  # ub-common-name: CN carries the serial or the SECC id
REMOVAL_REASON = "cessationOfOperation"
"""RFC 5280 5.3.1: the certificate is no longer needed, nothing suggests a compromise."""


class StationRevoker(Protocol):
    async def revoke_all(
        self, serials: Sequence[tuple[int, str]], reason: str, actor: str
    ) -> list[CertificateRecord]:
        """Revoke each (serial, actor) not revoked yet; publish each CA's CRL once."""
        ...


@dataclass(frozen=True)
class Removal:
    station_id: str
    revoked: tuple[CertificateRecord, ...]
    kept: tuple[CertificateRecord, ...]
    """Valid certificates left valid (``--keep-certificates``)."""
    crls: tuple[tuple[str, bool], ...]
    """(CA, whether its latest CRL lists the revoked certificates): False when the CRL
    could not be signed (no CA key), to be published with `pkictl crl CA`."""
    withdrawn: dict[str, int] = field(default_factory=dict)
    """What else of the station's was ended, by kind: open renewals, queued calls."""


class StationWork(Protocol):
    """Work kept for a station elsewhere (its renewals, the calls queued for it), ended
    when it is removed so that a station registered again under its id starts clean."""

    async def withdraw(self, station_id: str, reason: str) -> int:
        """End what is kept for ``station_id``; how many."""
        ...


def _check_name(value: str, field: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        raise InputError(f"{field}: must be 1 to {MAX_NAME_LENGTH} printable characters")
    return value


class StationService:
    def __init__(self, store: Store, clock: Clock, revoker: StationRevoker | None = None) -> None:
        self._store = store
        self._clock = clock
        self._revoker = revoker
        self.on_removal: dict[str, StationWork] = {}
        """Work ended when a station is removed, by kind (wired by the composition root:
        the renewal workflow and the outbox are built on this service)."""

    async def register(
        self,
        station_id: str,
        *,
        serial_number: str,
        secc_id: str | None,
        security_profile: int,
        password: str | None,
        actor: str,
        allow_expired: bool = False,
    ) -> Station:
        if not STATION_ID_PATTERN.match(station_id):
            raise InputError(
                "id: a station id is 1 to 48 characters of A-Z a-z 0-9 . _ : - "
                "(it is the last segment of the OCPP URL)"
            )
        if security_profile not in (1, 2, 3):
            raise InputError("security-profile: must be 1, 2 or 3")
        if security_profile in (1, 2) and password is None:
            raise InputError(
                f"password-file: security profile {security_profile} stations authenticate "
                "with HTTP Basic auth and need a password"
            )
        try:
            password_hash = hash_password(password) if password is not None else None
        except ValueError as exc:
            raise InputError(f"password-file: {exc}") from None
        now = self._clock.now()
        station = Station(
            id=station_id,
            serial_number=_check_name(serial_number, "serial"),
            secc_id=_check_name(secc_id, "secc-id") if secc_id is not None else None,
            security_profile=security_profile,
            password_hash=password_hash,
            created_at=now,
            allow_expired=allow_expired,
        )
        await self._store.add_station(
            station,
            AuditEvent(
                "station.added",
                actor,
                f"station:{station_id}",
                "ok",
                {
                    "serial_number": station.serial_number,
                    "secc_id": station.secc_id,
                    "security_profile": security_profile,
                    "password": password is not None,
                    "allow_expired": allow_expired,
                },
            ),
            now,
        )
        return station

    async def get(self, station_id: str) -> Station:
        station = await self._store.get_station(station_id)
        if station is None:
            raise NotFoundError(f"no station {station_id!r}")
        return station

    async def list(self) -> list[Station]:
        return await self._store.list_stations()

    async def secc_id(self, station_id: str) -> str | None:
        return (await self.get(station_id)).secc_id

    async def set_secc_id(self, station_id: str, secc_id: str, actor: str) -> None:
        """The SECC id its V2G certificate is issued for (CN), e.g. as the station
        reported it (ISO15118Ctrlr.SeccId). IdentityTaken if another station holds it:
        refused, and the refusal audited (`station.secc-id`, outcome refused)."""
        checked = _check_name(secc_id, "secc-id")
        event = AuditEvent(
            "station.secc-id", actor, f"station:{station_id}", "ok", {"secc_id": checked}
        )
        try:
            await self._store.set_secc_id(station_id, checked, event, self._clock.now())
        except IdentityTaken as taken:
            # A station claiming another's SECC id is someone to look at: kept as evidence.
            await self._store.append_audit(
                AuditEvent(
                    "station.secc-id",
                    actor,
                    f"station:{station_id}",
                    "refused",
                    {"secc_id": checked, "held_by": taken.held_by},
                ),
                self._clock.now(),
            )
            raise

    async def remove(
        self, station_id: str, actor: str, *, keep_certificates: bool = False
    ) -> Removal:
        """Deregister ``station_id``: the handshake refuses its id from now on. Unless
        ``keep_certificates``, the valid certificates this CA issued to it are revoked
        first (cessationOfOperation; each audited, each CA's CRL published once), so
        that none outlives the registration; the removal's audit entry lists them.

        Revoked before the row goes: a removal cut short leaves a registered station
        with revoked certificates (run it again), never a removed one with valid
        certificates. One issued meanwhile (a renewal in flight) is revoked after.
        """
        await self.get(station_id)  # NotFound (exit 3) before anything changes
        revoked: tuple[CertificateRecord, ...] = ()
        if not keep_certificates:
            revoked += await self._revoke_issued(station_id, actor)
        kept = await self._valid_issued(station_id)
        await self._store.remove_station(
            station_id,
            AuditEvent(
                "station.removed",
                actor,
                f"station:{station_id}",
                "ok",
                {
                    "certificates": "kept" if keep_certificates else "revoked",
                    "revoked": [r.serial_hex for r in revoked],
                    "kept": [r.serial_hex for r in kept],
                },
            ),
            self._clock.now(),
        )
        if not keep_certificates:
            revoked += await self._revoke_issued(station_id, actor)  # issued meanwhile
            kept = ()
        withdrawn = {
            kind: await work.withdraw(station_id, "the station was removed")
            for kind, work in self.on_removal.items()
        }
        return Removal(station_id, revoked, kept, await self._crls_listing(revoked), withdrawn)

    async def _valid_issued(self, station_id: str) -> tuple[CertificateRecord, ...]:
        """The certificates this CA issued to the station that are valid now."""
        now = self._clock.now()
        records = await self._store.find_certificates(CertificateQuery(station_id=station_id))
        return tuple(
            r
            for r in records
            if r.issuer_ca is not None and r.effective_status(now) is CertificateStatus.VALID
        )

    async def _revoke_issued(self, station_id: str, actor: str) -> tuple[CertificateRecord, ...]:
        valid = await self._valid_issued(station_id)
        if not valid:
            return ()
        if self._revoker is None:
            raise RuntimeError("StationService built without a revoker cannot revoke")
        return tuple(
            await self._revoker.revoke_all(
                [(r.serial, actor) for r in valid], REMOVAL_REASON, actor
            )
        )

    async def _crls_listing(
        self, revoked: Sequence[CertificateRecord]
    ) -> tuple[tuple[str, bool], ...]:
        outcome = []
        for name in sorted({r.issuer_ca for r in revoked if r.issuer_ca is not None}):
            der = await self._store.latest_crl(name)
            listed = {e.serial_number for e in x509.load_der_x509_crl(der)} if der else set()
            serials = {r.serial for r in revoked if r.issuer_ca == name}
            outcome.append((name, serials <= listed))
        return tuple(outcome)
