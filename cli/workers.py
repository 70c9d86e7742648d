"""`pkictl serve --workers N`: N serving processes on the same ports (ADR 13).

One Python process runs its event loop on one core. With N workers, each child is a
`pkictl serve` of its own -- a node, with its heartbeat, its stations, its outbox --
listening with SO_REUSEPORT on the same OCPP and HTTP ports, so the kernel spreads new
connections among them. The parent only supervises: it migrates the database once before
the children start (they would otherwise take turns at it), reserves a free port when
asked for port 0, relays each child's log lines with the worker's number, restarts a
child that dies (backing off), and on SIGTERM or Ctrl-C stops them all and waits while
they drain. Nodes coordinate through the database only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cli.output import note
from csms.serve_options import Listening, ServeOptions

READY_MARK = "pkictl serve: OCPP on"
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STARTED_FOR_S = 60.0
"""A child that ran this long before dying is restarted at the first backoff again."""


def reserve_ports(options: ServeOptions) -> tuple[ServeOptions, list[socket.socket]]:
    """Port 0 means "any free port", which every child would pick differently: reserve
    one here (bound with SO_REUSEPORT, never listening, so it gets no connections) and
    hand the number to the children. The sockets stay open while the workers run."""
    held: list[socket.socket] = []

    def reserved(port: int | None) -> int | None:
        if port != 0:
            return port
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((options.host, 0))
        held.append(sock)
        chosen: int = sock.getsockname()[1]
        return chosen

    ocpp_port, http_port = reserved(options.ocpp_port), reserved(options.http_port)
    assert ocpp_port is not None
    assert http_port is not None
    chosen = replace(
        options, ocpp_port=ocpp_port, http_port=http_port,
        plain_port=reserved(options.plain_port), reuse_port=True,
    )  # fmt: skip
    return chosen, held


def child_command(base: Sequence[str], options: ServeOptions) -> list[str]:
    """`pkictl [global options] serve ...` for one worker, on the given ports."""
    command = [
        sys.executable, "-m", "cli", *base, "serve", "--host", options.host,
        "--ocpp-port", str(options.ocpp_port), "--http-port", str(options.http_port),
        "--reuse-port", "--signing-process", "on" if options.signing_process else "off",
    ]  # fmt: skip
    if options.plain_port is not None:
        command += ["--plain-port", str(options.plain_port)]
    return command


@dataclass
class Supervisor:
    command: list[str]
    workers: int
    on_ready: Callable[[], None]
    _stopping: bool = False
    _children: dict[int, asyncio.subprocess.Process] | None = None

    async def run(self, stop: asyncio.Event) -> int:
        """Until ``stop``: keep N children running. Then SIGTERM them and wait. The exit
        status: 0 when every child drained and exited 0."""
        self._children = {}
        ready = [asyncio.Event() for _ in range(self.workers)]
        keepers = [
            asyncio.create_task(self._keep(number, ready[number], stop))
            for number in range(self.workers)
        ]
        announced = asyncio.create_task(self._announce(ready))
        await stop.wait()
        self._stopping = True
        announced.cancel()
        for child in self._children.values():
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*keepers)
        return 0 if all(code == 0 for code in codes) else 1

    async def _announce(self, ready: list[asyncio.Event]) -> None:
        await asyncio.gather(*(event.wait() for event in ready))
        self.on_ready()

    async def _keep(self, number: int, ready: asyncio.Event, stop: asyncio.Event) -> int:
        """One worker slot: start the child, relay its lines, restart it if it dies."""
        assert self._children is not None
        failures = 0
        while True:
            child = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            self._children[number] = child
            started = asyncio.get_running_loop().time()
            await self._relay(number, child, ready)
            code = await child.wait()
            if self._stopping or stop.is_set():
                return code
            lived = asyncio.get_running_loop().time() - started
            failures = 0 if lived >= STARTED_FOR_S else failures + 1
            pause = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            note(f"pkictl serve: worker {number + 1} exited ({code}); restarting in {pause:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return code

    async def _relay(
        self, number: int, child: asyncio.subprocess.Process, ready: asyncio.Event
    ) -> None:
        assert child.stderr is not None
        while line := await child.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if READY_MARK in text:
                ready.set()
            sys.stderr.write(f"[worker {number + 1}] {text}\n")
            sys.stderr.flush()


def ready_line(listening: Listening, host: str, workers: int | None = None) -> str:
    plain = f", profile 1 on ws://{host}:{listening.plain_port}" if listening.plain_port else ""
    processes = f" ({workers} worker processes)" if workers else ""
    return (
        f"{READY_MARK} wss://{host}:{listening.ocpp_port}/ocpp/STATION_ID, "
        f"HTTP on http://{host}:{listening.http_port}/health{plain}{processes}"
    )
