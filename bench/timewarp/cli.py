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
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import timewarp
from bench.plot import check_plot_target
from bench.timewarp.report import judge
from bench.timewarp.sim import Scenario, Simulation


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _positive_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timewarp", description=timewarp.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--stations", type=_at_least(1), default=10_000)
    parser.add_argument("--days", type=_at_least(1), default=730, help="simulated days")
    parser.add_argument("--seed", type=int, default=2027, help="the scenario's random seed")
    parser.add_argument(
        "--step-hours", type=_positive_hours, default=1.0,
        help="the clock's resolution: at least this much simulated time per step",
    )  # fmt: skip
    parser.add_argument(
        "--long-absences", type=_at_least(0), default=0,
        help="stations away through their whole renewal window (back expired)",
    )  # fmt: skip
    parser.add_argument(
        "--plot", type=Path,
        help="write a PNG chart over simulated time (matplotlib: pip install -e '.[bench]')",
    )  # fmt: skip
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
    check_plot_target("--plot", args.plot)
    check_plot_target("--samples", args.samples)
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
