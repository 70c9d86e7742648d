"""The C station simulators of the benches (bench/loadgen.c, bench/renewsim.c) against a
real `pkictl serve`: they compile, drive real mutual-TLS stations, and what they report
is what the server did. A few stations each: a bench's figures are not asserted here,
only that its load generator works (bench/RESULTS.md records the figures)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("cc") and Path("/usr/include/openssl/ssl.h").exists()),
    reason="needs cc and the OpenSSL 3 headers",
)
ROOT = Path(__file__).parents[2]


def bench(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"exit {done.returncode}: {done.stderr[-2000:]}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def test_the_c_renewal_simulator_renews_every_station_exactly_once() -> None:
    result = bench("bench.renewal", "--stations", "12", "--client", "c", "--workers", "2",
                   "--timeout", "120")  # fmt: skip
    assert result["client"] == "c"
    assert result["confirmed_exactly_once"] is True  # the database's account, not the client's
    assert result["reconnection_retries"] == 0
    assert float(result["simulator_cpu_ms_per_renewal"]) > 0  # type: ignore[arg-type]


def test_the_c_load_generator_gets_answers_from_both_servers() -> None:
    result = bench("bench.fleet", "--stations", "4", "--scenario", "messages", "--rounds", "1",
                   "--duration", "1", "--client", "c")  # fmt: skip
    rates = result["per_s"]
    assert isinstance(rates, dict)
    assert rates["pkictl"][0] > 0
    assert rates["ocpp_baseline"][0] > 0
