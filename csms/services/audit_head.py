"""`pkictl serve` publishes the audit log's head periodically (#22 item 23, ADR 3).

The head (sequence number and hash of the last entry) lives in the database beside the
log, so whoever can rewrite the database can empty the log and rewind the head, and
`audit verify` alone calls that intact. Published outside -- an INFO log line (shipped
to a log collector), and optionally a file on another medium -- it is an anchor:
`pkictl audit verify --head SEQ:HASH` fails (exit 7) on a log that no longer holds that
entry with that hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pki.audit import AuditHead, format_head

LOG = logging.getLogger("pkictl.audit")
HEAD_INTERVAL_S = 300.0


@dataclass
class AuditHeadPublisher:
    head: Callable[[], Awaitable[AuditHead | None]]
    write: Callable[[str], None] | None = None
    """Writes "SEQ:HASH\\n" to the configured head file (atomically), if one is set."""
    interval_s: float = HEAD_INTERVAL_S
    published: AuditHead | None = None

    async def publish(self) -> AuditHead | None:
        """Log (and write) the head if it moved since last published."""
        head = await self.head()
        if head is None or head == self.published:
            return head
        LOG.info("audit head %s", format_head(head))
        if self.write is not None:
            self.write(f"{format_head(head)}\n")
        self.published = head
        return head

    async def run(self, stop: asyncio.Event) -> None:
        """At start and every ``interval_s`` until ``stop``; a failure is logged and
        tried again at the next round."""
        while not stop.is_set():
            try:
                await self.publish()
            except Exception as exc:  # noqa: BLE001 -- the next round tries again
                LOG.warning("audit head not published: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
