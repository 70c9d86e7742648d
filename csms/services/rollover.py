"""The CSO root rollover campaign over OCPP (M05): the next root onto every station,
verified, before anything switches (ADR 9).

For each registered station: GetVariables(SecurityCtrlr.AdditionalRootCertificateCheck)
says whether it wants the bare new root or the link certificate; InstallCertificate
sends that; GetInstalledCertificateIds shows it installed. Every call goes through the
outbox, so an offline station is served when it returns, and a restart loses nothing.
The switch refuses while any registered station lacks the new root, unless forced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from csms.domain.outbox import FINAL, CallState
from csms.domain.rollover import (
    InstallMethod,
    StationRolloverEvent,
    StationRolloverState,
    advance,
)
from csms.services.inventory import GET_INSTALLED, installed_from_answer
from csms.services.outbox import OutboxItem
from csms.services.sessions import SessionRecord
from pki.clock import Clock
from pki.errors import ConflictError, NotFoundError
from pki.hashdata import CertificateHashData, hash_data_for
from pki.records import Rollover, RolloverState, Station
from pki.rollover import RootRollover, SwitchResult

LOG = logging.getLogger("pkictl.rollover")
CSO_ROOT = "cso-root"
CSMS_ROOT_TYPE = "CSMSRootCertificate"
INSTALL_CERTIFICATE = "InstallCertificate"
ROOT_CHECK_REQUEST = {
    "get_variable_data": [
        {"component": {"name": "SecurityCtrlr"},
         "variable": {"name": "AdditionalRootCertificateCheck"}},
    ]
}  # fmt: skip
NAMED_IN_REFUSAL = 10


@dataclass(frozen=True)
class CampaignEntry:
    rollover_id: int
    station_id: str
    state: StationRolloverState
    method: InstallMethod | None
    outbox_id: int | None
    reason: str | None
    updated_at: datetime


class CampaignStore(Protocol):
    async def add(
        self, rollover_id: int, station_id: str, outbox_id: int | None, at: datetime
    ) -> bool:
        """A pending entry; False if the station is in the campaign already."""
        ...

    async def by_call(self, outbox_id: int) -> CampaignEntry | None: ...
    async def get(self, rollover_id: int, station_id: str) -> CampaignEntry | None: ...
    async def move(
        self, entry: CampaignEntry, to_state: StationRolloverState, at: datetime,
        **fields: Any,
    ) -> bool:  # fmt: skip
        """Change the entry if it is still in its state; False otherwise."""
        ...

    async def list(self, rollover_id: int) -> list[CampaignEntry]: ...


class CallLog(Protocol):
    """The outbox, as the campaign uses it: queue calls, look up how they ended."""

    async def enqueue(self, station_id: str, action: str, payload: Mapping[str, Any]) -> int: ...
    async def list(self, station_id: str | None, limit: int) -> list[OutboxItem]: ...


class RegisteredStations(Protocol):
    async def list_stations(self) -> list[Station]: ...


class Presence(Protocol):
    async def list(self) -> list[SessionRecord]: ...


class InventoryRefresher(Protocol):
    async def refresh(self, station_id: str) -> int:
        """Queue GetInstalledCertificateIds; its answer replaces the inventory."""
        ...


@dataclass(frozen=True)
class StationProgress:
    station_id: str
    state: str
    """A StationRolloverState, or "not-enrolled" (registered after the start)."""
    method: InstallMethod | None
    online: bool
    blocker: str | None
    """Why the switch cannot count on this station yet (None: verified)."""


@dataclass(frozen=True)
class CampaignStatus:
    rollover: Rollover
    stations: list[StationProgress]

    @property
    def blocked(self) -> list[StationProgress]:
        return [s for s in self.stations if s.blocker is not None]


def _chosen_method(item: OutboxItem) -> InstallMethod:
    """LINK when the station reports AdditionalRootCertificateCheck true; ROOT when it
    reports false or does not know the variable (it then does not check)."""
    results = (item.response or {}).get("get_variable_result") or []
    value = next((str(r.get("attribute_value", "")) for r in results
                  if r.get("attribute_status") == "Accepted"), "")  # fmt: skip
    return InstallMethod.LINK if value.strip().lower() == "true" else InstallMethod.ROOT


def _outcome(item: OutboxItem) -> str:
    if item.state is not CallState.ANSWERED:
        return f"{item.action}: {item.state.value}{f' ({item.error})' if item.error else ''}"
    status = (item.response or {}).get("status")
    info = (item.response or {}).get("status_info") or {}
    reason = info.get("reason_code")
    return f"{item.action}: {status}{f' ({reason})' if reason else ''}"


@dataclass
class RolloverCampaign:
    """Each step moves the station's entry first (with no call awaited), then queues the
    call, then records which call it awaits: an answer that comes before the record is
    still matched (`_awaiting`), and a crash in between leaves an entry that `--retry`
    or the next start (`resume`) moves on."""

    store: CampaignStore
    rollovers: RootRollover
    outbox: CallLog
    clock: Clock
    stations: RegisteredStations
    presence: Presence
    inventory: InventoryRefresher

    async def start(self, actor: str) -> tuple[Rollover, int]:
        """The next root and its link certificate, then every registered station
        enrolled; the number enrolled."""
        rollover = await self.rollovers.begin(CSO_ROOT, actor)
        return rollover, await self._enroll(rollover)

    async def retry(self) -> int:
        """Every station not verified yet starts over (whatever became of the call it
        awaited), and stations registered since the start join. The number (re)started."""
        rollover = await self.rollovers.open_rollover(CSO_ROOT)
        restarted = 0
        for entry in await self.store.list(rollover.id):
            if entry.state is not StationRolloverState.VERIFIED:
                moved = await self._move(entry, StationRolloverEvent.RETRY, outbox_id=None,
                                         reason=None, method=None)  # fmt: skip
                if moved:
                    await self._await(moved, self._check(entry.station_id))
                    restarted += 1
        return restarted + await self._enroll(rollover)

    async def resume(self) -> int:
        """At start: answers a previous run stored but did not act on (it stopped in
        between) are acted on now. The number of entries moved on."""
        rollover = await self.rollovers.current(CSO_ROOT)
        if rollover is None or rollover.state is not RolloverState.OPEN:
            return 0
        resumed = 0
        for entry in await self.store.list(rollover.id):
            if entry.outbox_id is None or entry.state in _SETTLED:
                continue
            items = await self.outbox.list(entry.station_id, RESUME_LOOKBACK)
            item = next((i for i in items if i.id == entry.outbox_id), None)
            if item is not None and item.state in FINAL:
                await self._dispatch(item)
                resumed += 1
        return resumed

    async def _enroll(self, rollover: Rollover) -> int:
        enrolled = 0
        for station in await self.stations.list_stations():
            if await self.store.get(rollover.id, station.id) is not None:
                continue
            if await self.store.add(rollover.id, station.id, None, self.clock.now()):
                entry = await self.store.get(rollover.id, station.id)
                assert entry is not None
                await self._await(entry, self._check(station.id))
                enrolled += 1
        return enrolled

    def _check(self, station_id: str) -> Awaitable[int]:
        return self.outbox.enqueue(station_id, "GetVariables", ROOT_CHECK_REQUEST)

    async def _await(self, entry: CampaignEntry, call: Awaitable[int]) -> None:
        """Queue the call, then record it as the one ``entry`` awaits (unless an answer
        moved the entry on meanwhile)."""
        outbox_id = await call
        await self.store.move(entry, entry.state, self.clock.now(), outbox_id=outbox_id)

    async def _awaiting(
        self, item: OutboxItem, state: StationRolloverState
    ) -> CampaignEntry | None:
        """The entry, in ``state``, that awaits ``item``'s answer."""
        entry = await self.store.by_call(item.id)
        if entry is None:  # answered before the call was recorded as awaited
            rollover = await self.rollovers.current(CSO_ROOT)
            if rollover is None:
                return None
            entry = await self.store.get(rollover.id, item.station_id)
            if entry is None or entry.outbox_id is not None:
                return None
        return entry if entry.state is state else None

    # --- outcomes of the campaign's calls (outbox listeners) ---------------------------

    async def check_answered(self, item: OutboxItem) -> None:
        if item.payload != ROOT_CHECK_REQUEST:
            return
        entry = await self._awaiting(item, StationRolloverState.PENDING)
        if entry is None:
            return
        if item.state is not CallState.ANSWERED:
            await self._move(entry, StationRolloverEvent.REJECT, reason=_outcome(item))
            return
        rollover = await self.rollovers.current(CSO_ROOT)
        if rollover is None or rollover.id != entry.rollover_id:
            return
        if rollover.state is not RolloverState.OPEN:  # ended meanwhile: install nothing
            return
        method = _chosen_method(item)
        certificate = rollover.link() if method is InstallMethod.LINK else rollover.certificate()
        moved = await self._move(entry, StationRolloverEvent.INSTALL, method=method.value,
                                 outbox_id=None)  # fmt: skip
        if moved:
            await self._await(moved, self._install(entry.station_id, certificate))

    def _install(self, station_id: str, certificate: x509.Certificate) -> Awaitable[int]:
        payload = {
            "certificate_type": CSMS_ROOT_TYPE,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
        }
        return self.outbox.enqueue(station_id, INSTALL_CERTIFICATE, payload)

    async def install_answered(self, item: OutboxItem) -> None:
        entry = await self._awaiting(item, StationRolloverState.INSTALL_SENT)
        if entry is None:
            return
        if item.state is CallState.ANSWERED and (item.response or {}).get("status") == "Accepted":
            moved = await self._move(entry, StationRolloverEvent.ACCEPT, outbox_id=None)
            if moved:
                await self._await(moved, self.inventory.refresh(entry.station_id))
        else:
            await self._move(entry, StationRolloverEvent.REJECT, reason=_outcome(item))

    async def inventory_answered(self, item: OutboxItem) -> None:
        """Any inventory answer of the station verifies it, not only the campaign's own;
        the campaign's own call failing or not listing the root fails the station."""
        rollover = await self.rollovers.current(CSO_ROOT)
        if rollover is None:
            return
        entry = await self.store.get(rollover.id, item.station_id)
        if entry is None or entry.state is StationRolloverState.VERIFIED:
            return
        if item.state is CallState.ANSWERED and item.response is not None:
            try:
                installed = installed_from_answer(item.station_id, item.response, self.clock.now())
            except (KeyError, ValueError, TypeError):
                installed = []  # the inventory service logs it
            roots = [i.hash_data for i in installed if i.certificate_type == CSMS_ROOT_TYPE]
            if any(_is_next_root(rollover, data) for data in roots):
                await self._move(entry, StationRolloverEvent.VERIFY, reason=None, outbox_id=None)
                return
            reason = "InstallCertificate was Accepted, yet the station does not list the new root"
        else:
            reason = _outcome(item)
        if await self._awaiting(item, StationRolloverState.INSTALLED) is not None:
            await self._move(entry, StationRolloverEvent.MISSING, reason=reason)

    async def _dispatch(self, item: OutboxItem) -> None:
        handlers = {
            "GetVariables": self.check_answered,
            INSTALL_CERTIFICATE: self.install_answered,
            GET_INSTALLED: self.inventory_answered,
        }
        await handlers[item.action](item)

    async def _move(
        self, entry: CampaignEntry, event: StationRolloverEvent, **fields: Any
    ) -> CampaignEntry | None:
        """The entry moved by ``event`` (None if it was not in its state any more)."""
        to_state = advance(entry.state, event)
        if not await self.store.move(entry, to_state, self.clock.now(), **fields):
            return None
        if to_state is StationRolloverState.FAILED:
            LOG.warning("rollover %d: station %s failed: %s",
                        entry.rollover_id, entry.station_id, fields.get("reason"))  # fmt: skip
        return replace(entry, state=to_state, **{k: v for k, v in fields.items()
                                                 if k in ("outbox_id", "reason")})  # fmt: skip

    # --- progress and the switch ----------------------------------------------------

    async def status(self) -> CampaignStatus:
        """The open rollover (else the last one) and where each station stands."""
        rollover = await self.rollovers.current(CSO_ROOT)
        if rollover is None:
            raise NotFoundError(
                f"{CSO_ROOT} was never rolled over: `pkictl ca rollover {CSO_ROOT}`"
            )
        entries = {e.station_id: e for e in await self.store.list(rollover.id)}
        sessions = {s.station_id: s for s in await self.presence.list()}
        progress = []
        for station in await self.stations.list_stations():
            entry, session = entries.get(station.id), sessions.get(station.id)
            online = session is not None and session.online
            progress.append(
                StationProgress(
                    station.id,
                    entry.state.value if entry else "not-enrolled",
                    entry.method if entry else None,
                    online,
                    _blocker(entry, session),
                )
            )
        return CampaignStatus(rollover, progress)

    async def switch(self, actor: str, *, force: bool) -> SwitchResult:
        await self.rollovers.open_rollover(CSO_ROOT)  # NotFoundError when none is open
        status = await self.status()
        blocked = [s.station_id for s in status.blocked]
        if blocked and not force:
            named = ", ".join(blocked[:NAMED_IN_REFUSAL])
            if len(blocked) > NAMED_IN_REFUSAL:
                named += f" and {len(blocked) - NAMED_IN_REFUSAL} more"
            raise ConflictError(
                f"{len(blocked)} registered station(s) do not have the new root yet: "
                f"{named}; see `pkictl campaign status` (--force switches anyway and cuts "
                "them off)"
            )
        result = await self.rollovers.switch(
            CSO_ROOT, actor, {"forced": force, "left_behind": blocked}
        )
        # A link certificate cannot outlive the old root that signed it: stations that
        # got one now get the self-signed new root, which their check accepts (it is
        # signed by the key of the link they hold).
        for entry in await self.store.list(result.rollover.id):
            if entry.method is InstallMethod.LINK and entry.state is StationRolloverState.VERIFIED:
                await self._install(entry.station_id, result.rollover.certificate())
        return result


def _is_next_root(rollover: Rollover, data: CertificateHashData) -> bool:
    root, link = rollover.certificate(), rollover.link()
    return data in (
        hash_data_for(root, root.public_key(), data.hash_algorithm),
        hash_data_for(link, rollover.previous().public_key(), data.hash_algorithm),
    )


_WAITING_FOR = {
    StationRolloverState.PENDING: "its AdditionalRootCertificateCheck (GetVariables)",
    StationRolloverState.INSTALL_SENT: "its InstallCertificate answer",
    StationRolloverState.INSTALLED: "its GetInstalledCertificateIds answer",
}


def _blocker(entry: CampaignEntry | None, session: SessionRecord | None) -> str | None:
    if entry is None:
        return "registered after the campaign started: `pkictl ca rollover cso-root --retry`"
    if entry.state is StationRolloverState.VERIFIED:
        return None
    if entry.state is StationRolloverState.FAILED:
        return f"failed: {entry.reason}; `pkictl ca rollover cso-root --retry` tries again"
    waiting = f"waiting for {_WAITING_FOR[entry.state]}"
    if session is None:
        return f"{waiting}; never connected"
    if not session.online:
        return f"{waiting}; offline since {session.last_seen.isoformat(timespec='seconds')}"
    return waiting


_SETTLED = frozenset({StationRolloverState.VERIFIED, StationRolloverState.FAILED})
RESUME_LOOKBACK = 50
