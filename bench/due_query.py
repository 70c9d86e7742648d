"""The renewal daemon's due-certificate query over a large certificate table.

Setup (not timed): a temporary SQLite database (or ``--db`` PostgreSQL URL, which is
emptied first), migrated, holding ``--certificates`` station certificate records whose
renewal points spread evenly over three years around now, so that a small share is due;
written in bulk with the store's own statement and bind processing.

Timed: `SqlStore.due_certificates(now, limit)` -- what each scan of `pkictl serve` runs --
``--repeat`` times, for limit 100 (the daemon's batch: `max_in_flight`, judged against
the target) and 1,000 (for scale). Result: one JSON line with p50/p99/max in
milliseconds and the query plan (it must use ix_certificates_due). Target: <= 10 ms at
1,000,000 certificates.

Local only, bounded; the temporary database is removed at the end.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from bench.fleet import run_in_scratch
from csms.services.renewal_ports import RenewalSettings
from pki.records import CertificateRecord, CertificateSource, CertificateStatus
from pki.store.rows import certificate_values
from pki.store.schema import certificates
from pki.store.sql import SqlStore, open_store

TARGET_MS = 10.0
DAEMON_BATCH = RenewalSettings().max_in_flight  # what one scan asks for (100)
BATCH = 20_000
SPREAD = timedelta(days=3 * 365)


def _record(index: int, now: datetime) -> CertificateRecord:
    # renewal points scattered (not in insertion order) over three years from 11 days ago
    fraction = (index * 2_654_435_761 % 1_000_003) / 1_000_003
    renew_after = now - SPREAD / 100 + SPREAD * fraction
    return CertificateRecord(
        serial=0x10_0000_0000 + index, issuer_dn="CN=Bench Station CA", issuer_ca="cso-station-ca",
        subject_dn=f"CN=SN{index:07d},O=Bench", profile="charging-station",
        station_id=f"CS{index:07d}", not_before=renew_after - timedelta(days=275),
        not_after=renew_after + timedelta(days=90), renew_after=renew_after,
        status=CertificateStatus.VALID, source=CertificateSource.ISSUED, der=b"\x30\x00",
        fingerprint_sha256=f"{index:064x}", issuer_name_hash="ab" * 32,
    )  # fmt: skip


async def _fill(store: SqlStore, count: int, now: datetime) -> None:
    statement = insert(certificates)
    async with store.engine.begin() as connection:
        await connection.execute(text("DELETE FROM certificates"))
    for start in range(0, count, BATCH):
        rows = [certificate_values(_record(i, now), now)
                for i in range(start, min(start + BATCH, count))]  # fmt: skip
        async with store.engine.begin() as connection:
            await connection.execute(statement, rows)


async def _plan(store: SqlStore, now: datetime) -> str:
    if store.engine.dialect.name != "sqlite":
        return "(PostgreSQL: see EXPLAIN in psql)"
    path = store.engine.url.database
    assert path is not None
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM certificates WHERE status = 'valid' AND "
            "renew_after <= ? AND station_id IS NOT NULL ORDER BY renew_after LIMIT 100",
            (now.replace(tzinfo=None).isoformat(sep=" "),),
        ).fetchall()
    return "; ".join(str(r[-1]) for r in rows)


async def _timings(store: SqlStore, now: datetime, limit: int, repeat: int) -> dict[str, Any]:
    await store.due_certificates(now, limit)  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        due = await store.due_certificates(now, limit)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "limit": limit, "returned": len(due), "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2), "max_ms": round(times[-1], 2),
    }  # fmt: skip


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    url = args.db or f"sqlite+aiosqlite:///{directory / 'due.db'}"
    store = await open_store(url)
    now = datetime.now(UTC)
    try:
        started = time.perf_counter()
        await _fill(store, args.certificates, now)
        print(f"setup: {args.certificates} certificates in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)  # fmt: skip
        results = [await _timings(store, now, limit, args.repeat) for limit in (100, 1000)]
        plan = await _plan(store, now)
    finally:
        await store.close()
    daemon = next(r for r in results if r["limit"] == DAEMON_BATCH)
    return {
        "bench": "due_query", "database": store.engine.dialect.name,
        "certificates": args.certificates, "repeat": args.repeat, "results": results,
        "plan": plan, "target_ms": TARGET_MS, "judged_at_limit": DAEMON_BATCH,
        "pass": daemon["p99_ms"] <= TARGET_MS,
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.due_query",
        description="Latency of the renewal daemon's due-certificate query over a large "
        "certificate table; one JSON line.",
    )
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="timed queries per limit")
    parser.add_argument("--db", help="a PostgreSQL URL to use instead (its rows are replaced)")
    args = parser.parse_args(argv)
    if args.certificates < 1 or args.repeat < 1:
        parser.error("--certificates and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_scratch(run, parse_args(argv), "pkictl-due-")


if __name__ == "__main__":
    sys.exit(main())
