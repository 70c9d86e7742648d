"""OCSP responder throughput: cached responses/s of `pkictl serve`'s /ocsp beside
`openssl ocsp` answering for the same CA with the same delegated signer, in one run.

Setup (not timed): a temporary pkictl home (CSO hierarchy), N station certificates
(real keys, real CSRs), `pkictl serve` as a subprocess, and `openssl ocsp -index` over
the same certificates with the station CA's OCSP signer (its key decrypted into the
temporary directory, 0600, removed at the end). Requests are built once: SHA-1 CertIDs,
no nonce (what can be answered from cache). A pass over every certificate first lets
our responder sign and keep each response: the rounds measure the cached path.

Rounds (timed, alternating, ``--duration`` s each): ``--concurrency`` clients POST
requests, one per connection -- how `openssl ocsp` serves, and most OCSP clients ask --
and check each answer is an HTTP 200 carrying an OCSP response. Ours is also measured
with keep-alive (several requests per connection), reported beside. Result: one JSON
line with responses/s of each and the median ratio. Target: >= 2x openssl.

Loopback only, bounded in time; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from bench import floor
from bench.fleet import (
    PASSPHRASE,
    Fleet,
    build_fleet,
    cpu_seconds,
    free_port,
    log,
    pkictl_serve,
    run_in_scratch,
)

TARGET = 2.0
KEEP_ALIVE_REQUESTS = 50


def _requests(fleet: Fleet) -> list[bytes]:
    issuer = x509.load_pem_x509_certificate(
        (fleet.home / "certs" / "cso-station-ca.pem").read_bytes()
    )
    built = []
    for station_id, _ in fleet.identities:
        leaf = x509.load_pem_x509_certificates(
            (fleet.directory / f"{station_id}.pem").read_bytes()
        )[0]
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()  # noqa: S303 -- what clients send
        built.append(request.public_bytes(serialization.Encoding.DER))
    return built


def _index(fleet: Fleet) -> Path:
    lines = []
    for station_id, _ in fleet.identities:
        leaf = x509.load_pem_x509_certificates(
            (fleet.directory / f"{station_id}.pem").read_bytes()
        )[0]
        serial = format(leaf.serial_number, "X")
        expires = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        lines.append(f"V\t{expires}\t\t{serial}\tunknown\t/CN={serial}")
    path = fleet.directory / "index.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def openssl_responder(fleet: Fleet) -> Any:
    certs, keys = fleet.home / "certs", fleet.home / "keys"
    port = free_port()
    log_file = fleet.directory / "openssl-ocsp.log"
    with log_file.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            "openssl", "ocsp", "-index", str(_index(fleet)), "-port", str(port),
            "-rsigner", str(certs / "cso-station-ca-ocsp.pem"),
            "-rkey", str(keys / "cso-station-ca-ocsp.key.pem"), "-passin", f"pass:{PASSPHRASE}",
            "-CA", str(certs / "cso-station-ca.pem"), "-nmin", "60", "-ignore_err",
            stdout=asyncio.subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
    try:
        for _ in range(200):  # its banner; a probe connection would hold it up
            if b"waiting for OCSP client connections" in log_file.read_bytes():
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"openssl ocsp did not start: {log_file.read_text()}")
        yield process.pid, port
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, keep_alive: bool
) -> None:
    writer.write(
        b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
        + f"Content-Length: {len(request)}\r\n".encode()
        + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n" + request
    )  # fmt: skip
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"responder answered {head[:64]!r}")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    body = await reader.readexactly(length)
    if body[:1] != b"\x30":  # a DER SEQUENCE: an OCSPResponse
        raise RuntimeError("not an OCSP response")


async def _rate(one: Callable[[int], Awaitable[int]], duration: float, concurrency: int) -> float:
    deadline = time.perf_counter() + duration
    done = 0

    async def client(seed: int) -> None:
        nonlocal done
        index = seed
        while time.perf_counter() < deadline:
            done += await one(index)
            index += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started)


def _per_connection(port: int, requests: list[bytes]) -> Callable[[int], Awaitable[int]]:
    async def one(index: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _exchange(reader, writer, requests[index % len(requests)], keep_alive=False)
        finally:
            writer.close()
        return 1

    return one


def _keep_alive(port: int, requests: list[bytes]) -> Callable[[int], Awaitable[int]]:
    async def many(index: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(KEEP_ALIVE_REQUESTS):
                await _exchange(reader, writer, requests[(index + n) % len(requests)], True)
        finally:
            writer.close()
        return KEEP_ALIVE_REQUESTS

    return many


@dataclass
class Side:
    """One responder's rounds: responses/s, and responses per second of its own CPU."""

    pid: int
    rates: list[float] = field(default_factory=list)
    per_cpu_s: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)

    async def round(self, one: Callable[[int], Awaitable[int]], args: argparse.Namespace) -> None:
        cpu, started = cpu_seconds(self.pid), time.perf_counter()
        rate = await _rate(one, args.duration, args.concurrency)
        elapsed, used = time.perf_counter() - started, cpu_seconds(self.pid) - cpu
        self.rates.append(rate)
        self.per_cpu_s.append(rate * elapsed / max(used, 1e-9))
        self.busy.append(used / elapsed)

    def report(self) -> dict[str, list[float]]:
        return {"per_s": [round(r, 1) for r in self.rates],
                "per_cpu_s": [round(r, 1) for r in self.per_cpu_s],
                "server_cpu_share": [round(b, 2) for b in self.busy]}  # fmt: skip


def _median_ratio(ours: list[float], theirs: list[float]) -> float:
    return round(statistics.median(o / t for o, t in zip(ours, theirs, strict=True)), 3)


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    log(f"setup: {args.certificates} station certificates in {directory}")
    fleet = await build_fleet(directory, args.certificates)
    requests = _requests(fleet)
    ports: dict[str, int] = {}
    async with (
        pkictl_serve(fleet, ports) as (server, _),
        openssl_responder(fleet) as (openssl_pid, openssl_port),
    ):
        warm = _per_connection(ports["http"], requests)
        for index in range(len(requests)):  # each response signed once and kept
            await warm(index)
        openssl, ours, ours_kept_alive = Side(openssl_pid), Side(server.pid), Side(server.pid)
        floor_process, floor_port = await floor.start("http") if args.floor else (None, 0)
        floor_side = Side(floor_process.pid) if floor_process else None
        for round_ in range(args.rounds):
            await openssl.round(_per_connection(openssl_port, requests), args)
            await ours.round(_per_connection(ports["http"], requests), args)
            await ours_kept_alive.round(_keep_alive(ports["http"], requests), args)
            if floor_side is not None:
                await floor_side.round(_per_connection(floor_port, requests), args)
            log(f"round {round_ + 1}/{args.rounds}: openssl {openssl.rates[-1]:.0f}/s "
                f"({openssl.busy[-1]:.0%} CPU), pkictl {ours.rates[-1]:.0f}/s "
                f"({ours.busy[-1]:.0%}), keep-alive {ours_kept_alive.rates[-1]:.0f}/s "
                f"({ours_kept_alive.busy[-1]:.0%})")  # fmt: skip
        if floor_process is not None:
            floor_process.kill()
            await floor_process.wait()
    ratio = _median_ratio(ours.rates, openssl.rates)
    floor_report = {} if floor_side is None else {
        "floor": floor_side.report(),
        "ratio_floor": _median_ratio(floor_side.rates, openssl.rates),
        "ratio_floor_per_cpu_s": _median_ratio(floor_side.per_cpu_s, openssl.per_cpu_s),
    }  # fmt: skip
    return {
        **floor_report,
        "bench": "ocsp.cached", "certificates": args.certificates,
        "concurrency": args.concurrency, "duration_s": args.duration, "rounds": args.rounds,
        "openssl": openssl.report(), "pkictl": ours.report(),
        "pkictl_keep_alive": ours_kept_alive.report(),
        "ratio": ratio, "ratio_keep_alive": _median_ratio(ours_kept_alive.rates, openssl.rates),
        "ratio_per_cpu_s": _median_ratio(ours.per_cpu_s, openssl.per_cpu_s),
        "ratio_keep_alive_per_cpu_s": _median_ratio(ours_kept_alive.per_cpu_s,
                                                    openssl.per_cpu_s),
        "target": TARGET, "pass": ratio >= TARGET,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ocsp",
        description="Cached OCSP responses/s of pkictl serve beside openssl ocsp as the "
        "responder for the same CA, on loopback; one JSON line.",
    )
    parser.add_argument("--certificates", type=int, default=200, help="certificates asked about")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure a do-nothing responder in the same rounds (bench.floor): the "
        "most any Python responder can show against openssl with this client here",
    )
    args = parser.parse_args(argv)
    if min(args.certificates, args.rounds, args.concurrency) < 1 or args.duration <= 0:
        parser.error("--certificates, --duration, --rounds and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_scratch(run, parse_args(argv), "pkictl-ocsp-")


if __name__ == "__main__":
    sys.exit(main())
