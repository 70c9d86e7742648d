"""A serving node without its listeners: sessions, outbox, lifecycle daemon and gate.

`pkictl serve` puts websocket and HTTP listeners in front of a Node; the time-warp
simulation (`bench.timewarp`, #8) connects in-process stations to one and drives its
daemon on a simulated clock. Both get the same wiring from here, so what the simulation
proves holds for the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from websockets.exceptions import ConnectionClosed

from csms.app import STATION_PROFILE, App
from csms.daemon import LifecycleDaemon
from csms.protocol.schemas import validate_inline
from csms.protocol.session import SessionServices, StationSession
from csms.services.certificate_status import CertificateStatusService
from csms.services.contracts import ContractAuthorizer
from csms.services.ev_certificates import EvCertificates
from csms.services.gate import Admission, ConnectionGate
from csms.services.inventory import GET_INSTALLED
from csms.services.outbox import POLL_INTERVAL_S, RESPONSE_TIMEOUT_S, Outbox
from csms.services.renewals import (
    CERTIFICATE_SIGNED,
    GET_VARIABLES,
    TRIGGER_MESSAGE,
    RenewalService,
)
from csms.services.rollover import INSTALL_CERTIFICATE, RolloverCampaign
from csms.services.security_events import SecurityEvents
from csms.services.sessions import CLOSED_ACTION, SessionService
from csms.transport.endpoint import remote_of
from csms.transport.ocsp_client import HttpOcspFetcher
from pki.audit import AuditEvent
from pki.ocsp import ocsp_urls
from pki.records import Authority, TrustAnchor

LOG = logging.getLogger("pkictl.serve")
REVOCATION_CHECK_S = 5.0
"""How often a node looks for revoked certificates among its stations' sessions."""
REVOKED_CLOSE_CODE = 1008  # policy violation (RFC 6455 7.4.1)


@dataclass(frozen=True)
class NodeOptions:
    response_timeout: float = RESPONSE_TIMEOUT_S
    """Seconds a station has to answer a call from the outbox."""
    outbox_poll_interval: float = POLL_INTERVAL_S
    """How often a connected station's outbox is checked for calls queued elsewhere."""
    background: bool = True
    """Run the node's own timers: heartbeat, outbox watcher, moved-station check and the
    daemon's schedule. Off, whoever drives the node calls them (a simulated clock)."""


@dataclass
class Node:
    app: App
    sessions: SessionService
    outbox: Outbox
    renewals: RenewalService
    daemon: LifecycleDaemon
    campaign: RolloverCampaign
    services: SessionServices
    gate: ConnectionGate
    live: dict[str, Any] = field(default_factory=dict)
    """Station id -> its connection on this node (websockets' or any with the same
    send/recv/close)."""
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def run_session(self, station_id: str, connection: Any, admission: Admission) -> None:
        """One admitted connection, from its session's start to its end."""
        previous = self.live.get(station_id)
        self.live[station_id] = connection
        if previous is not None:  # a rebooted station is back before its old socket died
            LOG.info("station %s reconnected: closing its previous connection", station_id)
            await previous.close(1000, "replaced by a new connection")
        decision = admission.decision
        assert decision.security_profile is not None
        certificate = admission.certificate
        await self.sessions.connected(
            station_id,
            security_profile=decision.security_profile,
            boot_pending=decision.boot_pending,
            remote=remote_of(connection),
            certificate_serial=certificate.serial_hex if certificate else None,
            certificate_not_after=certificate.not_after if certificate else None,
        )
        await self.renewals.presented(station_id, certificate.serial_hex if certificate else None)
        session = StationSession(
            station_id, connection, self.services, decision.security_profile, self.outbox
        )
        self.outbox.attach(station_id, session.send, waiting_for_boot=True)
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            await session.connection_ended()
            await self.outbox.detach(station_id, session.send)
            if self.live.get(station_id) is connection:
                del self.live[station_id]
                await self.sessions.disconnected(station_id)

    async def wind_down(self) -> None:
        """Stop the daemon and the node's timers (each between two rounds) and any fill
        pending; the connections are the caller's to close."""
        await self.daemon.stop()
        for task in self._background:
            await task
        await self.renewals.close()


async def start_node(
    app: App,
    options: NodeOptions,
    stop: asyncio.Event,
    station_cas: list[x509.Certificate],
) -> Node:
    """Register the node and start its outbox and lifecycle (what a previous run left
    half done goes on first). ``stop`` ends the background timers."""
    validate_inline()
    nodes = app.nodes
    sessions = SessionService(app.session_store, app.clock, node_id=nodes.node_id)
    nodes.revived.append(sessions.reclaim)
    outbox = replace(
        app.outbox,
        response_timeout=options.response_timeout,
        poll_interval=options.outbox_poll_interval,
        node_id=nodes.node_id,
    )
    renewals, campaign, daemon = await _start_lifecycle(app, outbox, schedule=options.background)
    node = Node(
        app=app,
        sessions=sessions,
        outbox=outbox,
        renewals=renewals,
        daemon=daemon,
        campaign=campaign,
        services=_session_services(app, sessions, renewals),
        gate=ConnectionGate(
            store=app.store,
            clock=app.clock,
            organization=app.config.organization,
            observed_renewal=app.policy.profile(STATION_PROFILE).renewal,
            station_cas=station_cas,
        ),
    )
    if options.background:
        node._background = [
            asyncio.create_task(nodes.run(stop)),
            asyncio.create_task(outbox.watch(stop)),
            asyncio.create_task(_close_moved(node, nodes.heartbeat_s, stop)),
            asyncio.create_task(_close_revoked(node, REVOCATION_CHECK_S, stop)),
        ]
    return node


def trusted_station_cas(
    app: App, authorities: list[Authority], added: list[TrustAnchor]
) -> list[x509.Certificate]:
    """Trust anchors for station client certificates: the CA issuing the
    charging-station profile, and the station CAs the operator added (`trust add`)."""
    issuer = app.policy.profile(STATION_PROFILE).issuer
    ours = [a.certificate() for a in authorities if a.name == issuer]
    return [*ours, *(t.certificate() for t in added)]


async def _start_lifecycle(
    app: App, outbox: Outbox, *, schedule: bool
) -> tuple[RenewalService, RolloverCampaign, LifecycleDaemon]:
    """The certificate lifecycle on this node's outbox: answers to CertificateSigned,
    GetVariables, InstallCertificate and GetInstalledCertificateIds go to the services
    that asked (renewals, inventory, the root rollover campaign); what a previous run
    left half done goes on; then the daemon starts (on its schedule if ``schedule``)."""
    renewals = replace(app.renewals, outbox=outbox)
    outbox.listen(CERTIFICATE_SIGNED, renewals.call_finished)
    outbox.listen(TRIGGER_MESSAGE, renewals.trigger_finished)
    outbox.listen(GET_VARIABLES, renewals.secc_id_answered)
    inventory = replace(app.inventory, outbox=outbox)
    outbox.listen(GET_INSTALLED, inventory.call_finished)
    campaign = replace(app.rollover, outbox=outbox, inventory=inventory)
    outbox.listen(GET_VARIABLES, campaign.check_answered)
    outbox.listen(INSTALL_CERTIFICATE, campaign.install_answered)
    outbox.listen(GET_INSTALLED, campaign.inventory_answered)
    if resumed_stations := await campaign.resume():
        LOG.info("root rollover: %d stations' answers acted on after the restart",
                 resumed_stations)  # fmt: skip
    stale_before = app.clock.now() - 2 * app.nodes.lease  # younger: maybe in progress
    if resumed := await renewals.resume(stale_before):
        LOG.info("%d renewals left half done by a previous run go on", resumed)
    daemon = LifecycleDaemon(app, renewals, app.nodes)
    if schedule:
        daemon.start()
    return renewals, campaign, daemon


async def _close_moved(node: Node, interval: float, stop: asyncio.Event) -> None:
    """Close connections of stations that have connected to another node since: a
    half-open socket here would otherwise take their calls (ADR 13)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            for station_id in await node.sessions.moved_elsewhere():
                if (connection := node.live.get(station_id)) is not None:
                    LOG.info("station %s is connected to another node: closing here", station_id)
                    await connection.close(1000, "connected to another node")
        except Exception:  # the next round tries again
            LOG.exception("looking for stations connected elsewhere failed")


async def _close_revoked(node: Node, interval: float, stop: asyncio.Event) -> None:
    """End the sessions whose station presented a certificate revoked since it connected,
    wherever it was revoked (`pkictl cert revoke`, the daemon, another node): every
    ``interval`` seconds, one indexed lookup per 500 connected stations. Closed with 1008
    (policy violation), logged and audited; the gate refuses the certificate at the
    reconnection."""
    closed: dict[str, Any] = {}  # station -> the connection closed (its end may lag)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            revoked = await node.sessions.revoked()
        except Exception:  # the next round tries again
            LOG.exception("looking for sessions with revoked certificates failed")
            continue
        closed = {s: c for s, c in closed.items() if node.live.get(s) is c}
        closing = []
        for session in revoked:
            connection = node.live.get(session.station_id)
            if connection is None or closed.get(session.station_id) is connection:
                continue
            closed[session.station_id] = connection
            LOG.warning("station %s: certificate %s revoked: closing its connection (1008)",
                        session.station_id, session.certificate_serial)  # fmt: skip
            await node.app.store.append_audit(
                AuditEvent(
                    CLOSED_ACTION, f"node:{node.app.nodes.node_id}",
                    f"station:{session.station_id}", "closed",
                    {"reason": "certificate-revoked", "close_code": REVOKED_CLOSE_CODE,
                     "certificate_serial": session.certificate_serial,
                     "remote": session.remote},
                ),
                node.app.clock.now(),
            )  # fmt: skip
            closing.append(connection.close(REVOKED_CLOSE_CODE, "certificate revoked"))
        await asyncio.gather(*closing, return_exceptions=True)


def _session_services(
    app: App, sessions: SessionService, renewals: RenewalService
) -> SessionServices:
    certificate_status = _certificate_status(app)
    return SessionServices(
        sessions, SecurityEvents(app.store, app.clock), app.tokens, app.transactions,
        app.reports, renewals, certificate_status,
        ContractAuthorizer(app.trust.contract_roots, certificate_status, app.tokens, app.clock),
        EvCertificates(provider=None),  # no contract certificate provider yet
    )  # fmt: skip


def _certificate_status(app: App) -> CertificateStatusService:
    """GetCertificateStatus: our responder, else the AIA OCSP URLs of the CAs we hold
    or trust, else the responders configured in pkictl.toml."""

    async def allowed() -> frozenset[str]:
        certificates = [a.certificate() for a in await app.store.list_authorities()]
        certificates += [t.certificate() for t in await app.trust.list()]
        return frozenset(url for c in certificates for url in ocsp_urls(c))

    return CertificateStatusService(
        app.ocsp, HttpOcspFetcher(), allowed, frozenset(app.config.ocsp_responders), app.clock,
        app.ocsp.log,
    )  # fmt: skip
