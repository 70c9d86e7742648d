"""The time-warp driver: the real service (`csms.node.Node` over an `App` on a real
database and CA) on a simulated clock, with in-process stations, through a scenario.

Time moves in steps (an hour by default). In each step the stations' due events run
(connect, go offline, the 12-hourly self-renewal check), the node does what its timers
would (heartbeat; the daemon's scan every `scan_interval_s`; recovery and filling every
step), and then the simulation waits until everything that started has finished: no
task running and no OCPP message unhandled. Only then does the clock move on, so the
service sees time pass exactly as the scenario says, as fast as the work allows.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from bench.timewarp.pipe import Traffic, pipe
from bench.timewarp.station import (
    CSR_REPEAT_TIMES,
    CSR_RESEND_AFTER,
    SELF_CHECK_EVERY,
    SELF_RENEW_BEFORE,
    SimStation,
    StationLink,
    chain_valid,
)
from csms.app import App, default_policy_text, initialize_home, open_app
from csms.domain.handshake import Refusal, Transport
from csms.home import HomeConfig
from csms.node import Node, NodeOptions, start_node, trusted_station_cas
from csms.services.gate import ConnectionRequest
from pki.clock import FixedClock
from pki.records import AuthorityRole, TrustRole

ORGANIZATION = "TimeWarp CPO"
HOST = "csms.timewarp.test"
PASSPHRASE = "timewarp-passphrase"  # noqa: S105 -- a throwaway home's CA keys
RETRY_CONNECT = timedelta(hours=1)
CERTIFICATE_REFUSALS = frozenset(
    {Refusal.CERTIFICATE_EXPIRED, Refusal.CERTIFICATE_REVOKED, Refusal.ISSUER_EXPIRED,
     Refusal.CERTIFICATE_NOT_YET_VALID}
)  # fmt: skip
SERVER_UNTRUSTED = "server-certificate-untrusted"


@dataclass(frozen=True)
class Scenario:
    stations: int = 10_000
    days: int = 730
    start: datetime = datetime(2027, 1, 4, tzinfo=UTC)
    cohorts: tuple[tuple[int, float], ...] = ((75, 0.4), (160, 0.35), (250, 0.25))
    """Factory certificates: (days from the start to expiry, share of the fleet)."""
    offline_share: float = 0.05
    offline_max_days: int = 42
    long_absences: int = 0
    """Stations (besides the above) away through their whole renewal window: they leave
    95 days before their factory certificate expires and come back `long_absence_days`
    later, expired -- to be alerted on before expiry and renewed at reconnection."""
    long_absence_days: int = 120
    fault_rate: float = 0.01
    """Share of CSRs and of CertificateSigned answers that fail."""
    restart_every_days: int = 30
    rollover_day: int | None = 270
    """The CSO root is rolled over (`pkictl ca rollover cso-root`) on this day; the
    switch follows as soon as every station has the new root."""
    step: timedelta = timedelta(hours=1)
    scan_interval_s: int = 6 * 3600
    """The daemon's round (scan, recovery, fill) in simulated time: the service's default
    is an hour; a renewal window is 90 days, so six hours change nothing but the cost."""
    seed: int = 2027


class Event(Enum):
    CONNECT = "connect"
    OFFLINE = "offline"
    SELF_CHECK = "self-check"
    RESEND_CSR = "resend-csr"


@dataclass
class Tally:
    """What the pass criteria are judged on."""

    refused_hours: dict[str, float] = field(default_factory=dict)
    """Station-hours of refused connection, by cause."""
    refused_stations: set[str] = field(default_factory=set)
    expired_at_reconnect: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    """Stations that came back from offline with an expired certificate: when, and when
    that certificate had expired."""
    renewed_after_return: dict[str, float] = field(default_factory=dict)
    """Of those, hours from their return to their new certificate installed."""
    restarts: int = 0
    connects: int = 0
    rollover_started: datetime | None = None
    rollover_switched: datetime | None = None
    stations_without_new_root_at_switch: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


class Simulation:
    def __init__(self, scenario: Scenario, directory: Path) -> None:
        self.scenario = scenario
        self.home = directory / "ca"
        self._passphrase = directory / "passphrase"
        self.clock = FixedClock(scenario.start)
        self.random = random.Random(scenario.seed)  # noqa: S311 -- a replayable scenario
        self.traffic = Traffic()
        self.tally = Tally()
        self.stations: list[SimStation] = []
        self._events: list[tuple[datetime, int, int, Event]] = []
        self._sequence = itertools.count()
        self._work: set[asyncio.Task[Any]] = set()
        self._sessions: dict[int, tuple[asyncio.Task[Any], asyncio.Task[Any]]] = {}
        """Each connected station's two session tasks (asyncio keeps weak references)."""
        self._installed: list[SimStation] = []
        """Stations that installed a new certificate and are to reconnect with it."""
        self._refused_since: dict[int, tuple[datetime, str]] = {}
        self._offline_until: dict[int, datetime] = {}
        self._absence_days: dict[int, float] = {}
        self._server_chain: tuple[x509.Certificate, list[x509.Certificate]] | None = None
        self._app_context: Any = None
        self.app: App | None = None
        self.node: Node | None = None
        self._stop = asyncio.Event()

    # --- set-up ------------------------------------------------------------------------

    async def set_up(self) -> None:
        scenario = self.scenario
        config = HomeConfig(
            ORGANIZATION, "DE", (HOST,), f"http://{HOST}:8080", frozenset({"cso"}),
            renewal={"scan_interval_s": scenario.scan_interval_s},
        )  # fmt: skip
        self._passphrase.parent.mkdir(parents=True, exist_ok=True)
        self._passphrase.write_text(PASSPHRASE)
        self._passphrase.chmod(0o600)
        await initialize_home(
            self.home, config, policy_text=default_policy_text(), policy_source="timewarp",
            passphrase_file=self._passphrase, clock=self.clock,
        )  # fmt: skip
        factory_key, factory_ca = self._factory_ca()
        async with open_app(self.home, self._passphrase, clock=self.clock) as app:
            await app.trust.add(
                TrustRole.STATION_CA, factory_ca.public_bytes(serialization.Encoding.PEM), "sim"
            )
            root = await app.store.get_authority("cso-root")
            assert root is not None
            for index in range(scenario.stations):
                self.stations.append(
                    await self._new_station(app, index, factory_key, factory_ca, root.certificate())
                )
        self._plan_offline()
        for station in self.stations:
            self._schedule(self.clock.now(), station, Event.CONNECT)
            self._schedule_self_check(station)

    def _factory_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TimeWarp Factory CA")])
        now = self.clock.now()
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=400)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return key, certificate

    async def _new_station(
        self,
        app: App,
        index: int,
        factory_key: ec.EllipticCurvePrivateKey,
        factory_ca: x509.Certificate,
        csms_root: x509.Certificate,
    ) -> SimStation:
        station_id, serial = f"TW{index:05d}", f"TWSN{index:05d}"
        await app.stations.register(
            station_id, serial_number=serial, secc_id=None, security_profile=3,
            password=None, actor="sim", allow_expired=True,
        )  # fmt: skip
        expires_in = self._cohort_days()
        not_after = self.clock.now() + timedelta(days=expires_in, hours=self.random.random() * 24)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, serial),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            ]))
            .issuer_name(factory_ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_after - timedelta(days=730)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(factory_key, hashes.SHA256())
        )  # fmt: skip
        return SimStation(
            index, station_id, serial, ORGANIZATION, key, certificate, [csms_root],
            random.Random(self.scenario.seed * 1_000_003 + index),  # noqa: S311 -- replayable
            self.scenario.fault_rate,
        )  # fmt: skip

    def _cohort_days(self) -> int:
        draw, total = self.random.random(), 0.0
        for days, share in self.scenario.cohorts:
            total += share
            if draw < total:
                return days
        return self.scenario.cohorts[-1][0]

    def _plan_offline(self) -> None:
        """A share of the stations goes offline once, at a random time, for up to
        `offline_max_days`."""
        scenario = self.scenario
        chosen = self.random.sample(
            self.stations, round(scenario.offline_share * len(self.stations))
        )
        for station in chosen:
            at = self.clock.now() + timedelta(hours=self.random.randrange(24, scenario.days * 24))
            self._schedule(at, station, Event.OFFLINE)
        later = [
            s for s in self.stations if s not in chosen
            and s.certificate.not_valid_after_utc - self.clock.now() > timedelta(days=100)
        ]  # fmt: skip
        for station in self.random.sample(later, min(scenario.long_absences, len(later))):
            leaves = station.certificate.not_valid_after_utc - timedelta(days=95)
            self._absence_days[station.index] = scenario.long_absence_days
            self._schedule(leaves, station, Event.OFFLINE)

    # --- the node ----------------------------------------------------------------------

    async def open_node(self) -> None:
        self._app_context = open_app(self.home, self._passphrase, clock=self.clock)
        app = self.app = await self._app_context.__aenter__()
        await app.nodes.start()
        authorities = await app.store.list_authorities()
        station_cas = trusted_station_cas(
            app, authorities, await app.trust.list(TrustRole.STATION_CA)
        )
        node = await start_node(app, NodeOptions(background=False), self._stop, station_cas)
        node.renewals.fill_delay_s = 0
        self.node = node
        await self._refresh_server_chain()

    async def close_node(self) -> None:
        for station in self.stations:
            await self._disconnect(station)
        await self._settle()
        assert self.node is not None
        assert self.app is not None
        await self.node.wind_down()
        await self.app.nodes.stop()
        await self._app_context.__aexit__(None, None, None)
        self.node = self.app = None

    async def restart_node(self) -> None:
        """A node restart: every station drops and comes back."""
        self.tally.restarts += 1
        await self.close_node()
        await self.open_node()
        now = self.clock.now()
        for station in self.stations:
            if station.index not in self._offline_until:
                self._schedule(now + timedelta(minutes=1 + station.index % 30), station,
                               Event.CONNECT)  # fmt: skip

    async def _refresh_server_chain(self) -> None:
        """The certificate a station's TLS handshake is shown: the ECDSA CSMS server
        certificate in force, with the CAs above it (for the station to check against
        its installed roots)."""
        assert self.app is not None
        authorities = {a.name: a for a in await self.app.store.list_authorities()}
        server = next(
            a for a in authorities.values()
            if a.role is AuthorityRole.CSMS_SERVER
            and isinstance(a.certificate().public_key(), ec.EllipticCurvePublicKey)
        )  # fmt: skip
        chain, issuer = [], server.issuer
        while issuer is not None and issuer in authorities:
            chain.append(authorities[issuer].certificate())
            issuer = authorities[issuer].issuer
        self._server_chain = (server.certificate(), chain)

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> Tally:
        """Step through the scenario. A step with nothing due costs nothing: the clock
        jumps to the next station event or daemon round."""
        asyncio.get_running_loop().set_task_factory(self._task_factory)
        scenario = self.scenario
        end = scenario.start + timedelta(days=scenario.days)
        scan_every = timedelta(seconds=scenario.scan_interval_s)
        next_scan = next_sample = self.clock.now()
        next_restart = next_scan + timedelta(days=scenario.restart_every_days)
        while (now := self.clock.now()) < end:
            if now >= next_sample:  # (before a restart: its reconnections take minutes)
                self.tally.samples.append(await self._sample())
                next_sample += timedelta(days=1)
            if now >= next_restart:
                await self.restart_node()
                next_restart += timedelta(days=scenario.restart_every_days)
            await self._run_due_events(now)
            await self._settle()
            await self._reconnect_renewed()
            if now >= next_scan:
                await self._daemon_round()
                next_scan += scan_every
            upcoming = min(next_scan, next_sample, next_restart, end,
                           self._events[0][0] if self._events else end)  # fmt: skip
            self.clock.advance(
                max(scenario.step, upcoming - now) if upcoming > now else scenario.step
            )
        self._close_refusals()
        return self.tally

    async def _daemon_round(self) -> None:
        """What the node's timers do: heartbeat, the scan (with server certificates and
        CRLs), the recovery and filling of held-back renewals."""
        assert self.node is not None
        assert self.app is not None
        await self.app.nodes.beat()
        await self.node.daemon.check_authorities()
        await self.node.daemon.run_once()
        await self._refresh_server_chain()
        await self.node.daemon.recover()
        await self._settle()
        await self._reconnect_renewed()
        await self._rollover_round()

    async def _rollover_round(self) -> None:
        """Start the root rollover on its day; afterwards, each round, retry stations
        whose installation failed and switch once none is left without the new root
        (the campaign refuses to switch before: nothing is forced here)."""
        assert self.node is not None
        tally, campaign, now = self.tally, self.node.campaign, self.clock.now()
        day = self.scenario.rollover_day
        if day is None or tally.rollover_switched is not None:
            return
        if tally.rollover_started is None:
            if now >= self.scenario.start + timedelta(days=day):
                await campaign.start("sim")
                tally.rollover_started = now
                await self._settle()
            return
        status = await campaign.status()
        if any(s.state == "failed" for s in status.stations):
            await campaign.retry()
            await self._settle()
            return
        if status.blocked:
            return
        new_root = status.rollover.certificate()
        tally.stations_without_new_root_at_switch = [
            s.station_id for s in self.stations if new_root not in s.roots
        ]
        await campaign.switch("sim", force=False)
        tally.rollover_switched = now
        await self.node.daemon.check_authorities()
        await self._refresh_server_chain()
        await self._settle()

    async def _run_due_events(self, now: datetime) -> None:
        while self._events and self._events[0][0] <= now:
            _, _, index, event = heapq.heappop(self._events)
            station = self.stations[index]
            if event is Event.CONNECT:
                await self._connect(station)
            elif event is Event.OFFLINE:
                await self._go_offline(station)
            elif event is Event.SELF_CHECK:
                self._self_check(station)
            elif event is Event.RESEND_CSR and station.link is not None:
                station.count("csr_resends")
                self.spawn(station.link.sign())

    def _schedule(self, at: datetime, station: SimStation, event: Event) -> None:
        heapq.heappush(self._events, (at, next(self._sequence), station.index, event))

    def _schedule_self_check(self, station: SimStation) -> None:
        """The station looks every 12 h; nothing happens until 30 days before expiry, so
        the first look that can matter is the one scheduled."""
        now = self.clock.now()
        phase = timedelta(hours=station.index % 12)
        at = max(
            now + SELF_CHECK_EVERY, station.certificate.not_valid_after_utc - SELF_RENEW_BEFORE
        )
        self._schedule(at + phase, station, Event.SELF_CHECK)

    def _self_check(self, station: SimStation) -> None:
        now = self.clock.now()
        if (
            station.link is not None
            and station.needs_self_renewal(now)
            and not station.csr_pending(now)
        ):
            station.count("self_renewals")
            self.spawn(station.link.sign())
        self._schedule(now + SELF_CHECK_EVERY, station, Event.SELF_CHECK)

    async def _go_offline(self, station: SimStation) -> None:
        days = self._absence_days.pop(station.index, None) or self.random.uniform(
            1, self.scenario.offline_max_days
        )
        back = self.clock.now() + timedelta(days=days)
        self._offline_until[station.index] = back
        station.count("offline_periods")
        await self._disconnect(station)
        self._refused_since.pop(station.index, None)
        self._schedule(back, station, Event.CONNECT)

    # --- connections -------------------------------------------------------------------

    async def _connect(self, station: SimStation) -> None:
        now = self.clock.now()
        back = self._offline_until.get(station.index)
        if back is not None:
            if now < back:
                return  # a reconnection planned before it went offline
            del self._offline_until[station.index]
            if station.certificate.not_valid_after_utc <= now:
                expired = station.certificate.not_valid_after_utc
                self.tally.expired_at_reconnect[station.station_id] = (now, expired)
        if station.link is not None:
            return
        assert self.node is not None
        assert self._server_chain is not None
        leaf, chain = self._server_chain
        if not chain_valid(leaf, chain, station.roots, now):
            self._refused(station, SERVER_UNTRUSTED)
            return
        admission = await self.node.gate.admit(
            ConnectionRequest(station.station_id, Transport.TLS, station.certificate_der(), None,
                              station.remote)
        )  # fmt: skip
        if not admission.decision.accepted:
            self._refused(station, str(admission.decision.refusal))
            return
        self._admitted(station)
        station_end, csms_end = pipe(self.traffic, station.index)
        link = StationLink(station, station_end, self.clock, self)
        station.link = link
        csms_task = self._long_lived(self.node.run_session(station.station_id, csms_end, admission))
        link_task = self._long_lived(link.run())
        self._sessions[station.index] = (csms_task, link_task)

        def ended() -> None:  # their ends are work the simulation waits for
            self._work.update(t for t in (csms_task, link_task) if not t.done())
            if station.link is link:
                station.link = None
                self._schedule(self.clock.now() + RETRY_CONNECT, station, Event.CONNECT)

        station_end.on_close = csms_end.on_close = ended
        self.tally.connects += 1
        self.spawn(link.boot())

    def _refused(self, station: SimStation, cause: str) -> None:
        self._refused_since.setdefault(station.index, (self.clock.now(), cause))
        self._schedule(self.clock.now() + RETRY_CONNECT, station, Event.CONNECT)

    def _admitted(self, station: SimStation) -> None:
        refused = self._refused_since.pop(station.index, None)
        if refused is not None:
            since, cause = refused
            hours = (self.clock.now() - since) / timedelta(hours=1)
            self.tally.refused_hours[cause] = self.tally.refused_hours.get(cause, 0.0) + hours
            self.tally.refused_stations.add(station.station_id)

    def _close_refusals(self) -> None:
        for index in list(self._refused_since):
            self._admitted(self.stations[index])

    async def _disconnect(self, station: SimStation) -> None:
        link = station.link
        if link is None:
            return
        station.link = None
        await link.hang_up()
        await self._settle()

    def csr_rejected(self, station: SimStation) -> None:
        """EVerest sends a new CSR after CertSigningWaitMinimum, doubling, a few times
        (here: at the next step, the clock's resolution)."""
        if station.csr_attempts <= CSR_REPEAT_TIMES:
            wait = CSR_RESEND_AFTER * 2 ** (station.csr_attempts - 1)
            self._schedule(self.clock.now() + wait, station, Event.RESEND_CSR)

    def installed(self, station: SimStation) -> None:
        away = self.tally.expired_at_reconnect.get(station.station_id)
        if away is not None and station.station_id not in self.tally.renewed_after_return:
            hours = (self.clock.now() - away[0]) / timedelta(hours=1)
            self.tally.renewed_after_return[station.station_id] = hours
        self._installed.append(station)

    async def _reconnect_renewed(self) -> None:
        """Stations that installed a new certificate reconnect with it (A02)."""
        while self._installed:
            renewed, self._installed = self._installed, []
            for station in renewed:
                await self._disconnect(station)
                await self._connect(station)
            await self._settle()

    # --- waiting for quiet -------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._work.add(asyncio.get_running_loop().create_task(coroutine))

    def _long_lived(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.Task(coroutine)  # not through the factory: not waited for

    def _task_factory(
        self, loop: asyncio.AbstractEventLoop, coroutine: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        """Every task the service starts (deliveries, group commits, after-handlers) is
        work to wait for."""
        task = asyncio.Task(coroutine, loop=loop, **kwargs)
        self._work.add(task)
        return task

    async def _settle(self) -> None:
        current = asyncio.current_task()
        spins = 0
        while True:
            self._work = {t for t in self._work if not t.done() and t is not current}
            if self._work:
                await asyncio.wait(self._work)
                spins = 0
                continue
            if self.traffic.in_flight:
                spins += 1
                await asyncio.sleep(0 if spins < 50 else 0.001)
                continue
            await asyncio.sleep(0)
            if not self._work and not self.traffic.in_flight:
                return

    # --- measurements ------------------------------------------------------------------

    async def _sample(self) -> dict[str, Any]:
        assert self.app is not None
        now = self.clock.now()
        to_expiry: Counter[str] = Counter()
        for station in self.stations:
            days = (station.certificate.not_valid_after_utc - now) / timedelta(days=1)
            bucket = (
                "expired"
                if days <= 0
                else "<30d"
                if days < 30
                else "<90d"
                if days < 90
                else ">=90d"
            )
            to_expiry[bucket] += 1
        async with self.app.store.engine.connect() as connection:
            states = dict((await connection.execute(
                text("SELECT state, count(*) FROM renewals GROUP BY state"))).all())  # fmt: skip
            alerts = dict((await connection.execute(
                text("SELECT code, count(*) FROM alerts GROUP BY code"))).all())  # fmt: skip
        return {
            "day": (now - self.scenario.start) / timedelta(days=1),
            "stations": len(self.stations),
            "connected": sum(1 for s in self.stations if s.link is not None),
            "to_expiry": dict(to_expiry),
            "renewals": {str(k): int(v) for k, v in states.items()},
            "alerts": {str(k): int(v) for k, v in alerts.items()},
        }
