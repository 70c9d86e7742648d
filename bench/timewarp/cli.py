"""Command line of the time-warp simulation."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.timewarp.report import judge
from bench.timewarp.sim import Scenario, Simulation


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.timewarp", description=__doc__)
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--step-hours", type=float, default=1.0)
    parser.add_argument(
        "--long-absences", type=int, default=0,
        help="stations away through their whole renewal window (back expired)",
    )  # fmt: skip
    parser.add_argument("--plot", type=Path, help="write a PNG chart over simulated time")
    parser.add_argument("--samples", type=Path, help="write the daily samples as JSON")
    parser.add_argument("--verbose", action="store_true", help="the service's logs on stderr")
    return parser.parse_args(argv)


async def simulate(scenario: Scenario, directory: Path) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(scenario, directory)
    await sim.set_up()
    await sim.open_node()
    try:
        await sim.run()
        verdict = await judge(sim)
    finally:
        await sim.close_node()
    return sim, verdict


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr)
    scenario = replace(
        Scenario(), stations=args.stations, days=args.days, seed=args.seed,
        long_absences=args.long_absences,
        step=timedelta(hours=args.step_hours),
    )  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pkictl-timewarp-") as scratch:
        sim, verdict = asyncio.run(simulate(scenario, Path(scratch)))
    elapsed = time.perf_counter() - started
    if args.samples:
        args.samples.write_text(json.dumps(sim.tally.samples))
    if args.plot:
        from bench.timewarp.chart import chart

        chart(args.plot, sim.tally.samples)
    criteria = [v["pass"] for v in verdict.values() if v.get("pass") is not None]
    print(json.dumps({
        "bench": "timewarp",
        "scenario": {k: str(v) for k, v in asdict(scenario).items()},
        "wall_s": round(elapsed, 1),
        "restarts": sim.tally.restarts,
        "connections": sim.tally.connects,
        "station_events": dict(sum((Counter(s.counts) for s in sim.stations), Counter())),
        "criteria": verdict,
        "pass": all(criteria),
    }, default=str))  # fmt: skip
    return 0 if all(criteria) else 1
