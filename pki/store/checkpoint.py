"""WAL checkpoints on a thread of their own, never on the event loop.

SQLite in WAL mode copies the log back into the database file (a checkpoint) from
inside a COMMIT once the log passes 1,000 pages -- in whichever connection commits
then. Our writers commit on the event loop (`SqliteFastPath`, the inline units of
work), so one commit in every few hundred stalled the loop while SQLite copied pages
and, at synchronous=NORMAL, synced the database file: every station's traffic waited
behind it. The loop's connections therefore run with `wal_autocheckpoint=0`, and this
thread checkpoints instead (PASSIVE: it never waits for, nor blocks, a reader or a
writer; the sqlite3 module releases the GIL while SQLite works), and restarts a long
log (`WalCheckpointer._restart`). Durability is unchanged -- a transaction is durable
once it is in the log.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

LOG = logging.getLogger(__name__)
INTERVAL_S = 0.5
"""How often the log is copied back: at most about half a second of writes piles up."""
RESTART_FRAMES = 2048
"""A log this long (8 MiB of 4 KiB pages) is copied back whole and restarted: `_restart`."""
RESTART_WAIT_MS = 20
"""How long a restart may wait for readers -- while it waits, writers wait too."""


def without_autocheckpoint(connection: sqlite3.Connection) -> None:
    """For a connection of the event loop's thread: a `WalCheckpointer` does its part."""
    connection.execute("PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite database file every `INTERVAL_S`."""

    def __init__(
        self, path: str, interval_s: float = INTERVAL_S, restart_frames: int = RESTART_FRAMES
    ) -> None:
        self._path = path
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pkictl-wal-checkpoint", daemon=True)
        self.checkpoints = 0
        """PASSIVE checkpoints run (each may have had nothing to copy)."""
        self.restarts = 0
        """RESTART checkpoints run (`_restart`), whether or not the readers let it."""

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop (with one last checkpoint) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout=0")
            stopping = False
            while not stopping:
                stopping = self._stop.wait(self._interval_s)
                try:
                    _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                    if frames >= self._restart_frames:
                        self._restart(connection)
                except sqlite3.Error as exc:  # busy recovery, a removed file: next round
                    LOG.debug("WAL checkpoint of %s skipped: %s", self._path, exc)
        finally:
            connection.close()

    def _restart(self, connection: sqlite3.Connection) -> None:
        """Make the next write start the log from its beginning. A writer does that by
        itself only when no reader still reads from the log; with two serving processes
        reading all the time that moment never came, and in a campaign the log file grew
        by 13 MB/s to hundreds of MB (issue #7, ADR 11). A RESTART checkpoint waits
        (briefly, writers held) until the readers read from the database file only; if
        they do not finish in time, the next round tries again."""
        connection.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        try:
            connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1
        finally:
            connection.execute("PRAGMA busy_timeout=0")
