"""Certificate renewal over OCPP (A02/A03): trigger, sign, deliver, confirm.

One open renewal per station and kind, persisted at every step (`csms.domain.renewal`):
a renewal asked for by the CLI or the scan triggers the station (TriggerMessage through
the outbox, so an offline station gets it when it is back); a station asking on its own
joins the open renewal instead of starting another. A CSR is signed by the issuance
pipeline bound to the station's registered identity; CertificateSigned goes out through
the outbox; the station's answer, then its reconnection with the new serial, end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from csms.domain.outbox import CallState
from csms.domain.renewal import (
    TRIGGER_FOR,
    CertificateKind,
    RenewalEvent,
    RenewalState,
    advance,
)
from csms.services.alerts import Alerts
from csms.services.expiry import ExpiryWatch
from csms.services.outbox import Outbox, OutboxItem
from csms.services.renewal_ports import (
    DueCertificate,
    Renewal,
    RenewalSettings,
    RenewalStore,
    Revoker,
    SignAnswer,
    StationDirectory,
    StationIssuer,
)
from pki.authority import IssuedCertificate
from pki.clock import Clock
from pki.errors import IdentityTaken, InputError, IssuanceRefused, StateError
from pki.records import CertificateRecord, CertificateSource, CertificateStatus

LOG = logging.getLogger("pkictl.renewal")
CERTIFICATE_SIGNED = "CertificateSigned"
TRIGGER_MESSAGE = "TriggerMessage"
KIND_OF_TRIGGER = {message: kind for kind, message in TRIGGER_FOR.items()}
CANNOT_TRIGGER = frozenset({"NotImplemented", "NotSupported"})
"""What a station answers (status, or CALLERROR code) when it cannot be triggered at all
for a CSR: it may still renew on its own (A03), which the alert says."""
GET_VARIABLES = "GetVariables"
SECC_ID_REQUEST = {
    "get_variable_data": [{"component": {"name": "ISO15118Ctrlr"}, "variable": {"name": "SeccId"}}]
}
PROFILE_FOR = {CertificateKind.STATION: "charging-station", CertificateKind.V2G: "v2g-secc"}
KIND_OF_PROFILE: dict[str | None, CertificateKind] = {
    "charging-station": CertificateKind.STATION,
    "v2g-secc": CertificateKind.V2G,
    None: CertificateKind.STATION,  # observed: a certificate a station presented at TLS
}
DUE_QUERY_LIMIT = 10_000
REQUESTS_AT_ONCE = 16
CREATE_BATCH = 500
FILL_DELAY_S = 0.2
RECENT_CALLS = 20
BURST_WINDOW = timedelta(days=1)
UNANSWERED = "CertificateSigned went unanswered: the station's next connection decides"
"""The reason a signed station renewal carries while it waits for that connection."""


def _kind_of(record: CertificateRecord) -> CertificateKind | None:
    if record.profile is None and record.source is not CertificateSource.OBSERVED:
        return None
    return KIND_OF_PROFILE.get(record.profile)


def _secc_id_of(item: OutboxItem) -> str | None:
    """The SeccId value in a GetVariables answer, if the station gave one."""
    if item.state is not CallState.ANSWERED or item.response is None:
        return None
    for result in item.response.get("get_variable_result") or []:
        if result.get("attribute_status") == "Accepted" and result.get("attribute_value"):
            return str(result["attribute_value"])
    return None


def _current_of(
    records: Sequence[CertificateRecord], kind: CertificateKind
) -> CertificateRecord | None:
    """Of a station's certificates, the one in use: the one it presented last (station
    TLS), else the one that lasts longest. Revoked and superseded ones are out."""
    usable = [r for r in records if r.status is CertificateStatus.VALID and _kind_of(r) is kind]
    earliest = datetime.min.replace(tzinfo=UTC)
    return max(usable, key=lambda r: (r.last_seen or earliest, r.not_after), default=None)


def _serial_of(record: CertificateRecord | None) -> str | None:
    return record.serial_hex if record is not None else None


def _key_sha256(csr_pem: str) -> str | None:
    try:
        key = x509.load_pem_x509_csr(csr_pem.encode()).public_key()
    except ValueError:
        return None  # the pipeline refuses it with the precise reason
    return _spki_sha256(key)


def _certificate_key_sha256(record: CertificateRecord) -> str:
    return _spki_sha256(record.certificate().public_key())


def _spki_sha256(key: CertificatePublicKeyTypes) -> str:
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
    alerts: Alerts
    stations: StationDirectory
    revoker: Revoker
    settings: RenewalSettings = field(default_factory=RenewalSettings)
    fill_delay_s: float = FILL_DELAY_S
    """How long a burst of renewal endings is collected before the room they made is
    filled (0 in a simulation on a simulated clock, which waits for quiet)."""
    _scanning: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _filling: asyncio.Task[None] | None = field(default=None, init=False)
    _fill_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def request(
        self,
        station_id: str,
        kind: CertificateKind,
        *,
        requested_by: str,
        old_serial: str | None = None,
        paced: bool = False,
    ) -> Renewal:
        """Renew the station's certificate of ``kind``: the open renewal if there is one,
        else a new one, triggered at once (delivered when the station is connected) --
        or, ``paced``, left `due` for `fill` to trigger while fewer than
        `max_in_flight` renewals of connected stations are under way."""
        now = self.clock.now()
        if old_serial is None:
            old_serial = _serial_of(await self._current(station_id, kind))
        created = await self.store.create(
            station_id, kind, RenewalState.DUE,
            requested_by=requested_by, old_serial=old_serial, at=now,
        )  # fmt: skip
        if created is None:
            existing = await self.store.open_renewal(station_id, kind)
            if existing is not None:
                return existing
            return await self.request(  # it ended meanwhile
                station_id, kind, requested_by=requested_by, paced=paced
            )
        if not paced:
            await self._trigger(created)
            return await self.get(created.id)  # (triggered, or taken by another node)
        return created

    async def _trigger(self, renewal: Renewal) -> bool:
        """due -> triggered, then the TriggerMessage: the move first, so that of nodes
        filling at once only one triggers it (False: another node took it). (Cut in
        between, the station is triggered when it next connects: `_trigger_again`.)"""
        if not await self._move(renewal, RenewalEvent.TRIGGER):
            return False
        await self.outbox.enqueue(
            renewal.station_id, TRIGGER_MESSAGE, {"requested_message": TRIGGER_FOR[renewal.kind]}
        )
        LOG.info("renewal #%d of %s for %s: TriggerMessage queued", renewal.id,
                 renewal.kind.value, renewal.station_id)  # fmt: skip
        return True

    async def trigger_finished(self, item: OutboxItem) -> None:
        """The outbox's TriggerMessage call ended. Accepted: the CSR is awaited. Anything
        else -- Rejected, NotImplemented, a CALLERROR, no answer in time -- fails the
        renewal waiting for it with that reason: it ends (its place under max_in_flight
        goes to the next one), raises an alert, and the scan retries it after the
        backoff. A station that cannot be triggered at all (NotImplemented,
        NotSupported) is told apart: it may still renew on its own (A03)."""
        kind = KIND_OF_TRIGGER.get(str(item.payload.get("requested_message")))
        if kind is None:
            return
        renewal = await self.store.open_renewal(item.station_id, kind)
        if renewal is None or renewal.state is not RenewalState.TRIGGERED:
            return  # its CSR came first, or the renewal ended meanwhile
        answer = item.response or {}
        status = answer.get("status") if item.state is CallState.ANSWERED else None
        if status == "Accepted":
            LOG.info("renewal #%d: %s accepted the TriggerMessage; waiting for its CSR",
                     renewal.id, renewal.station_id)  # fmt: skip
            return
        if item.state is CallState.ANSWERED:
            info = answer.get("status_info") or {}
            detail = ": ".join(
                str(info[key]) for key in ("reason_code", "additional_info") if info.get(key)
            )
            reason = f"the station answered TriggerMessage {status}" + (
                f" ({detail})" if detail else ""
            )
            cannot = status in CANNOT_TRIGGER
        elif item.state is CallState.FAILED:
            reason = f"the station answered TriggerMessage with CALLERROR {item.error}"
            cannot = (item.error or "").partition(":")[0] in CANNOT_TRIGGER
        else:
            reason = f"TriggerMessage {item.state.value}: {item.error}"
            cannot = False
        if not await self._move(renewal, RenewalEvent.REJECT, reason=reason):
            return
        await self._failed(renewal, reason, untriggerable=cannot)

    async def fill(self, station_id: str | None = None) -> int:
        """Trigger renewals held back in `due` (oldest first, connected stations only)
        while fewer than `max_in_flight` are under way; how many it triggered. A node
        takes the stations it holds first: their TriggerMessage goes out at once, where
        another node's station holds a place under the cap until that node is woken (or
        polls) and sends it."""
        async with self._fill_lock:  # (nodes filling at once may overshoot a little)
            room = self.settings.max_in_flight - await self.store.count_in_flight()
            if room <= 0:
                return 0
            held_here = self.outbox.node_id
            waiting = [] if held_here is None else await self.store.waiting(
                room, station_id, held_here
            )  # fmt: skip
            if len(waiting) < room:
                taken = {renewal.id for renewal in waiting}
                waiting += [
                    renewal for renewal in await self.store.waiting(room, station_id)
                    if renewal.id not in taken
                ][: room - len(waiting)]  # fmt: skip
            # at once: their moves, then their calls, each go in one group commit (ADR
            # 11) -- one at a time, `pkictl renew` took SQLite's write lock 600 times
            # against two busy workers for the first 300
            outcomes = await asyncio.gather(
                *(self._trigger(renewal) for renewal in waiting), return_exceptions=True
            )
            started = 0
            for outcome in outcomes:  # (each one done first, none left running)
                if isinstance(outcome, BaseException):
                    raise outcome
                started += outcome
            return started

    def _fill_soon(self) -> None:
        """A renewal ended: make room for a held-back one, once for a burst of endings."""
        if self._filling is None or self._filling.done():
            self._filling = asyncio.get_running_loop().create_task(self._fill_later())

    async def _fill_later(self) -> None:
        await asyncio.sleep(self.fill_delay_s)
        try:
            await self.fill()
        except Exception:  # the daemon's next round fills too
            LOG.exception("renewal: triggering held-back renewals failed")

    async def close(self) -> None:
        """Before the database closes: no fill left pending."""
        if self._filling is not None and not self._filling.done():
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling

    async def request_all(
        self,
        wanted: Sequence[tuple[str, CertificateKind, str | None]],
        *,
        requested_by: str,
        paced: bool = True,
    ) -> list[Renewal]:
        """A renewal for each (station, kind, old serial or None), the open one where there
        is one, in the order asked. ``paced`` (the CLI): created `due` in batches of
        CREATE_BATCH per transaction -- one at a time, 10,000 of them held SQLite's
        write lock for 22 s against the serving process -- each batch followed by a
        fill, so that the first stations are triggered while the rest are still being
        written (the cap decides how many, the rest go as room is made). Not paced (the
        scan, which sizes its batch to the room itself): `request` for each, several at
        a time, their round trips overlapping on PostgreSQL's connections."""
        if not paced:
            gate = asyncio.Semaphore(REQUESTS_AT_ONCE)

            async def one(
                station_id: str, kind: CertificateKind, old_serial: str | None
            ) -> Renewal:
                async with gate:
                    return await self.request(
                        station_id, kind, requested_by=requested_by, old_serial=old_serial
                    )

            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(*item)) for item in wanted]
            return [task.result() for task in tasks]

        created: list[Renewal] = []
        for start in range(0, len(wanted), CREATE_BATCH):  # short write transactions
            batch = wanted[start : start + CREATE_BATCH]
            unknown = [station_id for station_id, _, old_serial in batch if old_serial is None]
            held = await self.ca.certificates_of_stations(unknown) if unknown else {}
            rows = [
                (station_id, kind, old_serial)
                if old_serial is not None
                else (station_id, kind, _serial_of(_current_of(held[station_id], kind)))
                for station_id, kind, old_serial in batch
            ]
            created += await self.store.create_many(
                rows, requested_by=requested_by, at=self.clock.now()
            )
            await self.fill()
        return await self.store.get_many([renewal.id for renewal in created])

    async def sign(self, station_id: str, csr_pem: str, kind: CertificateKind) -> SignAnswer:
        """A SignCertificateRequest: sign the CSR for the station's registered identity
        and queue CertificateSigned; answered at once. Every certificate issued here
        belongs to a renewal: the open one (a newer CSR replaces its unconfirmed
        certificate: `_replace`), else one the CSR opens. A burst is refused (`_burst`)."""
        key = _key_sha256(csr_pem)
        renewal = await self.store.open_renewal(station_id, kind)
        if renewal is not None and renewal.csr_key_sha256 == key and key is not None:
            # The same CSR again (the station did not see our answer, or retries): the
            # certificate for this key is signed or being signed; never a second one.
            LOG.info("renewal #%d: the same CSR again from %s: no new certificate",
                     renewal.id, station_id)  # fmt: skip
            if renewal.reason == UNANSWERED and renewal.new_serial is not None:
                # ... and it never got that certificate: it goes out again.
                await self._note(renewal, None)
                await self._deliver(
                    renewal.id, station_id, kind, await self.ca.issued(renewal.new_serial)
                )
            return SignAnswer(True)
        if (refused := await self._burst(station_id, kind, renewal)) is not None:
            return refused
        if renewal is not None and renewal.state in (RenewalState.SIGNED, RenewalState.DELIVERED):
            return await self._replace(renewal, csr_pem, key)
        return await self._first_csr(renewal, station_id, csr_pem, kind, key)

    async def _first_csr(
        self, renewal: Renewal | None, station_id: str, csr_pem: str, kind: CertificateKind,
        key: str | None,
    ) -> SignAnswer:  # fmt: skip
        """The renewal's first CSR: it joins the open renewal, or opens one."""
        if renewal is None:
            current = await self._current(station_id, kind)
            renewal = await self.store.create(
                station_id, kind, RenewalState.DUE, requested_by=f"station:{station_id}",
                old_serial=_serial_of(current), at=self.clock.now(),
            )  # fmt: skip
            if renewal is None:  # one was opened meanwhile: join it
                return await self.sign(station_id, csr_pem, kind)
        if (busy := _csr_pending(renewal)) is not None:
            return busy
        LOG.info("renewal #%d of %s for %s: CSR received", renewal.id, kind.value, station_id)
        # V2G without a SECC id: its CN is the SECC id; ask the station, sign when it answers
        waits = kind is CertificateKind.V2G and await self.stations.secc_id(station_id) is None
        kept = {"csr_pem": csr_pem} if waits else {}
        if not await self._move(renewal, RenewalEvent.CSR, csr_key_sha256=key, **kept):
            return await self.sign(station_id, csr_pem, kind)  # it moved meanwhile
        if waits:
            await self.outbox.enqueue(station_id, GET_VARIABLES, SECC_ID_REQUEST)
            return SignAnswer(True)
        return await self._issue(await self.get(renewal.id), csr_pem)

    async def _burst(
        self, station_id: str, kind: CertificateKind, renewal: Renewal | None
    ) -> SignAnswer | None:
        """No unbounded certificates per station: past `max_certificates_per_day`
        certificates of ``kind`` issued to the station in the last 24 hours, a CSR is
        refused (Rejected, reasonCode TooManyCertificates) and alerted once per burst;
        the open renewal, if any, is left as it is. None: go on."""
        limit = self.settings.max_certificates_per_day
        since = self.clock.now() - BURST_WINDOW
        recent = sorted(
            (r for r in await self.ca.station_certificates(station_id)
             if r.source is CertificateSource.ISSUED and r.profile == PROFILE_FOR[kind]
             and r.not_before >= since),
            key=lambda r: r.not_before,
        )  # fmt: skip
        if len(recent) < limit:
            return None
        detail = (
            f"{len(recent)} {kind.value}s were issued to this station in the last 24 hours "
            f"(renewal.max_certificates_per_day = {limit}); try again later"
        )
        where = f"renewal #{renewal.id}" if renewal is not None else "no renewal open"
        LOG.warning("%s: CSR from %s refused: %s", where, station_id, detail)
        await self.alerts.raise_once(
            "certificate-burst", station_id,
            f"a {kind.value} CSR was refused ({where}): {detail}",
            key=f"burst:{station_id}:{kind.value}:{recent[0].serial_hex}",
        )  # fmt: skip
        return SignAnswer(False, "TooManyCertificates", detail)

    async def _replace(self, renewal: Renewal, csr_pem: str, key: str | None) -> SignAnswer:
        """A CSR for another key while the renewal's certificate is not confirmed yet
        (signed, or delivered): the station started over. Its certificate replaces the
        renewal's -- which is revoked at once (superseded, CRL published), so the
        renewal never leaves a valid certificate behind -- and goes out. A CSR the
        pipeline refuses changes nothing: what was delivered stays, and the station's
        next connection decides as before."""
        station_id, kind = renewal.station_id, renewal.kind
        LOG.info("renewal #%d of %s for %s: a newer CSR received (%s)", renewal.id,
                 kind.value, station_id, renewal.state.value)  # fmt: skip
        try:
            issued = await self.ca.issue_for_station(
                csr_pem=csr_pem, profile_name=PROFILE_FOR[kind], station_id=station_id,
                actor=f"station:{station_id}",
            )  # fmt: skip
        except IssuanceRefused as refusal:
            LOG.warning("renewal #%d: a newer CSR from %s refused (%s: %s); certificate %s "
                        "stays", renewal.id, station_id, refusal.reason.value, refusal.message,
                        renewal.new_serial)  # fmt: skip
            return SignAnswer(False, refusal.reason.value, refusal.message)
        serial = issued.record.serial_hex
        while not await self._move(
            renewal, RenewalEvent.REPLACE, new_serial=serial, csr_key_sha256=key,
            outbox_id=None, reason=None,
        ):  # fmt: skip
            renewal = await self.get(renewal.id)  # (the station's answer moved it: again)
            if renewal.state not in (RenewalState.SIGNED, RenewalState.DELIVERED):
                # it ended meanwhile (confirmed, failed): this one belongs to no renewal
                await self.revoker.revoke(issued.record.serial, "superseded",
                                          actor=f"renewal:{renewal.id}")  # fmt: skip
                return await self.sign(station_id, csr_pem, kind)
        LOG.info("renewal #%d: certificate %s issued for %s, replacing %s", renewal.id, serial,
                 station_id, renewal.new_serial)  # fmt: skip
        if renewal.new_serial is not None and renewal.new_serial != serial:
            with contextlib.suppress(StateError):  # (revoked meanwhile: it stays so)
                await self.revoker.revoke(
                    int(renewal.new_serial, 16), "superseded", actor=f"renewal:{renewal.id}"
                )
        await self._deliver(renewal.id, station_id, kind, issued)
        return SignAnswer(True)

    async def _issue(self, renewal: Renewal, csr_pem: str) -> SignAnswer:
        """csr-received -> signed (CertificateSigned queued) or failed (refused)."""
        station_id, kind = renewal.station_id, renewal.kind
        try:
            issued = await self.ca.issue_for_station(
                csr_pem=csr_pem, profile_name=PROFILE_FOR[kind], station_id=station_id,
                actor=f"station:{station_id}",
            )  # fmt: skip
        except IssuanceRefused as refusal:
            reason = f"{refusal.reason.value}: {refusal.message}"
            await self._move(renewal, RenewalEvent.REFUSE, reason=reason, csr_pem=None)
            await self._failed(renewal, f"CSR refused: {reason}")
            return SignAnswer(False, refusal.reason.value, refusal.message)
        serial = issued.record.serial_hex
        if not await self._move(
            renewal, RenewalEvent.SIGN, new_serial=serial, csr_pem=None, reason=None
        ):
            # it moved meanwhile (a lost node's step resumed): nobody may use this one
            await self.revoker.revoke(issued.record.serial, "superseded",
                                      actor=f"renewal:{renewal.id}")  # fmt: skip
            return SignAnswer(False, "Rejected", "the renewal moved on meanwhile; ask again")
        LOG.info("renewal #%d: certificate %s issued for %s", renewal.id, serial, station_id)
        await self._deliver(renewal.id, station_id, kind, issued)
        return SignAnswer(True)

    async def secc_id_answered(self, item: OutboxItem) -> None:
        """The station's answer to GetVariables(ISO15118Ctrlr.SeccId): register the SECC
        id, then sign the V2G CSR that waited for it (or fail the renewal)."""
        if item.payload != SECC_ID_REQUEST:
            return
        renewal = await self.store.open_renewal(item.station_id, CertificateKind.V2G)
        if (
            renewal is None
            or renewal.state is not RenewalState.CSR_RECEIVED
            or renewal.csr_pem is None
        ):
            return  # no V2G CSR is waiting for it
        secc_id = _secc_id_of(item)
        if secc_id is None:
            reason = f"the station did not tell its SECC id: {item.error or item.response}"
            await self._move(renewal, RenewalEvent.REFUSE, reason=reason, csr_pem=None)
            await self._failed(renewal, reason)
            return
        try:
            await self.stations.set_secc_id(item.station_id, secc_id, actor=f"renewal:{renewal.id}")
        except IdentityTaken as taken:
            # Its CN would name another station's SECC: refused, nothing issued.
            reason = (
                f"the station reported SECC id {secc_id!r}, which station "
                f"{taken.held_by!r} holds: refused, nothing issued"
            )
            await self._move(renewal, RenewalEvent.REFUSE, reason=reason, csr_pem=None)
            await self.alerts.raise_alert("secc-id-conflict", item.station_id, reason)
            await self._failed(renewal, reason)
            return
        except InputError as bad:
            reason = f"the station reported an unusable SECC id: {bad}"
            await self._move(renewal, RenewalEvent.REFUSE, reason=reason, csr_pem=None)
            await self._failed(renewal, reason)
            return
        await self._issue(renewal, renewal.csr_pem)

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
        if item.state is CallState.TIMED_OUT and renewal.kind is CertificateKind.STATION:
            # It may have been installed all the same (the answer was late, or lost with
            # the connection): the certificate the station presents next tells (presented).
            LOG.warning("renewal #%d: %s did not answer CertificateSigned; its next "
                        "connection decides", renewal.id, renewal.station_id)  # fmt: skip
            await self._note(renewal, UNANSWERED)
            return
        if item.state is CallState.ANSWERED and status == "Accepted":
            await self._move(renewal, RenewalEvent.ACCEPT)
            LOG.info("renewal #%d: %s accepted certificate %s (delivered)", renewal.id,
                     renewal.station_id, renewal.new_serial)  # fmt: skip
            if renewal.kind is CertificateKind.V2G:  # no reconnection proves a V2G one
                await self._confirm(await self.get(renewal.id))
            return
        reason = (
            f"the station answered {json.dumps(item.response)}"
            if item.state is CallState.ANSWERED
            else f"CertificateSigned {item.state.value}: {item.error}"
        )
        await self._reject(renewal, reason, withdraw=item.state is CallState.ANSWERED)

    async def _reject(self, renewal: Renewal, reason: str, *, withdraw: bool) -> None:
        """Signed -> failed. ``withdraw``: the station is known not to use the new
        certificate (it said so, or came back with another one): nobody may use it."""
        if not await self._move(renewal, RenewalEvent.REJECT, reason=reason):
            return
        if withdraw and renewal.new_serial is not None:
            await self.revoker.revoke(
                int(renewal.new_serial, 16), "superseded", actor=f"renewal:{renewal.id}"
            )
        await self._failed(renewal, reason)

    async def _failed(self, renewal: Renewal, reason: str, *, untriggerable: bool = False) -> None:
        """Alert on every failure; after the last automatic attempt, say it stops.
        ``untriggerable``: the station cannot be asked for a CSR at all (alert
        `renewal-untriggerable`, not `renewal-failed`)."""
        self._fill_soon()
        LOG.info("renewal #%d of %s for %s failed: %s", renewal.id, renewal.kind.value,
                 renewal.station_id, reason)  # fmt: skip
        if untriggerable:
            await self.alerts.raise_alert(
                "renewal-untriggerable", renewal.station_id,
                f"renewal #{renewal.id} of the {renewal.kind.value} failed: the station "
                f"cannot be triggered ({reason}); it may still renew on its own",
            )  # fmt: skip
        else:
            await self.alerts.raise_alert(
                "renewal-failed", renewal.station_id,
                f"renewal #{renewal.id} of the {renewal.kind.value} failed: {reason}",
            )  # fmt: skip
        failures = await self.store.failures_since_success(renewal.station_id, renewal.kind)
        if len(failures) == self.settings.max_attempts:
            await self.alerts.raise_alert(
                "renewal-abandoned", renewal.station_id,
                f"{len(failures)} renewals of the {renewal.kind.value} failed in a row: "
                "no more automatic attempts; `pkictl renew` starts one",
            )  # fmt: skip

    async def presented(self, station_id: str, serial_hex: str | None) -> None:
        """A station connected presenting ``serial_hex``: if it is the certificate its
        open renewal delivered, the renewal is confirmed. A renewal held back in `due`
        is triggered if there is room; one still waiting for the station's CSR is
        triggered again if no trigger is on its way (see `_trigger_again`)."""
        for renewal in await self.store.open_renewals(station_id):
            delivered = serial_hex is not None and renewal.new_serial == serial_hex
            if renewal.kind is CertificateKind.STATION and delivered:
                await self._confirm(renewal)
            elif (
                renewal.state is RenewalState.SIGNED
                and renewal.reason == UNANSWERED
                and serial_hex is not None
            ):
                await self._reject(
                    renewal,
                    f"CertificateSigned went unanswered and the station came back with "
                    f"certificate {serial_hex}, not the new one",
                    withdraw=True,
                )
            elif renewal.state is RenewalState.DUE:
                await self.fill(station_id)
            elif renewal.state is RenewalState.TRIGGERED:
                await self._trigger_again(renewal)

    async def _trigger_again(self, renewal: Renewal) -> None:
        """The station accepted the trigger on its previous connection (to this node or
        one that was lost), but its SignCertificate never arrived: it went with that
        connection. It is triggered again -- only then, or if no trigger was ever
        queued: a trigger still on its way is not repeated, and one that failed or went
        unanswered is the scan's to retry (with backoff)."""
        trigger = {"requested_message": TRIGGER_FOR[renewal.kind]}
        latest = next(
            (item for item in reversed(await self.outbox.list(renewal.station_id, RECENT_CALLS))
             if item.action == "TriggerMessage" and item.payload == trigger),
            None,
        )  # fmt: skip
        if latest is not None:  # (none at all: cut between the move and the trigger)
            if latest.state is not CallState.ANSWERED:
                return
            if (latest.response or {}).get("status") != "Accepted":
                return
        await self.outbox.enqueue(renewal.station_id, "TriggerMessage", trigger)
        LOG.info("renewal #%d: %s reconnected without sending its CSR: triggered again",
                 renewal.id, renewal.station_id)  # fmt: skip

    async def _confirm(self, renewal: Renewal) -> None:
        """Signed or delivered -> confirmed, once the new certificate is in use: the one
        it replaced is superseded first, so a confirmed renewal never shows a current
        old certificate. The station's answer to CertificateSigned and its reconnection
        race (it may reconnect before its answer is stored): a move that lost to the
        other one is retried from the state it left."""
        if renewal.old_serial is not None:
            await self.ca.supersede(renewal.old_serial, actor=f"renewal:{renewal.id}")
        while not await self._move(renewal, RenewalEvent.CONFIRM):
            renewal = await self.get(renewal.id)
            if renewal.state not in (RenewalState.SIGNED, RenewalState.DELIVERED):
                return
        LOG.info("renewal #%d for %s confirmed: certificate %s in use", renewal.id,
                 renewal.station_id, renewal.new_serial)  # fmt: skip
        self._fill_soon()

    async def resume(self, stale_before: datetime | None = None) -> int:
        """What a stopped or lost node left half done goes on: a CSR whose signing did not
        finish is asked for again; a signed certificate not yet queued is queued.
        ``stale_before``: only renewals untouched since then -- with several nodes, a
        step younger than that may be in progress on a live one."""
        resumed = 0

        def stale(renewal: Renewal) -> bool:
            return stale_before is None or renewal.updated_at < stale_before

        for renewal in await self.store.in_state(RenewalState.CSR_RECEIVED):
            if not stale(renewal):
                continue
            if (signed := await self._signed_for(renewal)) is not None:
                # Signed and recorded, but the node stopped before the renewal moved on:
                # that certificate goes out -- never a second one for the same request.
                if await self._move(renewal, RenewalEvent.SIGN, new_serial=signed.serial_hex,
                                    csr_pem=None, reason=None):  # fmt: skip
                    issued = await self.ca.issued(signed.serial_hex)
                    await self._deliver(renewal.id, renewal.station_id, renewal.kind, issued)
                    resumed += 1
                continue
            if await self._move(renewal, RenewalEvent.RESUME):
                # Back in `due`, where a fill (the station reconnecting) may trigger it
                # first: claimed by the move, so the station gets one TriggerMessage --
                # two made it send two CSRs, and two certificates were signed.
                if (again := await self.get(renewal.id)).state is RenewalState.DUE:
                    await self._trigger(again)
                resumed += 1
        for renewal in await self.store.in_state(RenewalState.SIGNED):
            if renewal.outbox_id is None and renewal.new_serial is not None and stale(renewal):
                issued = await self.ca.issued(renewal.new_serial)
                await self._deliver(renewal.id, renewal.station_id, renewal.kind, issued)
                resumed += 1
        return resumed

    async def _signed_for(self, renewal: Renewal) -> CertificateRecord | None:
        """The certificate issued for the renewal's CSR key, if signing got that far."""
        if renewal.csr_key_sha256 is None:
            return None
        for record in await self.ca.station_certificates(renewal.station_id):
            if (
                record.profile == PROFILE_FOR[renewal.kind]
                and record.source is CertificateSource.ISSUED
                and _certificate_key_sha256(record) == renewal.csr_key_sha256
            ):
                return record
        return None

    async def due(self, station_id: str | None = None) -> list[DueCertificate]:
        """What the next scan would renew: stations whose current certificate reached its
        renewal point (the policy's threshold, kept as renew_after), issued or observed,
        with no renewal open and not waiting after a failure; at most as many as
        max_in_flight leaves room for."""
        now = self.clock.now()
        if station_id is None:
            candidates = await self.ca.due_for_renewal(DUE_QUERY_LIMIT)
        else:
            candidates = [
                r for r in await self.ca.station_certificates(station_id)
                if r.status is CertificateStatus.VALID and r.renew_after <= now
            ]  # fmt: skip
        if not candidates:  # (most boots: nothing is due, and the count is not needed)
            return []
        room = self.settings.max_in_flight - await self.store.count_in_flight()
        if room <= 0:
            return []
        found: list[DueCertificate] = []
        looked: set[tuple[str, CertificateKind]] = set()
        for record in candidates:
            kind = _kind_of(record)
            assert record.station_id is not None
            if kind is None or (record.station_id, kind) in looked:
                continue
            if self.starts_at(record) > now:
                # Its jitter has not passed: no read needed. Were another certificate
                # the station's current one and due, it is a candidate of its own.
                continue
            looked.add((record.station_id, kind))
            current = await self._current(record.station_id, kind)
            if current is None or self.starts_at(current) > now:
                continue  # a newer certificate is in use, or not yet
            if not await self._may_start(record.station_id, kind, now):
                continue
            due = DueCertificate(
                record.station_id, kind, current.serial_hex, self.starts_at(current),
                current.not_after,
            )  # fmt: skip
            found.append(due)
            if len(found) == room:
                break
        return found

    async def scan(self, station_id: str | None = None) -> list[Renewal]:
        """Start a renewal for every certificate `due` finds; one scan at a time."""
        async with self._scanning:
            started = await self.request_all(
                [(due.station_id, due.kind, due.serial_hex) for due in await self.due(station_id)],
                requested_by="scan", paced=False,
            )  # fmt: skip
            if station_id is None:
                await self._revoke_replaced()
                await self._give_up_unanswered()
                await self._give_up_silent_triggers()
                await self._alert_expiring()
        if started:
            LOG.info("renewal scan: %d renewals started", len(started))
        return started

    async def _give_up_unanswered(self) -> None:
        """A station that neither answered CertificateSigned nor came back within
        `retry_after_s` (it may keep its connection for months) gets the renewal failed,
        and so retried after the backoff: an open renewal is never left waiting for ever.
        The certificate stays valid: the station may yet have installed it."""
        before = self.clock.now() - timedelta(seconds=self.settings.retry_after_s)
        for renewal in await self.store.in_state(RenewalState.SIGNED):
            if renewal.reason == UNANSWERED and renewal.updated_at <= before:
                await self._reject(
                    renewal,
                    f"CertificateSigned went unanswered and the station did not reconnect "
                    f"within {self.settings.retry_after_s} s",
                    withdraw=False,
                )

    async def withdraw(self, station_id: str, reason: str) -> int:
        """End the station's open renewals (failed with ``reason``; no alert, no retry:
        the station was removed, and one registered again under its id starts clean).
        How many."""
        ended = 0
        for renewal in await self.store.open_renewals(station_id):
            if await self._move(renewal, RenewalEvent.WITHDRAW, reason=reason):
                LOG.info("renewal #%d of %s for %s: withdrawn: %s", renewal.id,
                         renewal.kind.value, station_id, reason)  # fmt: skip
                ended += 1
        return ended

    def expiry(self) -> ExpiryWatch:
        """Expiry alerts and the expiry window, over this workflow's records."""
        return ExpiryWatch(
            self.ca, self.store, self.alerts, self.clock, self.settings, self.starts_at, _kind_of
        )

    async def _give_up_silent_triggers(self) -> None:
        """A station that accepted the TriggerMessage but sent no CSR within
        `retry_after_s` (and is still connected, else its next connection triggers it
        again) has the renewal failed, and so retried after the backoff: a trigger
        answered Accepted must not hold a place under max_in_flight for ever either."""
        before = self.clock.now() - timedelta(seconds=self.settings.retry_after_s)
        for renewal in await self.store.triggered_online(before, DUE_QUERY_LIMIT):
            trigger = {"requested_message": TRIGGER_FOR[renewal.kind]}
            latest = next(
                (item for item in reversed(await self.outbox.list(renewal.station_id, RECENT_CALLS))
                 if item.action == TRIGGER_MESSAGE and item.payload == trigger),
                None,
            )  # fmt: skip
            accepted = (
                latest is not None
                and latest.state is CallState.ANSWERED
                and (latest.response or {}).get("status") == "Accepted"
                and latest.finished_at is not None
                and latest.finished_at <= before
            )
            if not accepted:
                continue  # on its way still (or it failed: `trigger_finished` saw to it)
            reason = (
                f"the station accepted the TriggerMessage but sent no CSR within "
                f"{self.settings.retry_after_s} s"
            )
            if await self._move(renewal, RenewalEvent.REJECT, reason=reason):
                await self._failed(renewal, reason)

    async def _alert_expiring(self) -> None:
        """No certificate expires unnoticed, and no operator is flooded: a warning at 90
        days for a renewal not progressing, critical at 30 and 14 days for a certificate
        still in use, each once (`csms.services.expiry`)."""
        await self.expiry().check()

    async def _revoke_replaced(self) -> None:
        """Revoke (reason superseded) what renewals replaced, once the grace period is
        over; a certificate revoked meanwhile for another reason stays as it is."""
        now = self.clock.now()
        grace = timedelta(seconds=self.settings.revoke_replaced_after_s)
        replaced = await self.store.replaced_unrevoked(now - grace)
        if not replaced:
            return
        await self.revoker.revoke_all(
            [(int(r.old_serial, 16), f"renewal:{r.id}") for r in replaced if r.old_serial],
            "superseded",
            actor="renewal-daemon",
        )
        await self.store.set_old_revoked([r.id for r in replaced], now)

    def starts_at(self, record: CertificateRecord) -> datetime:
        """When the renewal of ``record`` starts: its renewal point plus its jitter."""
        lead = (record.not_after - record.renew_after).total_seconds()
        window = max(0.0, min(self.settings.jitter_s, lead / 4))
        fraction = int.from_bytes(hashlib.sha256(str(record.serial).encode()).digest()[:8]) / 2**64
        return record.renew_after + timedelta(seconds=window * fraction)

    async def _current(self, station_id: str, kind: CertificateKind) -> CertificateRecord | None:
        return _current_of(await self.ca.station_certificates(station_id), kind)

    async def _may_start(self, station_id: str, kind: CertificateKind, now: datetime) -> bool:
        if await self.store.open_renewal(station_id, kind) is not None:
            return False
        failures = await self.store.failures_since_success(station_id, kind)
        if not failures:
            return True
        if len(failures) >= self.settings.max_attempts:
            return False
        wait = self.settings.retry_after_s * 2 ** (len(failures) - 1)
        return now >= failures[0] + timedelta(seconds=wait)

    async def list(
        self, station_id: str | None = None, limit: int = 100, *, latest_only: bool = False
    ) -> list[Renewal]:
        return await self.store.list(station_id, limit, latest_only=latest_only)

    async def get(self, renewal_id: int) -> Renewal:
        return await self.store.get(renewal_id)

    async def _note(self, renewal: Renewal, reason: str | None) -> None:
        """Set the reason a renewal shows without moving it."""
        await self.store.move(renewal.id, renewal.state, renewal.state, self.clock.now(),
                              reason=reason)  # fmt: skip

    async def _move(self, renewal: Renewal, event: RenewalEvent, **fields: Any) -> bool:
        """``event`` from the state ``renewal`` was read in; False if it moved meanwhile."""
        return await self.store.move(
            renewal.id, renewal.state, advance(renewal.state, event), self.clock.now(), **fields
        )


def _csr_pending(renewal: Renewal) -> SignAnswer | None:
    """A CSR for another key while one is being signed, or waits for the station's SECC
    id (V2G): one request at a time (A02/A03), answered Rejected with the reason --
    never a CALLERROR, the request itself being valid (OCPP 2.0.1 Part 2 FR.02)."""
    if renewal.state is not RenewalState.CSR_RECEIVED:
        return None
    waiting = "the station's SECC id (GetVariables)" if renewal.csr_pem else "signing"
    LOG.info(
        "renewal %s: another %s CSR from %s refused: one waits for %s",
        renewal.id, renewal.kind.value, renewal.station_id, waiting,
    )  # fmt: skip
    return SignAnswer(False, "CsrPending", f"a CSR for this certificate waits for {waiting}")
