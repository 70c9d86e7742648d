"""Can the database be written and read? `/health` says so (#22 item 21).

`pkictl serve` probes the database every few seconds with a committed write and a read
(and the free space of the disks it writes to). While a probe fails -- the database
locked by another process, read-only, its disk full, the server unreachable -- or has
not answered within its timeout, `/health` reports `degraded` with the reason (HTTP
503), and the log says so once, in one line; the next probe that succeeds makes it `ok`
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

LOG = logging.getLogger("pkictl.health")
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 5.0


class StorageProbe(Protocol):
    async def probe(self) -> None:
        """A committed write and a read of the database, and enough free space on the
        disks pkictl writes to; raises what the database or the disk raised."""
        ...


Describe = Callable[[BaseException], "tuple[str, str] | None"]
"""A database or disk fault's cause in one line twice: for `/health` (anyone on the HTTP
port may read it: no URL, path or server message) and for the log; None for anything
else."""


@dataclass
class StorageHealth:
    probe: StorageProbe
    describe: Describe
    interval_s: float = PROBE_INTERVAL_S
    timeout_s: float = PROBE_TIMEOUT_S
    reason: str | None = None
    """Why the database is not usable (for `/health`), or None while it is."""

    @property
    def ok(self) -> bool:
        return self.reason is None

    async def check(self, stop: asyncio.Event | None = None) -> None:
        """One probe. Past ``timeout_s`` without an answer the database counts as
        unusable meanwhile; the probe is still awaited for its outcome (a write asked
        for is never dropped), unless ``stop`` is set first."""
        task = asyncio.ensure_future(self.probe.probe())
        stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            waiting = {task} if stopping is None else {task, stopping}
            done, _ = await asyncio.wait(waiting, timeout=self.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not done:
                waited = f"database: no answer within {self.timeout_s:g} s (locked or unreachable?)"
                self._degraded(waited, waited)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:  # stopping
                return
            error = task.exception()
        finally:  # stopping, or this check cancelled: the probe with it
            if not task.done():
                task.cancel()
            if stopping is not None:
                stopping.cancel()
        if error is None:
            self._ok()
        else:
            first = str(error).splitlines()[0] if str(error) else ""
            unexpected = ("database: unexpected error", f"{type(error).__name__}: {first}")
            self._degraded(*(self.describe(error) or unexpected))

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            await self.check(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def _degraded(self, reason: str, detail: str) -> None:
        if reason != self.reason:
            LOG.warning("health degraded: %s", detail)
        self.reason = reason

    def _ok(self) -> None:
        if self.reason is not None:
            LOG.info("health ok again: the database answers (was: %s)", self.reason)
        self.reason = None
