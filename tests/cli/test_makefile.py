"""`make run OCPP_PORT=… HTTP_PORT=…` passes the ports to `pkictl serve` (#22 item 26).
`make -n` prints the commands without running them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_run(tmp_path: Path, *variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "run", f"PKICTL_HOME={tmp_path / 'ca'}", *variables],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (serve,) = [line for line in done.stdout.splitlines() if " serve" in line]
    return serve


def test_make_run_takes_the_ports(tmp_path: Path) -> None:
    serve = make_run(tmp_path, "OCPP_PORT=19443", "HTTP_PORT=19080")
    assert serve.split()[-5:] == ["serve", "--ocpp-port", "19443", "--http-port", "19080"]
    assert make_run(tmp_path).split()[-1] == "serve"  # else pkictl.toml's, else defaults
    assert make_run(tmp_path, "HTTP_PORT=9").split()[-3:] == ["serve", "--http-port", "9"]
