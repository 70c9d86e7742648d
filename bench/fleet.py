"""Station fleet on loopback: memory per idle mutual-TLS station, and handshake rates.

Setup (not timed): a temporary pkictl home (CSO hierarchy), N registered stations, a
station certificate each (real keys, real CSRs, issued by the CA), and `pkictl serve` as
a subprocess on 127.0.0.1 with free ports.

Scenarios (one JSON line each on stdout; progress on stderr):

* ``idle`` -- N stations connect (TLS 1.3 with their certificate, websocket upgrade
  through the handshake gate, one BootNotification) and stay connected. Result: the
  server process's resident memory growth per connection (VmRSS, KiB). Target <= 64 KiB.
* ``handshakes`` -- for ``--duration`` seconds, ``--concurrency`` clients connect and
  disconnect in a loop, in three alternating rounds against: `openssl s_server` with the
  same server certificate and station CA (TLS only: the baseline), `pkictl serve` (TLS
  only), and `pkictl serve` (TLS + websocket upgrade + admission, what a station does).
  Result: handshakes/s of each, and the ratios against the baseline. Target >= 0.5.
* ``messages`` -- ``--talkers`` stations send the mix (Heartbeat, StatusNotification,
  TransactionEvent, MeterValues), one message at a time each, in alternating rounds
  against a plain `ocpp` library server (bench/ocpp_baseline.py: the baseline) and
  `pkictl serve` (``--serve-workers N``: also N workers; ``--floor``: also a server
  that does nothing). The stations are this process, or bench/loadgen.mjs with
  ``--client node``, or bench/loadgen.c with ``--client c``. Result: messages/s, the
  ratios, and the CPU per message of the load generator and of each pkictl server.
  Target >= 2 (scaling >= 1.6).

Loopback only, bounded in time; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench import floor
from bench.plot import check_plot_target, line_chart
from csms.app import default_policy_text, initialize_home, open_app
from csms.home import HomeConfig

ORG = "Bench CPO"
PASSPHRASE = "bench-fleet-passphrase"  # noqa: S105 -- a throwaway CA in a temp dir
IDLE_TARGET_KIB = 64
HANDSHAKE_TARGET = 0.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Fleet:
    home: Path
    directory: Path
    identities: list[tuple[str, ssl.SSLContext]]  # station id, client context


def _csr(key: ec.EllipticCurvePrivateKey, serial: str) -> str:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, serial),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def build_fleet(directory: Path, stations: int) -> Fleet:
    home = directory / "ca"
    os.environ["PKICTL_PASSPHRASE"] = PASSPHRASE
    config = HomeConfig(ORG, "DE", ("localhost", "127.0.0.1"), "http://localhost:8080",
                        frozenset({"cso"}))  # fmt: skip
    await initialize_home(home, config, policy_text=default_policy_text(), policy_source="bench")
    identities = []
    async with open_app(home) as app:
        root = home / "certs" / "cso-root.pem"

        async def one(index: int) -> tuple[str, ssl.SSLContext]:
            station_id, serial = f"CS{index:05d}", f"SN{index:05d}"
            await app.stations.register(
                station_id, serial_number=serial, secc_id=None, security_profile=3,
                password=None, actor="bench",
            )  # fmt: skip
            key = ec.generate_private_key(ec.SECP256R1())
            issued = await app.ca.issue_for_station(
                csr_pem=_csr(key, serial), profile_name="charging-station",
                station_id=station_id, actor="bench",
            )  # fmt: skip
            chain = directory / f"{station_id}.pem"
            chain.write_bytes(
                b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain)
            )
            key_file = directory / f"{station_id}.key"
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            context = ssl.create_default_context(cafile=root)
            context.load_cert_chain(chain, key_file)
            return station_id, context

        for start in range(0, stations, 100):
            identities += await asyncio.gather(
                *(one(i) for i in range(start, min(start + 100, stations)))
            )
    return Fleet(home, directory, identities)


@contextlib.asynccontextmanager
async def pkictl_serve(
    fleet: Fleet, ports: dict[str, int] | None = None, workers: int = 1, *options: str
) -> Any:
    """`pkictl serve [--workers N] [OPTIONS]` on free loopback ports: (process, OCPP
    port); ``ports``, if given, gets both ports ("ocpp", "http")."""
    pkictl = Path(sys.executable).parent / "pkictl"
    process = await asyncio.create_subprocess_exec(
        str(pkictl), "--home", str(fleet.home), "serve", "--host", "127.0.0.1",
        "--ocpp-port", "0", "--http-port", "0", "--workers", str(workers), *options,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    ready = b"worker processes" if workers > 1 else b"pkictl serve: OCPP on"
    try:
        line = b""
        while ready not in line:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            if not line:
                raise RuntimeError("pkictl serve exited before listening")
        match = re.search(rb"wss://127\.0\.0\.1:(\d+)/.*http://127\.0\.0\.1:(\d+)/", line)
        assert match is not None
        if ports is not None:
            ports.update(ocpp=int(match.group(1)), http=int(match.group(2)))
        drain = asyncio.create_task(_drain(process.stderr))
        yield process, int(match.group(1))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
        with contextlib.suppress(NameError):
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its running descendants (`serve --workers`)
    have used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return own + sum(cpu_seconds(child) for child in children)


BOOT = json.dumps(
    [2, "b", "BootNotification",
     {"reason": "PowerUp", "chargingStation": {"model": "Bench", "vendorName": "pkictl"}}]
)  # fmt: skip


async def connect_and_boot(port: int, station_id: str, context: ssl.SSLContext) -> Any:
    connection = await websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/{station_id}",
        ssl=context,
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=30,
        ping_interval=None,
    )
    await connection.send(BOOT)
    reply = json.loads(await asyncio.wait_for(connection.recv(), 30))
    if reply[0] != 3 or reply[2]["status"] != "Accepted":
        raise RuntimeError(f"{station_id}: boot answered {reply}")
    return connection


async def idle(fleet: Fleet, plot: Path | None = None) -> dict[str, Any]:
    async with pkictl_serve(fleet) as (process, port):
        warm = [await connect_and_boot(port, s, c) for s, c in fleet.identities[:20]]
        for connection in warm:
            await connection.close()
        await asyncio.sleep(1)
        before = rss_kib(process.pid)
        connections = []
        curve = [(0, before)]
        started = time.perf_counter()
        for start in range(0, len(fleet.identities), 50):
            batch = fleet.identities[start : start + 50]
            connections += await asyncio.gather(*(connect_and_boot(port, s, c) for s, c in batch))
            curve.append((len(connections), rss_kib(process.pid)))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(2)
        after = rss_kib(process.pid)
        for connection in connections:
            await connection.close()
    per_connection = (after - before) / len(connections)
    if plot is not None:
        line_chart(
            plot, [n for n, _ in curve], [(kib - before) / 1024 for _, kib in curve],
            title="pkictl serve: memory of idle mutual-TLS stations",
            xlabel="stations connected (TLS 1.3, booted)", ylabel="server RSS growth (MiB)",
        )  # fmt: skip
    return {
        "bench": "fleet.idle",
        "stations": len(connections),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round(per_connection, 1),
        "target_kib": IDLE_TARGET_KIB,
        "pass": per_connection <= IDLE_TARGET_KIB,
        "connect_and_boot_per_s": round(len(connections) / elapsed, 1),
    }


async def tls_only(port: int, context: ssl.SSLContext) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


async def admitted(port: int, station_id: str, context: ssl.SSLContext) -> None:
    connection = await websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/{station_id}", ssl=context,
        subprotocols=["ocpp2.0.1"], open_timeout=30,  # type: ignore[list-item]
    )  # fmt: skip
    await connection.close()


async def rate(
    attempt: Callable[[int], Awaitable[None]], duration: float, concurrency: int
) -> float:
    deadline = time.perf_counter() + duration
    done = 0

    async def client(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            await attempt(index)
            done += 1
            index += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started)


def run_in_scratch(
    run: Callable[[argparse.Namespace, Path], Awaitable[dict[str, Any]]],
    args: argparse.Namespace, prefix: str,
) -> int:  # fmt: skip
    """Run a bench in a temporary directory removed afterwards; print its JSON line;
    exit 0 if it met its target."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = asyncio.run(run(args, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0 if result["pass"] else 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def openssl_server(fleet: Fleet) -> Any:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-quiet", "-naccept", "1000000",
        "-cert", str(fleet.home / "certs" / "csms-server-ec.pem"),
        "-key", str(fleet.home / "keys" / "csms-server-ec.key.pem"), "-pass", f"pass:{PASSPHRASE}",
        "-CAfile", str(fleet.home / "certs" / "cso-station-ca.pem"), "-Verify", "1",
        "-partial_chain", "-tls1_3",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("openssl s_server did not start")
        yield port
    finally:
        process.kill()
        await process.wait()


async def handshakes(
    fleet: Fleet, duration: float, concurrency: int, rounds: int
) -> dict[str, Any]:
    ids = fleet.identities

    def pick(index: int) -> tuple[str, ssl.SSLContext]:
        return ids[index % len(ids)]

    rates: dict[str, list[float]] = {"openssl": [], "pkictl_tls": [], "pkictl_admitted": []}
    async with pkictl_serve(fleet) as (_, port), openssl_server(fleet) as openssl_port:
        for round_ in range(rounds):
            rates["openssl"].append(
                await rate(lambda i: tls_only(openssl_port, pick(i)[1]), duration, concurrency)
            )
            rates["pkictl_tls"].append(
                await rate(lambda i: tls_only(port, pick(i)[1]), duration, concurrency)
            )
            rates["pkictl_admitted"].append(
                await rate(lambda i: admitted(port, *pick(i)), duration, concurrency)
            )
            log(
                f"round {round_ + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items())
            )
    tls_ratio = statistics.median(
        p / b for p, b in zip(rates["pkictl_tls"], rates["openssl"], strict=True)
    )
    admitted_ratio = statistics.median(
        p / b for p, b in zip(rates["pkictl_admitted"], rates["openssl"], strict=True)
    )
    return {
        "bench": "fleet.handshakes",
        "concurrency": concurrency,
        "duration_s": duration,
        "rounds": rounds,
        "per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "ratio_tls_only": round(tls_ratio, 3),
        "ratio_admitted": round(admitted_ratio, 3),
        "target": HANDSHAKE_TARGET,
        "pass": admitted_ratio >= HANDSHAKE_TARGET,
    }


MESSAGE_TARGET = 2.0
SCALING_TARGET = 1.6  # issue #7: 2 worker processes against 1 on a 2-core machine


def mix(station_id: str, n: int) -> str:
    """The n-th message of a station's steady mix: Heartbeat, StatusNotification,
    TransactionEvent (Updated, with a meter value), MeterValues."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    meter = [{"timestamp": at, "sampledValue": [{"value": 1000.0 + n}]}]
    kind = n % 4
    if kind == 0:
        return json.dumps([2, f"m{n}", "Heartbeat", {}])
    if kind == 1:
        payload: dict[str, Any] = {"timestamp": at, "connectorStatus": "Occupied",
                                   "evseId": 1, "connectorId": 1}  # fmt: skip
        return json.dumps([2, f"m{n}", "StatusNotification", payload])
    if kind == 2:
        payload = {"eventType": "Updated", "timestamp": at, "triggerReason": "MeterValuePeriodic",
                   "seqNo": n, "transactionInfo": {"transactionId": f"TX-{station_id}"},
                   "meterValue": meter}  # fmt: skip
        return json.dumps([2, f"m{n}", "TransactionEvent", payload])
    return json.dumps([2, f"m{n}", "MeterValues", {"evseId": 1, "meterValue": meter}])


@dataclass(frozen=True)
class RateSample:
    """One round against one server: messages answered in ``elapsed_s``, and the CPU
    seconds the load generator and (when known) the server used in that time, the
    connections' set-up excluded."""

    answered: int
    elapsed_s: float
    client_cpu_s: float
    server_cpu_s: float | None

    @property
    def per_s(self) -> float:
        return self.answered / self.elapsed_s


def _server_cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def message_rate(
    port: int,
    identities: Sequence[tuple[str, ssl.SSLContext]],
    duration: float,
    server_pid: int | None = None,
) -> RateSample:
    """The stations, connected and booted, send the mix until ``duration`` is up."""
    connections = await asyncio.gather(*(connect_and_boot(port, s, c) for s, c in identities))
    deadline = time.perf_counter() + duration
    answered = 0

    async def station(index: int) -> None:
        nonlocal answered
        station_id, connection = identities[index][0], connections[index]
        n = 0
        while time.perf_counter() < deadline:
            await connection.send(mix(station_id, n))
            reply = json.loads(await connection.recv())
            if reply[0] != 3:
                raise RuntimeError(f"{station_id}: {reply}")
            answered += 1
            n += 1

    server_before, client_before = _server_cpu(server_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(station(i) for i in range(len(connections))))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    server_cpu = _spent(server_before, _server_cpu(server_pid))
    for connection in connections:
        await connection.close()
    return RateSample(answered, elapsed, client_cpu, server_cpu)


LOADGENS = Path(__file__).parent


def build_c(name: str, directory: Path) -> Path:
    """bench/NAME.c (with bench/wsclient.h) compiled into ``directory``."""
    binary = directory / name
    compiler = shutil.which("cc") or "cc"
    built = subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(LOADGENS / f"{name}.c"), "-lssl", "-lcrypto"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"bench/{name}.c did not compile: {built.stderr.strip()}")
    return binary


def c_client_missing() -> str | None:
    """Why ``--client c`` cannot run here, or None."""
    if shutil.which("cc") and Path("/usr/include/openssl/ssl.h").exists():
        return None
    return "--client c needs a C compiler (cc) and OpenSSL 3 headers (libssl-dev)"


async def external_message_rate(  # noqa: PLR0917 -- one round's knobs
    client: str, port: int, fleet: Fleet, stations: int, duration: float,
    server_pid: int | None = None,
) -> RateSample:  # fmt: skip
    """`message_rate` by bench/loadgen.mjs (``client`` "node") or the compiled
    bench/loadgen.c ("c"): the same stations and mix, at about half (Node.js) or a
    fraction (C) of the Python client's CPU per message."""
    identities = [
        (station_id, str(fleet.directory / f"{station_id}.pem"),
         str(fleet.directory / f"{station_id}.key"))
        for station_id, _ in fleet.identities[:stations]
    ]  # fmt: skip
    root = str(fleet.home / "certs" / "cso-root.pem")
    config = fleet.directory / f"loadgen-{client}.conf"
    if client == "node":
        config.write_text(json.dumps(
            {"port": port, "duration_s": duration, "stations": identities, "root": root}
        ))  # fmt: skip
        command = ["node", str(LOADGENS / "loadgen.mjs"), str(config)]
    else:
        lines = [f"{port} {duration} {root}", *(" ".join(i) for i in identities)]
        config.write_text("\n".join(lines) + "\n")
        command = [str(fleet.directory / "loadgen"), str(config)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        started = await asyncio.wait_for(process.stdout.readline(), 120)  # all booted
        server_before = _server_cpu(server_pid) if started.strip() == b"started" else None
        out = await asyncio.wait_for(process.stdout.readline(), duration + 60)
        server_cpu = _spent(server_before, _server_cpu(server_pid))
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the {client} load generator failed: {err.decode().strip()}")
    result = json.loads(out)
    return RateSample(
        int(result["answered"]), float(result["elapsed_s"]), float(result["cpu_s"]), server_cpu
    )


@contextlib.asynccontextmanager
async def baseline_server(fleet: Fleet) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ocpp_baseline",
        "--cert", str(fleet.home / "certs" / "csms-server-ec.pem"),
        "--key", str(fleet.home / "keys" / "csms-server-ec.key.pem"), "--passphrase", PASSPHRASE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 20)
        match = re.search(rb"listening on (\d+)", line)
        if match is None:
            raise RuntimeError(f"baseline server said {line!r}")
        yield int(match.group(1))
    finally:
        process.kill()
        await process.wait()


async def messages(  # noqa: PLR0917 -- the scenario's knobs
    fleet: Fleet,
    duration: float,
    stations: int,
    rounds: int,
    workers: int = 1,
    with_floor: bool = False,
    client: str = "python",
) -> dict[str, Any]:
    """The message mix against the plain `ocpp` server; with ``workers`` > 1, also
    against `pkictl serve --workers N` in the same rounds (the scaling ratio); with
    ``with_floor``, also against a server that answers without doing anything. The
    ``client`` is this process (python), bench/loadgen.mjs (node) or bench/loadgen.c
    (c)."""
    identities = fleet.identities[:stations]
    if client == "c":
        build_c("loadgen", fleet.directory)
    rates: dict[str, list[float]] = {"ocpp_baseline": [], "pkictl": []}
    scaled = f"pkictl_{workers}_workers"
    servers: dict[str, int] = {}  # name: pid, for the CPU they use
    async with contextlib.AsyncExitStack() as running:
        serving, port = await running.enter_async_context(pkictl_serve(fleet))
        servers["pkictl"] = serving.pid
        baseline_port = await running.enter_async_context(baseline_server(fleet))
        ports = {"ocpp_baseline": baseline_port, "pkictl": port}
        if workers > 1:
            serving, ports[scaled] = await running.enter_async_context(
                pkictl_serve(fleet, None, workers)
            )
            servers[scaled] = serving.pid
            rates[scaled] = []
        if with_floor:
            process, ports["floor"] = await floor.start(
                "ws", str(fleet.home / "certs" / "csms-server-ec.pem"),
                str(fleet.home / "keys" / "csms-server-ec.key.pem"), PASSPHRASE,
            )  # fmt: skip
            running.callback(process.kill)
            rates["floor"] = []
        samples: dict[str, list[RateSample]] = {name: [] for name in rates}
        for round_ in range(rounds):
            for name, rate in rates.items():
                if client != "python":
                    sample = await external_message_rate(
                        client, ports[name], fleet, stations, duration, servers.get(name)
                    )
                else:
                    sample = await message_rate(
                        ports[name], identities, duration, servers.get(name)
                    )
                samples[name].append(sample)
                rate.append(sample.per_s)
            log(
                f"round {round_ + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items())
            )
    ratio = _paired(rates["pkictl"], rates["ocpp_baseline"])
    result = {
        "bench": "fleet.messages",
        "client": client,
        "stations": len(identities),
        "duration_s": duration,
        "rounds": rounds,
        "per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "ratio": ratio,
        "target": MESSAGE_TARGET,
        "pass": ratio >= MESSAGE_TARGET,
    }
    result["cpu_us_per_message"] = {
        name: _cpu_per_message(taken) for name, taken in samples.items()
    }
    if with_floor:
        result["ratio_floor"] = _paired(rates["floor"], rates["ocpp_baseline"])
    if workers > 1:
        one_worker = result["cpu_us_per_message"]["pkictl"]
        server, generator = one_worker["server"], one_worker["client"]
        result["scaling"] = {
            "workers": workers,
            "ratio_to_1_worker": _paired(rates[scaled], rates["pkictl"]),
            "ratio_to_baseline": _paired(rates[scaled], rates["ocpp_baseline"]),
            "target": SCALING_TARGET,
            # N workers and the load generator share the cores: at best
            # cores / (server + generator CPU per message) against 1 / server
            "most_on_these_cores": round(min(workers, CORES * server / (server + generator)), 3),
        }
    return result


CORES = len(os.sched_getaffinity(0))


def _cpu_per_message(samples: list[RateSample]) -> dict[str, int]:
    """Microseconds of CPU per answered message: the load generator's and the server's."""
    answered = sum(s.answered for s in samples)
    taken = {"client": sum(s.client_cpu_s for s in samples)}
    if all(s.server_cpu_s is not None for s in samples):
        taken["server"] = sum(s.server_cpu_s or 0.0 for s in samples)
    return {who: round(1e6 * seconds / answered) for who, seconds in taken.items()}


def _paired(ours: list[float], theirs: list[float]) -> float:
    return round(statistics.median(o / t for o, t in zip(ours, theirs, strict=True)), 3)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description="Memory per idle mutual-TLS station and handshake rates of pkictl serve "
        "beside openssl s_server, on loopback; one JSON line per result.",
    )
    parser.add_argument("--stations", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument(
        "--scenario", choices=("idle", "handshakes", "messages", "all"), default="all"
    )
    parser.add_argument(
        "--talkers", type=int, default=50, help="stations sending the message mix (default 50)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rate rounds")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the rate rounds")
    parser.add_argument("--plot", type=Path, help="idle: write a PNG of memory vs connections")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="messages: also measure a server that answers without doing anything "
        "(bench.floor), the most any server can show with this client here",
    )
    parser.add_argument(
        "--serve-workers", type=int, default=1,
        help="messages: also measure `pkictl serve --workers N` in the same rounds (N > 1)",
    )  # fmt: skip
    parser.add_argument(
        "--client", choices=("python", "node", "c"), default="python",
        help="messages: the load generator: this process, bench/loadgen.mjs (Node.js) or "
        "bench/loadgen.c (compiled with cc and OpenSSL 3); the cheaper it is per message, "
        "the more of the cores the servers get",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.client == "node" and shutil.which("node") is None:
        parser.error("--client node needs Node.js (node) on the PATH")
    if args.client == "c" and (missing := c_client_missing()):
        parser.error(missing)
    if args.stations < 1 or args.duration <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--stations, --duration, --rounds and --concurrency must be positive")
    check_plot_target("--plot", args.plot)
    return args


async def run(args: argparse.Namespace, directory: Path) -> list[dict[str, Any]]:
    log(f"setup: {args.stations} stations with certificates in {directory}")
    fleet = await build_fleet(directory, args.stations)
    results = []
    if args.scenario in ("idle", "all"):
        results.append(await idle(fleet, args.plot))
        print(json.dumps(results[-1]), flush=True)
    if args.scenario in ("handshakes", "all"):
        results.append(await handshakes(fleet, args.duration, args.concurrency, args.rounds))
        print(json.dumps(results[-1]), flush=True)
    if args.scenario in ("messages", "all"):
        results.append(await messages(fleet, args.duration, args.talkers, args.rounds,
                                      args.serve_workers, args.floor, args.client))  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="pkictl-fleet-"))
    try:
        results = asyncio.run(run(args, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
