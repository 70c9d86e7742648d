"""Issuance throughput: the full pipeline against a raw cryptography sign-from-CSR loop.

Issue #N: "issue 2,000 CSRs through the full pipeline including the database record,
beside a raw cryptography sign-from-CSR loop in the same run; record the ratio in
bench/RESULTS.md. Target >= 0.6."

Setup (not timed): a temporary directory holding the SQLite database and the encrypted
CA key files (FileKeyStore, default) -- or MemoryKeyStore with ``--keys memory``; a CSO
hierarchy initialized through ``CertificateAuthority.initialize``; N registered stations;
N pre-generated P-256 CSRs (CN = station serial, O = organization). The CA used for the
timed part is a fresh ``CertificateAuthority`` over a fresh ``FileKeyStore`` on the same
directory, as in a newly started process: its first issuance loads and decrypts the key
from disk (inside the untimed warm-up).

Timed, in alternating rounds so that machine noise hits both sides:

* baseline -- a hand-written cryptography loop: ``load_pem_x509_csr``,
  ``is_signature_valid``, a ``CertificateBuilder`` with the extensions of the
  charging-station profile (basicConstraints and keyUsage critical, SKI, AKI, AIA, CRL
  DP), signed with the same CA key (ECDSA P-256 / SHA-256), DER out. Per-run constants
  (AKI, AIA, CRL DP, key usage) are built once, as anyone writing such a loop would.
* pipeline -- ``await ca.issue_for_station(...)`` for each CSR, sequentially in one event
  loop: every issuance is its own durable transaction with its certificate row and its
  hash-chained audit entry.

The result is the median over rounds of the ratio pipeline / baseline throughput, each
round pairing two adjacent measurements: on a shared machine the speed drifts by tens
of per cent within seconds, and pairing cancels the drift that a ratio of per-side
medians would keep. Many short rounds beat a few long ones for the same reason. After
the timed rounds the benchmark checks (untimed) that every issuance left exactly one
certificate row and that the audit chain verifies.

Output: one JSON line per result on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from pki.audit import AuditEvent, verify_chain
from pki.authority import CertificateAuthority, CsoIdentity
from pki.issuance.build import RevocationUrls
from pki.keys import KeyStore, MemoryKeyStore
from pki.keys.file import FileKeyStore
from pki.keys.process import SigningProcess
from pki.policy import load_policy
from pki.records import CertificateQuery, Station
from pki.store.sql import SqlStore, open_store

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "default.toml"
PROFILE = "charging-station"
ISSUER = "cso-station-ca"
ORGANIZATION = "Bench CPO"
PASSPHRASE = b"bench-passphrase"
TARGET = 0.6
WARMUP = 20


class SystemClock:
    """The wall clock (pki has none of its own; csms.app wires the real one)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Bench:
    store: SqlStore
    ca: CertificateAuthority
    station_ids: list[str]
    csr_pems: list[str]
    ca_key: ec.EllipticCurvePrivateKey
    ca_certificate: x509.Certificate
    urls: RevocationUrls
    signing: SigningProcess | None

    async def close(self) -> None:
        if self.signing is not None:
            await self.signing.aclose()
        await self.store.close()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def identity() -> CsoIdentity:
    return CsoIdentity(ORGANIZATION, "DE", ("csms.bench.test",), "http://csms.bench.test:8080")


def make_csrs(serials: Sequence[str]) -> list[str]:
    out = []
    for serial in serials:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, serial),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    ]
                )
            )
            .sign(key, hashes.SHA256())
        )
        out.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return out


async def set_up(n: int, url: str, keys_kind: str, home: Path, signing: str) -> Bench:
    store = await open_store(url)
    policy = load_policy(POLICY)
    clock = SystemClock()

    def key_store() -> KeyStore:
        if keys_kind == "file":
            return FileKeyStore(home / "keys", PASSPHRASE)
        return memory

    memory = MemoryKeyStore()
    creator = CertificateAuthority(
        store=store, keys=key_store(), policy=policy, clock=clock, identity=identity()
    )
    await creator.initialize(frozenset({"cso"}), "bench")

    station_ids = [f"CS{i:05d}" for i in range(n)]
    serials = [f"SN{i:05d}" for i in range(n)]
    for station_id, serial in zip(station_ids, serials, strict=True):
        await store.add_station(
            Station(station_id, serial, None, 3, None, clock.now()),
            AuditEvent("station.added", "bench", station_id),
            clock.now(),
        )
    csr_pems = make_csrs(serials)

    # The CA under test: fresh objects, as in a newly started process; with
    # ``signing="process"`` its CSR checks and signing run in a child process, as in
    # `pkictl serve` on a machine with a core to spare (ADR 15).
    process = (
        SigningProcess(home / "keys", lambda: PASSPHRASE, policy) if signing == "process" else None
    )
    ca = CertificateAuthority(
        store=store,
        keys=key_store(),
        policy=policy,
        clock=clock,
        identity=identity(),
        csr_issuing=process,
    )

    # The baseline's own copy of the issuing CA's key and certificate.
    authority = await store.get_authority(ISSUER)
    assert authority is not None
    if keys_kind == "file":
        pem = (home / "keys" / f"{authority.key_name}.key.pem").read_bytes()
        ca_key = serialization.load_pem_private_key(pem, password=PASSPHRASE)
    else:
        ca_key = memory.open(authority.key_name)._key  # type: ignore[attr-defined]  # bench only
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return Bench(
        store,
        ca,
        station_ids,
        csr_pems,
        ca_key,
        authority.certificate(),
        RevocationUrls(identity().base_url),
        process,
    )


# --- the two sides -------------------------------------------------------------------


def baseline(bench: Bench, pems: Sequence[str]) -> float:
    """Raw cryptography: parse, verify, build with the profile's extensions, sign."""
    issuer_name = bench.ca_certificate.subject
    issuer_not_after = bench.ca_certificate.not_valid_after_utc
    basic = x509.BasicConstraints(ca=False, path_length=None)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(bench.ca_key.public_key())
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(bench.urls.ocsp)
            )
        ]
    )
    cdp = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(bench.urls.crl(ISSUER))],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )
    algorithm = hashes.SHA256()
    started = time.perf_counter()
    for pem in pems:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
        if not csr.is_signature_valid:
            raise AssertionError("baseline: CSR signature does not verify")
        public_key = csr.public_key()
        now = datetime.now(UTC).replace(microsecond=0)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=60))
            .not_valid_after(min(now + timedelta(days=365), issuer_not_after))
            .add_extension(basic, critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(aia, critical=False)
            .add_extension(cdp, critical=False)
            .sign(bench.ca_key, algorithm)
        )
        certificate.public_bytes(serialization.Encoding.DER)
    return time.perf_counter() - started


async def pipeline(
    bench: Bench, pems: Sequence[str], station_ids: Sequence[str], concurrency: int = 1
) -> float:
    """The product: issue_for_station, every certificate durably recorded with its
    hash-chained audit entry before the call returns. ``concurrency`` requests are in
    flight at once, as when many stations send SignCertificate together; their records
    then share transactions (group commit)."""
    ca = bench.ca
    work = iter(zip(pems, station_ids, strict=True))

    async def worker() -> None:
        for pem, station_id in work:
            await ca.issue_for_station(
                csr_pem=pem, profile_name=PROFILE, station_id=station_id, actor="bench"
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


# --- driver ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


async def verify(bench: Bench, expected: int) -> dict[str, Any]:
    """Untimed: every issuance left its row, and the audit chain is intact."""
    rows = await bench.store.find_certificates(CertificateQuery(profile=PROFILE))
    problems = verify_chain(await bench.store.audit_entries(), await bench.store.audit_head())
    return {
        "certificates": len(rows),
        "expected": expected,
        "audit_chain_ok": not problems,
        "ok": len(rows) == expected and not problems,
    }


async def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    url = args.db or f"sqlite+aiosqlite:///{home / 'pkictl.sqlite'}"
    log(f"setup: n={args.n} db={url.split('://')[0]} keys={args.keys} home={home}")
    bench = await set_up(args.n, url, args.keys, home, args.signing)
    try:
        deadline = time.monotonic() + args.timeout
        warm = min(WARMUP, args.n)
        baseline(bench, bench.csr_pems[:warm])
        await pipeline(bench, bench.csr_pems[:warm], bench.station_ids[:warm])
        issued = warm
        base_rates: list[float] = []
        pipe_rates: list[float] = []
        for round_ in range(args.rounds):
            if time.monotonic() > deadline:
                log(f"time limit of {args.timeout}s reached after {round_} rounds")
                break
            order = ("baseline", "pipeline") if round_ % 2 == 0 else ("pipeline", "baseline")
            for side in order:
                if side == "baseline":
                    elapsed = baseline(bench, bench.csr_pems)
                    base_rates.append(args.n / elapsed)
                else:
                    elapsed = await pipeline(
                        bench, bench.csr_pems, bench.station_ids, args.concurrency
                    )
                    pipe_rates.append(args.n / elapsed)
                    issued += args.n
                log(f"round {round_ + 1}/{args.rounds} {side}: {args.n / elapsed:,.0f}/s")
        if not base_rates or not pipe_rates:
            raise RuntimeError("time limit reached before one complete round")
        checked = await verify(bench, issued)
    finally:
        await bench.close()
    base, pipe = statistics.median(base_rates), statistics.median(pipe_rates)
    ratio = statistics.median(p / b for p, b in zip(pipe_rates, base_rates, strict=True))
    return {
        "bench": "issuance",
        "n": args.n,
        "concurrency": args.concurrency,
        "rounds": len(pipe_rates),
        "db": url.split("://")[0],
        "keys": args.keys,
        "signing": args.signing,
        "baseline_per_s": round(base, 1),
        "pipeline_per_s": round(pipe, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "pass": ratio >= TARGET and checked["ok"],
        "baseline_rounds_per_s": [round(r, 1) for r in base_rates],
        "pipeline_rounds_per_s": [round(r, 1) for r in pipe_rates],
        "round_ratios": [round(p / b, 3) for p, b in zip(pipe_rates, base_rates, strict=True)],
        "verified": checked,
        "machine": machine(),
        "cryptography": cryptography.__version__,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.issuance",
        description=(
            "Issue N CSRs through the full pipeline (CSR checks, signing, certificate row, "
            "hash-chained audit entry, one transaction each) beside a raw cryptography "
            "sign-from-CSR loop, in alternating rounds; prints the throughput ratio "
            f"(pipeline / baseline, target >= {TARGET}) as one JSON line."
        ),
    )
    parser.add_argument("--n", type=int, default=2000, help="CSRs per round (default 2000)")
    parser.add_argument(
        "--rounds", type=int, default=7, help="paired rounds; the median ratio counts (default 7)"
    )
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (default: SQLite in the temporary directory); a "
        "postgresql+asyncpg:// URL must name an empty, throwaway database",
    )
    parser.add_argument(
        "--keys",
        choices=("file", "memory"),
        default="file",
        help="CA key backend: encrypted files in the temporary directory (default) or memory",
    )
    parser.add_argument(
        "--signing",
        choices=("process", "inline"),
        default="process",
        help="where the pipeline checks and signs CSRs: a child process, as `pkictl serve` "
        "does with a core to spare (default), or inline on the event loop",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="issuances in flight at once on the pipeline side (default 1: one after another)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: --n 200 --rounds 1")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="stop starting new rounds after this many seconds (default 600)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="write a cProfile of one extra pipeline round to FILE (not part of the result)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 200, 1
    if args.n < 1 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--n, --rounds and --concurrency must be positive")
    if args.signing == "process" and args.keys != "file":
        parser.error("--signing process needs --keys file: the child opens the key files")
    return args


async def profile_round(args: argparse.Namespace, home: Path) -> None:
    import cProfile

    url = args.db or f"sqlite+aiosqlite:///{home / 'pkictl.sqlite'}"
    bench = await set_up(args.n, url, args.keys, home, args.signing)
    try:
        await pipeline(bench, bench.csr_pems[:WARMUP], bench.station_ids[:WARMUP])
        profiler = cProfile.Profile()
        profiler.enable()
        await pipeline(bench, bench.csr_pems, bench.station_ids, args.concurrency)
        profiler.disable()
        profiler.dump_stats(args.profile)
        log(f"profile written to {args.profile}")
    finally:
        await bench.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="pkictl-bench-"))
    try:
        if args.profile:
            asyncio.run(profile_round(args, home))
            return 0
        result = asyncio.run(run(args, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
