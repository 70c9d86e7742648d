"""The periodic work of `pkictl serve`: the renewal scan, the CSMS's own server
certificates and the CRLs due again, at start and every `[renewal] scan_interval_s`
(APScheduler); every few seconds, whether another process changed the authorities (a
root rollover switched by the CLI), so that new certificates go out with the chain in
force, and whether a stopped or lost node left a renewal half done.

With several nodes on one database (ADR 13), the scans, the CRLs and the recovery run
on the node holding the lifecycle lease only; every node follows the authorities.

One run at a time (a run that overran its interval is not started twice), and a run in
progress finishes before the service closes its database: APScheduler would cancel it
mid-write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from csms.app import App
from csms.services.nodes import NodeService
from csms.services.renewals import RenewalService
from pki.store.rollovers import AUTHORITIES_REVISION

LOG = logging.getLogger("pkictl.daemon")
AUTHORITIES_CHECK_S = 5.0
RECOVERY_CHECK_S = 15.0


@dataclass
class LifecycleDaemon:
    app: App
    renewals: RenewalService
    nodes: NodeService
    _scheduler: AsyncIOScheduler = field(
        default_factory=lambda: AsyncIOScheduler(timezone=UTC), init=False
    )
    _running: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _revision: str | None = field(default=None, init=False)
    _revision_known: bool = field(default=False, init=False)

    def start(self) -> None:
        self._scheduler.add_job(
            self.run_once, "interval", seconds=self.renewals.settings.scan_interval_s,
            next_run_time=datetime.now(UTC), max_instances=1, coalesce=True, id="lifecycle",
        )  # fmt: skip
        self._scheduler.add_job(
            self.check_authorities, "interval", seconds=AUTHORITIES_CHECK_S,
            next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True, id="authorities",
        )  # fmt: skip
        self._scheduler.add_job(
            self.recover, "interval", seconds=RECOVERY_CHECK_S,
            max_instances=1, coalesce=True, id="recovery",
        )  # fmt: skip
        self._scheduler.start()

    async def check_authorities(self) -> None:
        revision = await self.app.store.get_setting(AUTHORITIES_REVISION)
        if self._revision_known and revision != self._revision:
            LOG.info("the authorities changed (%s): issuing with the chain in force", revision)
            self.app.ca.forget_authorities()
            self.app.ocsp.forget()
            async with self._running:
                await self.app.sync_authority_files()
                if await self.nodes.lead():
                    await self.app.revocations.refresh_crls("daemon")
        self._revision, self._revision_known = revision, True

    async def recover(self) -> None:
        """Renewal steps a node left half done (stopped or lost mid-step) go on, once
        they are older than any step in progress on a live node could be; renewals held
        back by the in-flight cap are triggered as room is made (on any node)."""
        async with self._running:
            if await self.nodes.lead():
                stale_before = self.app.clock.now() - 2 * self.nodes.lease
                if resumed := await self.renewals.resume(stale_before):
                    LOG.info("%d renewals left half done by a stopped node go on", resumed)
                if started := await self.renewals.fill():  # room made on any node
                    LOG.info("%d renewals held back by the in-flight cap triggered", started)

    async def run_once(self) -> None:
        async with self._running:
            if not await self.nodes.lead():
                return  # another node holds the lifecycle lease
            await self.renewals.scan()
            for renewed in await self.app.renew_server_certificates("daemon"):
                LOG.info("server certificate %s renewed: new connections get it", renewed.name)
            for name in await self.app.revocations.refresh_crls("daemon"):
                LOG.info("CRL of %s published again before its nextUpdate", name)

    async def stop(self) -> None:
        if not self._scheduler.running:  # driven by hand (a simulated clock)
            async with self._running:
                return
        self._scheduler.pause()
        async with self._running:  # a run in progress finishes
            self._scheduler.shutdown(wait=False)
