"""Renewal campaign over OCPP: N connected mutual-TLS stations all renewed at once.

Setup (not timed): a temporary pkictl home, N registered stations with a certificate
each (real keys, real CSRs), `pkictl serve` as a subprocess on 127.0.0.1, and the
simulated stations in ``--workers`` client processes, all connected: Python (the
`ocpp` library's ChargePoint) or, with ``--client c``, bench/renewsim.c (OpenSSL, one
epoll loop) at a fraction of the CPU per renewal, so that the servers get the cores.

The campaign (timed): `pkictl renew STATION...` for all of them, as an operator would.
Each station gets TriggerMessage(SignChargingStationCertificate), makes a new P-256 key,
sends its CSR, receives CertificateSigned, checks the chain fits its key, and reconnects
with the new certificate -- which confirms the renewal. Result (one JSON line): seconds
from the `renew` command to the last reconnection, stations/s, the server's CPU seconds
per renewal, and (untimed, after) whether the database shows every renewal confirmed
exactly once; and, per station, how long after its SignCertificate was answered the
CertificateSigned arrived (p50/p99/max; at most 5 s asked). Target: 10,000 stations in
<= 180 s on a 2-core machine.

With ``--rounds R --serve-workers N``: the campaign with 1 and with N workers in R
alternating rounds from the same starting state, and one JSON line with the scaling
ratio (median of the rounds' ratios; target >= 1.6, issue #7).

Loopback only, bounded in time (``--timeout``); everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from bench.fleet import (
    ORG,
    SCALING_TARGET,
    Fleet,
    _csr,
    _paired,
    build_c,
    build_fleet,
    c_client_missing,
    cpu_seconds,
    log,
    pkictl_serve,
    run_in_scratch,
)
from bench.plot import check_plot_target, line_chart
from csms.app import open_app

TARGET_S_PER_10K = 180.0
DELIVERY_TARGET_S = 5.0  # CertificateSigned after the SignCertificate answer (issue #4)
CONNECT_CONCURRENCY = 32


class BenchStation(ChargePoint):  # type: ignore[misc]
    def __init__(self, station_id: str, connection: Any, serial: str) -> None:
        super().__init__(station_id, connection)
        self.serial = serial
        self.key: ec.EllipticCurvePrivateKey | None = None
        self.chain: str | None = None
        self.installed = asyncio.Event()
        self.pending: set[asyncio.Task[Any]] = set()
        self.sign_answered = self.delivered = 0.0

    @on(Action.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        task = asyncio.get_running_loop().create_task(self.sign())
        self.pending.add(task)  # after our answer has gone out
        return call_result.TriggerMessage(status="Accepted")

    async def sign(self) -> None:
        await asyncio.sleep(0)
        self.key = ec.generate_private_key(ec.SECP256R1())
        answer = await self.call(
            call.SignCertificate(csr=_csr(self.key, self.serial),
                                 certificate_type="ChargingStationCertificate")
        )  # fmt: skip
        if answer.status != "Accepted":
            raise RuntimeError(f"{self.id}: SignCertificate answered {answer}")
        self.sign_answered = time.monotonic()

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        leaf = x509.load_pem_x509_certificates(certificate_chain.encode())[0]
        assert self.key is not None
        if leaf.public_key() != self.key.public_key():
            return call_result.CertificateSigned(status="Rejected")
        self.chain = certificate_chain
        self.delivered = time.monotonic()
        if not self.sign_answered:  # here before this client handled the answer: no wait
            self.sign_answered = self.delivered
        return call_result.CertificateSigned(status="Accepted")

    @after(Action.certificate_signed)
    async def after_certificate_signed(self, **_: Any) -> None:
        """Reconnect only once the answer has gone out, as a station does: hanging up
        before it (the library validates it in a thread first) left the CSMS without the
        answer, so it sent the certificate again on the next connection."""
        if self.chain is not None:
            self.installed.set()


def _context(root: Path, chain: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=root)
    context.load_cert_chain(chain, key)
    return context


async def _connect(port: int, station_id: str, context: ssl.SSLContext) -> Any:
    return await websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/{station_id}", ssl=context,
        subprotocols=["ocpp2.0.1"], open_timeout=120, ping_interval=None,  # type: ignore[list-item]
    )  # fmt: skip


async def _reconnect(
    port: int, station_id: str, context: ssl.SSLContext, gate: asyncio.Semaphore
) -> Any:
    """Connect again as a station does: a refused or dropped attempt is retried after a
    pause (1, 2, 4 ... s), counted in RETRIES."""
    pause = 1.0
    while True:
        try:
            async with gate:
                return await _connect(port, station_id, context)
        except (OSError, websockets.exceptions.InvalidHandshake, TimeoutError):
            RETRIES.append(station_id)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)


RETRIES: list[str] = []


@dataclass(frozen=True)
class WorkerJob:
    port: int
    directory: Path
    stations: list[str]
    timeout_s: float
    client: str = "python"


async def _worker(job: WorkerJob) -> None:
    """One client process: connects its stations, prints `ready N`, then renews them as
    the CSMS asks and prints `done` with each confirmation time (JSON)."""
    root = job.directory / "ca" / "certs" / "cso-root.pem"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(station_id: str) -> tuple[BenchStation, Any, asyncio.Task[Any]]:
        chain, key = job.directory / f"{station_id}.pem", job.directory / f"{station_id}.key"
        async with gate:
            connection = await _connect(job.port, station_id, _context(root, chain, key))
        client = BenchStation(station_id, connection, "SN" + station_id[2:])
        return client, connection, asyncio.create_task(client.start())

    connected = await asyncio.gather(*(connect(s) for s in job.stations))
    print(json.dumps({"ready": len(connected)}), flush=True)

    async def renew(
        client: BenchStation, connection: Any, listener: asyncio.Task[Any]
    ) -> tuple[float, float]:
        await asyncio.wait_for(client.installed.wait(), job.timeout_s)
        await connection.close()
        listener.cancel()
        assert client.chain is not None
        assert client.key is not None
        chain = job.directory / f"{client.id}.new.pem"
        key = job.directory / f"{client.id}.new.key"
        chain.write_text(client.chain)
        key.write_bytes(client.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
        again = await _reconnect(job.port, client.id, _context(root, chain, key), gate)
        at = time.time()  # admitted with the new certificate: the renewal is confirmed
        await again.close()
        return at, max(0.0, client.delivered - client.sign_answered)

    confirmed = await asyncio.gather(*(renew(*c) for c in connected))
    print(json.dumps({"done": confirmed, "cpu_s": time.process_time(), "retries": len(RETRIES)}),
          flush=True)  # fmt: skip


async def _start_worker(job: WorkerJob) -> asyncio.subprocess.Process:
    """A client process for the job's stations; each says `ready` and `done` (JSON)."""
    if job.client == "c":
        config = job.directory / f"renewsim-{job.stations[0]}.conf"
        root = job.directory / "ca" / "certs" / "cso-root.pem"
        config.write_text("\n".join([
            f"{job.port} {job.timeout_s} {root}", ORG,
            *(f"{s} {job.directory / f'{s}.pem'} {job.directory / f'{s}.key'} SN{s[2:]}"
              for s in job.stations),
        ]) + "\n")  # fmt: skip
        command: tuple[str, ...] = (str(job.directory / "renewsim"), str(config))
    else:
        stations = job.directory / f"worker-{job.stations[0]}.json"
        stations.write_text(json.dumps(job.stations))
        command = (sys.executable, "-m", "bench.renewal", "--worker", str(job.port),
                   str(stations), str(job.timeout_s))  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,  # the "done" line carries every station's timings
    )  # fmt: skip


async def _line(worker: asyncio.subprocess.Process, key: str, timeout_s: float) -> Any:
    return (await _message(worker, key, timeout_s))[key]


async def _message(worker: asyncio.subprocess.Process, key: str, timeout_s: float) -> Any:
    assert worker.stdout is not None
    line = await asyncio.wait_for(worker.stdout.readline(), timeout_s)
    if not line:
        raise RuntimeError(f"a client worker exited before {key!r}")
    return json.loads(line)


async def _renew_all(home: Path, station_ids: list[str]) -> None:
    pkictl = Path(sys.executable).parent / "pkictl"
    process = await asyncio.create_subprocess_exec(
        str(pkictl), "--home", str(home), "renew", *station_ids,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await process.wait() != 0:
        raise RuntimeError("pkictl renew failed")


def _steady_rate(confirmed_at: Sequence[float]) -> float:
    """Renewals confirmed per second between the 10th and the 90th percentile of the
    confirmations: the campaign's pace without its start (the `renew` command, the
    first wake-up) and its tail."""
    ordered = sorted(confirmed_at)
    first, last = len(ordered) // 10, len(ordered) * 9 // 10
    span = ordered[last] - ordered[first] if last > first else 0.0
    return round((last - first) / span, 1) if span > 0 else 0.0


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "p50": round(ordered[len(ordered) // 2], 3),
        "p99": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)], 3),
        "max": round(ordered[-1], 3),
    }


def _deciles(values: Sequence[float]) -> dict[str, float]:
    """When the first, the 10th ... 90th percentile and the last station were done: the
    start (the `renew` command, the first wake-up) and the tail beside the steady part."""
    ordered, n = sorted(values), len(values)
    marks = {"first": 0, "p10": n // 10, "p50": n // 2, "p90": n * 9 // 10,
             "p99": n * 99 // 100, "last": n - 1}  # fmt: skip
    return {name: round(ordered[i], 2) for name, i in marks.items()}


async def _server_delivery(home: Path, stations: int) -> list[tuple[float, float]]:
    """Per CertificateSigned, when it was queued (before the SignCertificate answer goes
    out; epoch seconds) and the seconds until it was sent, as the server recorded them:
    the outbox's share of the client-side figure, without the simulator's queueing."""
    async with open_app(home) as app:
        items = await app.outbox.list(None, limit=stations * 4)
    return [
        (item.created_at.timestamp(), (item.sent_at - item.created_at).total_seconds())
        for item in items
        if item.action == "CertificateSigned" and item.sent_at is not None
    ]


async def _confirmed_once(home: Path, stations: int) -> bool:
    async with open_app(home) as app:
        renewals = await app.renewals.list(limit=stations * 2)
    by_station: dict[str, list[str]] = {}
    for renewal in renewals:
        by_station.setdefault(renewal.station_id, []).append(renewal.state.value)
    wrong = {s: v for s, v in by_station.items() if v != ["confirmed"]}
    if wrong or len(by_station) != stations:
        log(f"not confirmed exactly once: {len(by_station)} stations renewed; {wrong}")
    return len(by_station) == stations and not wrong


async def campaign(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    log(f"setup: {args.stations} stations with certificates in {directory}")
    fleet = await build_fleet(directory, args.stations)
    config = fleet.home / "pkictl.toml"
    config.write_text(
        config.read_text().replace("[renewal]\n", f"[renewal]\nmax_in_flight = {args.in_flight}\n")
    )
    if args.client == "c":
        build_c("renewsim", directory)
    if args.rounds:
        return await scaling(args, fleet)
    return await one_campaign(args, fleet, args.serve_workers)


async def scaling(args: argparse.Namespace, fleet: Fleet) -> dict[str, Any]:
    """The same campaign with 1 and with ``--serve-workers`` N pkictl workers, in
    alternating rounds, each from the same starting state (the home copied back: its
    SQLite database and CA), so that both see the same machine hour."""
    pristine = fleet.directory / "home-before-the-campaign"
    shutil.copytree(fleet.home, pristine)
    counts = (1, args.serve_workers)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for round_ in range(args.rounds):
        for serve_workers in counts:
            shutil.rmtree(fleet.home)
            shutil.copytree(pristine, fleet.home)
            runs[serve_workers].append(await one_campaign(args, fleet, serve_workers))
        log(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{n} worker(s) {runs[n][-1]['seconds']} s" for n in counts
        ))  # fmt: skip
    # the speed-up: a round's time with 1 worker over its time with N
    ratio = _paired([r["seconds"] for r in runs[1]], [r["seconds"] for r in runs[counts[1]]])
    exactly_once = all(r["confirmed_exactly_once"] for n in counts for r in runs[n])
    return {
        "bench": "renewal.scaling",
        "stations": args.stations,
        "client": args.client,
        "signing_process": args.signing_process,
        "rounds": args.rounds,
        "seconds": {f"{n}_workers": [r["seconds"] for r in runs[n]] for n in counts},
        "server_cpu_ms_per_renewal": {
            f"{n}_workers": [r["server_cpu_ms_per_renewal"] for r in runs[n]] for n in counts
        },
        "simulator_cpu_ms_per_renewal": [
            r["simulator_cpu_ms_per_renewal"] for n in counts for r in runs[n]
        ],
        "steady_per_s": {f"{n}_workers": [r["steady_per_s"] for r in runs[n]] for n in counts},
        "steady_ratio": _paired(
            [r["steady_per_s"] for r in runs[counts[1]]], [r["steady_per_s"] for r in runs[1]]
        ),
        "renew_command_s": [r["renew_command_s"] for n in counts for r in runs[n]],
        "confirmed_exactly_once": exactly_once,
        "ratio_to_1_worker": ratio,
        "target": SCALING_TARGET,
        "pass": exactly_once and ratio >= SCALING_TARGET,
    }


async def one_campaign(
    args: argparse.Namespace, fleet: Fleet, serve_workers: int
) -> dict[str, Any]:
    """`pkictl renew` of every station, under `pkictl serve --workers serve_workers`."""
    directory = fleet.directory
    station_ids = [s for s, _ in fleet.identities]
    serve_options = ("--signing-process", args.signing_process)
    async with pkictl_serve(fleet, None, serve_workers, *serve_options) as (process, port):
        workers = [
            await _start_worker(WorkerJob(port, directory, station_ids[w :: args.workers],
                                          args.timeout, args.client))
            for w in range(args.workers)
        ]  # fmt: skip
        connected = sum([await _line(w, "ready", args.timeout) for w in workers])
        log(f"{connected} stations connected; campaign starts")
        cpu_before = cpu_seconds(process.pid)
        clients_before = sum(cpu_seconds(w.pid) for w in workers)
        started = time.time()
        await _renew_all(fleet.home, station_ids)
        command_s = time.time() - started
        results: list[tuple[float, float]] = []
        clients_after = 0.0  # each worker says its own: it may be gone once it has
        retries = 0
        for worker in workers:
            done = await _message(worker, "done", args.timeout)
            results += done["done"]
            clients_after += done["cpu_s"]
            retries += done["retries"]
        elapsed = max(at for at, _ in results) - started
        delivery = [seconds for _, seconds in results]
        cpu = cpu_seconds(process.pid) - cpu_before
        clients_cpu = clients_after - clients_before
        for worker in workers:
            await asyncio.wait_for(worker.wait(), 30)
    exactly_once = await _confirmed_once(fleet.home, args.stations)
    server_delivery = await _server_delivery(fleet.home, args.stations)
    projected = elapsed * 10_000 / args.stations
    if args.plot:
        confirmed = sorted(at - started for at, _ in results)
        line_chart(
            args.plot, confirmed, range(1, len(confirmed) + 1),
            title=f"Renewal campaign: {args.stations} mTLS stations, one 2-core machine",
            xlabel="seconds since `pkictl renew`", ylabel="stations confirmed",
        )  # fmt: skip
    return {
        "bench": "renewal.campaign",
        "stations": args.stations,
        "client": args.client,
        "client_workers": args.workers,
        "serve_workers": serve_workers,
        "signing_process": args.signing_process,
        "max_in_flight": args.in_flight,
        "database": "postgresql" if args.db else "sqlite",
        "seconds": round(elapsed, 2),
        "renew_command_s": round(command_s, 2),
        "first_confirmed_s": round(min(at for at, _ in results) - started, 2),
        "confirmed_by_s": _deciles([at - started for at, _ in results]),
        "steady_per_s": _steady_rate([at for at, _ in results]),
        "reconnection_retries": retries,
        "stations_per_s": round(args.stations / elapsed, 1),
        "server_cpu_ms_per_renewal": round(cpu * 1000 / args.stations, 2),
        "simulator_cpu_ms_per_renewal": round(clients_cpu * 1000 / args.stations, 2),
        "certificate_signed_after_s": {**_percentiles(delivery), "target_max": DELIVERY_TARGET_S},
        "certificate_signed_queued_to_sent_s": {
            "all": _percentiles([s for _, s in server_delivery]),
            "while_renew_command_ran": _percentiles(
                [s for at, s in server_delivery if at <= started + command_s]
            ),
            "after": _percentiles([s for at, s in server_delivery if at > started + command_s]),
        },
        "confirmed_exactly_once": exactly_once,
        "projected_s_per_10k": round(projected, 1),
        "target_s_per_10k": TARGET_S_PER_10K,
        "pass": exactly_once and projected <= TARGET_S_PER_10K,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.renewal", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--client", choices=("python", "c"), default="python",
        help="the station simulator: Python, or bench/renewsim.c (compiled with cc and "
        "OpenSSL 3; up to 4,096 stations per --workers process)",
    )  # fmt: skip
    parser.add_argument(
        "--serve-workers", type=int, default=1, help="pkictl serve --workers N (default 1)"
    )
    parser.add_argument(
        "--signing-process",
        choices=("auto", "on", "off"),
        default="auto",
        help="pkictl serve --signing-process (default auto: on with a core to spare)",
    )
    parser.add_argument(
        "--in-flight", type=int, default=300,
        help="[renewal] max_in_flight: renewals of connected stations under way at once; "
        "the rest wait their turn (default 300: CertificateSigned within 5 s at p99)",
    )  # fmt: skip
    parser.add_argument(
        "--db", metavar="URL",
        help="database (default: SQLite in the scratch home); a postgresql+asyncpg:// URL "
        "must name an empty, throwaway database",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=0,
        help="with --serve-workers N > 1: the scaling ratio, N workers against 1, over this "
        "many rounds alternating 1 and N from the same starting state (SQLite only)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600, help="seconds, per phase")
    parser.add_argument("--plot", type=Path, help="write a PNG of stations confirmed over time")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # PORT FILE TIMEOUT
    args = parser.parse_args(argv)
    if args.stations < 1 or args.workers < 1 or args.timeout <= 0:
        parser.error("--stations, --workers and --timeout must be positive")
    if args.rounds and (args.rounds < 0 or args.serve_workers < 2 or args.db or args.plot):
        parser.error("--rounds needs --serve-workers N > 1 and SQLite (no --db), without --plot")
    if args.client == "c" and (missing := c_client_missing()):
        parser.error(missing)
    if args.client == "c" and args.stations > 4096 * args.workers:
        parser.error("--client c drives up to 4,096 stations per --workers process")
    check_plot_target("--plot", args.plot)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        port, stations, timeout_s = args.worker
        job = WorkerJob(int(port), Path(stations).parent, json.loads(Path(stations).read_text()),
                        float(timeout_s))  # fmt: skip
        asyncio.run(_worker(job))
        return 0
    if args.db:  # every process of the bench (CLI, serve, its workers) opens it
        os.environ["PKICTL_DATABASE_URL"] = args.db
    return run_in_scratch(campaign, args, "pkictl-renewal-")


if __name__ == "__main__":
    sys.exit(main())
