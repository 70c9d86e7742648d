"""The installed `pkictl` console script, run as a real process: the entry point works,
the default home is ./ca, PKICTL_HOME is honoured, exit codes reach the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_test_support import ORG

SCRIPT = Path(sys.executable).parent / "pkictl"  # .venv/bin/pkictl


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_console_script_init_and_ca_list(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is not installed: pip install -e ."
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKICTL_")}
    env["PKICTL_ACTOR"] = "entry-point-test"
    workdir = tmp_path / "work"
    workdir.mkdir()

    done = run(
        "init", "--org", ORG, "--country", "DE", "--csms-host", "csms.example.com",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    home = workdir / "ca"  # the default --home
    assert (home / "pkictl.toml").is_file()
    assert "Generated a CA key passphrase in ca/secrets/passphrase" in done.stderr
    assert "cso-root" in done.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_home = {**env, "PKICTL_HOME": str(home)}
    done = run("ca", "list", "--json", cwd=elsewhere, env=env_home)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 12
    assert {r["name"] for r in rows} >= {"cso-root", "cso-station-ca", "cpo-sub-ca-2"}
    assert not (elsewhere / "ca").exists()

    done = run("ca", "show", "no-such-ca", cwd=elsewhere, env=env_home)
    assert done.returncode == 3
    assert done.stderr.startswith("error: no CA or service certificate named 'no-such-ca'")
    assert "Traceback" not in done.stderr

    done = run("audit", "list", "--json", cwd=elsewhere, env=env_home)
    assert {e["actor"] for e in json.loads(done.stdout)} == {"entry-point-test"}

    done = run("--version", cwd=elsewhere, env=env_home)
    assert done.returncode == 0
    assert done.stdout.startswith("pkictl, version ")
