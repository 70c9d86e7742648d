"""Certificate renewal over OCPP (A02/A03): trigger, sign, deliver, confirm.

One open renewal per station and kind, persisted at every step (`csms.domain.renewal`):
a renewal asked for by the CLI or the scan triggers the station (TriggerMessage through
the outbox, so an offline station gets it when it is back); a station asking on its own
joins the open renewal instead of starting another. A CSR is signed by the issuance
pipeline bound to the station's registered identity; CertificateSigned goes out through
the outbox; the station's answer, then its reconnection with the new serial, end it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from csms.domain.outbox import CallState
from csms.domain.renewal import (
    TRIGGER_FOR,
    CertificateKind,
    RenewalEvent,
    RenewalState,
    advance,
)
from csms.services.outbox import Outbox, OutboxItem
from pki.authority import IssuedCertificate
from pki.clock import Clock
from pki.errors import IssuanceRefused
from pki.records import CertificateRecord

LOG = logging.getLogger("pkictl.renewal")
CERTIFICATE_SIGNED = "CertificateSigned"
PROFILE_FOR = {CertificateKind.STATION: "charging-station", CertificateKind.V2G: "v2g-secc"}


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


class RenewalStore(Protocol):
    async def open_renewal(self, station_id: str, kind: CertificateKind) -> Renewal | None: ...
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

    async def move(
        self, renewal_id: int, from_state: RenewalState, to_state: RenewalState, at: datetime,
        **fields: Any,
    ) -> bool:  # fmt: skip
        """Advance if still in ``from_state`` (and set ``fields``); False otherwise."""
        ...

    async def set_outbox_id(self, renewal_id: int, outbox_id: int) -> None: ...
    async def get(self, renewal_id: int) -> Renewal: ...
    async def by_outbox_id(self, outbox_id: int) -> Renewal | None: ...
    async def in_state(self, state: RenewalState) -> list[Renewal]: ...
    async def list(self, station_id: str | None, limit: int) -> list[Renewal]: ...


class StationIssuer(Protocol):
    """The CA's issuance pipeline, as the renewal workflow uses it."""

    async def issue_for_station(
        self, *, csr_pem: str, profile_name: str, station_id: str, actor: str
    ) -> IssuedCertificate: ...

    async def current_certificate(
        self, station_id: str, profile_name: str
    ) -> CertificateRecord | None: ...

    async def issued(self, serial_hex: str) -> IssuedCertificate:
        """A certificate this CA issued, with its chain, from its record."""
        ...

    async def supersede(self, serial_hex: str, actor: str) -> bool:
        """Mark a certificate superseded (still valid, replaced); False if it is not."""
        ...


@dataclass(frozen=True)
class SignAnswer:
    """The SignCertificateResponse: Accepted, or Rejected with OCPP's reasonCode."""

    accepted: bool
    reason_code: str | None = None
    detail: str | None = None


def _key_sha256(csr_pem: str) -> str | None:
    try:
        key = x509.load_pem_x509_csr(csr_pem.encode()).public_key()
    except ValueError:
        return None  # the pipeline refuses it with the precise reason
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass
class RenewalService:
    store: RenewalStore
    ca: StationIssuer
    outbox: Outbox
    clock: Clock

    async def request(
        self,
        station_id: str,
        kind: CertificateKind,
        *,
        requested_by: str,
        old_serial: str | None = None,
    ) -> Renewal:
        """Renew the station's certificate of ``kind``: the open renewal if there is one,
        else a new one, triggered at once (delivered when the station is connected)."""
        now = self.clock.now()
        if old_serial is None:
            current = await self.ca.current_certificate(station_id, PROFILE_FOR[kind])
            old_serial = current.serial_hex if current else None
        created = await self.store.create(
            station_id, kind, RenewalState.DUE,
            requested_by=requested_by, old_serial=old_serial, at=now,
        )  # fmt: skip
        if created is None:
            existing = await self.store.open_renewal(station_id, kind)
            if existing is not None:
                return existing
            return await self.request(station_id, kind, requested_by=requested_by)  # it ended
        await self.outbox.enqueue(
            station_id, "TriggerMessage", {"requested_message": TRIGGER_FOR[kind]}
        )
        await self._move(created, RenewalEvent.TRIGGER)
        LOG.info("renewal #%d of %s for %s triggered", created.id, kind.value, station_id)
        return await self._reload(created)

    async def sign(self, station_id: str, csr_pem: str, kind: CertificateKind) -> SignAnswer:
        """A SignCertificateRequest: sign the CSR for the station's registered identity
        and queue CertificateSigned; answered at once."""
        key = _key_sha256(csr_pem)
        renewal = await self.store.open_renewal(station_id, kind)
        if renewal is not None and renewal.csr_key_sha256 == key and key is not None:
            # The same CSR again (the station did not see our answer, or retries): the
            # certificate for this key is signed or being signed; never a second one.
            return SignAnswer(True)
        if renewal is None:
            current = await self.ca.current_certificate(station_id, PROFILE_FOR[kind])
            renewal = await self.store.create(
                station_id, kind, RenewalState.DUE, requested_by=f"station:{station_id}",
                old_serial=current.serial_hex if current else None, at=self.clock.now(),
            )  # fmt: skip
            if renewal is None:  # one was opened meanwhile: join it
                return await self.sign(station_id, csr_pem, kind)
        if not await self._move(renewal, RenewalEvent.CSR, csr_key_sha256=key):
            return await self.sign(station_id, csr_pem, kind)  # it moved meanwhile
        try:
            issued = await self.ca.issue_for_station(
                csr_pem=csr_pem, profile_name=PROFILE_FOR[kind], station_id=station_id,
                actor=f"station:{station_id}",
            )  # fmt: skip
        except IssuanceRefused as refusal:
            await self._move(
                renewal, RenewalEvent.REFUSE, from_state=RenewalState.CSR_RECEIVED,
                reason=f"{refusal.reason.value}: {refusal.message}",
            )  # fmt: skip
            LOG.warning("renewal #%d for %s: CSR refused: %s", renewal.id, station_id, refusal)
            return SignAnswer(False, refusal.reason.value, refusal.message)
        await self._move(
            renewal, RenewalEvent.SIGN, from_state=RenewalState.CSR_RECEIVED,
            new_serial=issued.record.serial_hex,
        )  # fmt: skip
        await self._deliver(renewal.id, station_id, kind, issued)
        return SignAnswer(True)

    async def _deliver(
        self, renewal_id: int, station_id: str, kind: CertificateKind, issued: IssuedCertificate
    ) -> None:
        chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in issued.chain)
        outbox_id = await self.outbox.enqueue(
            station_id, CERTIFICATE_SIGNED,
            {"certificate_chain": chain, "certificate_type": kind.value},
        )  # fmt: skip
        await self.store.set_outbox_id(renewal_id, outbox_id)

    async def call_finished(self, item: OutboxItem) -> None:
        """The outbox's CertificateSigned call ended: the station's answer decides."""
        renewal = await self.store.by_outbox_id(item.id)
        if renewal is None or renewal.state is not RenewalState.SIGNED:
            return
        status = (item.response or {}).get("status")
        if item.state is CallState.ANSWERED and status == "Accepted":
            await self._move(renewal, RenewalEvent.ACCEPT)
            if renewal.kind is CertificateKind.V2G:  # no reconnection proves a V2G one
                await self._confirm(await self._reload(renewal))
            return
        reason = (
            f"the station answered {json.dumps(item.response)}"
            if item.state is CallState.ANSWERED
            else f"CertificateSigned {item.state.value}: {item.error}"
        )
        await self._move(renewal, RenewalEvent.REJECT, reason=reason)
        LOG.error("ALERT renewal #%d for %s failed: %s", renewal.id, renewal.station_id, reason)

    async def presented(self, station_id: str, serial_hex: str | None) -> None:
        """A station connected presenting ``serial_hex``: if it is the certificate its
        open renewal delivered, the renewal is confirmed."""
        if serial_hex is None:
            return
        renewal = await self.store.open_renewal(station_id, CertificateKind.STATION)
        if renewal is not None and renewal.new_serial == serial_hex:
            await self._confirm(renewal)

    async def _confirm(self, renewal: Renewal) -> None:
        if not await self._move(renewal, RenewalEvent.CONFIRM):
            return
        LOG.info("renewal #%d for %s confirmed", renewal.id, renewal.station_id)
        if renewal.old_serial is not None:
            await self.ca.supersede(renewal.old_serial, actor=f"renewal:{renewal.id}")

    async def resume(self) -> int:
        """At start: what a previous run left half done goes on. A CSR whose signing did
        not finish is asked for again; a signed certificate not yet queued is queued."""
        resumed = 0
        for renewal in await self.store.in_state(RenewalState.CSR_RECEIVED):
            if await self._move(renewal, RenewalEvent.RESUME):
                await self.outbox.enqueue(
                    renewal.station_id, "TriggerMessage",
                    {"requested_message": TRIGGER_FOR[renewal.kind]},
                )  # fmt: skip
                await self._move(await self._reload(renewal), RenewalEvent.TRIGGER)
                resumed += 1
        for renewal in await self.store.in_state(RenewalState.SIGNED):
            if renewal.outbox_id is None and renewal.new_serial is not None:
                issued = await self.ca.issued(renewal.new_serial)
                await self._deliver(renewal.id, renewal.station_id, renewal.kind, issued)
                resumed += 1
        return resumed

    async def list(self, station_id: str | None = None, limit: int = 100) -> list[Renewal]:
        return await self.store.list(station_id, limit)

    async def _reload(self, renewal: Renewal) -> Renewal:
        return await self.store.get(renewal.id)

    async def _move(
        self,
        renewal: Renewal,
        event: RenewalEvent,
        *,
        from_state: RenewalState | None = None,
        **fields: Any,
    ) -> bool:
        state = from_state or renewal.state
        return await self.store.move(
            renewal.id, state, advance(state, event), self.clock.now(), **fields
        )
