"""The README's commands work as written (#22 item 26): register a station, make its
station and SECC CSRs with `openssl req`, issue both with `pkictl cert issue`, then
check both with the README's `openssl ocsp` lines against a real `pkictl serve`
responder. The lines are read from README.md and run by bash in a directory holding
the home `ca/`; only the responder's port is put in place of 8080."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from integration_support import PASSPHRASE, initialized_home
from simulated_station import serving

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(start: str) -> list[str]:
    """Every command in README.md starting with ``start``, its continuation lines joined."""
    lines = README.read_text(encoding="utf-8").splitlines()
    commands = []
    for number, line in enumerate(lines):
        if not line.strip().startswith(start):
            continue
        command, following = line.strip(), number
        while command.endswith("\\"):
            following += 1
            command = command[:-1] + lines[following].strip()
        commands.append(re.sub(r"\s+#.*$", "", command))  # a trailing comment
    return commands


def bash(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKICTL_")}
    env["PKICTL_PASSPHRASE"] = PASSPHRASE
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # pkictl
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def first_certificate(chain: Path, leaf: Path) -> None:
    certificate = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    leaf.write_bytes(certificate.public_bytes(Encoding.PEM))


async def test_the_readme_issues_and_checks_station_and_secc_certificates(tmp_path: Path) -> None:
    home = await initialized_home(tmp_path, {}, hierarchies=frozenset({"cso", "v2g"}))
    assert home.path == tmp_path / "ca"  # the README's default home, from tmp_path
    (station_add,) = readme_commands("pkictl station add CS001")
    requests = readme_commands("openssl req")
    issues = [c for c in readme_commands("pkictl cert issue") if "--station CS001" in c]
    assert len(requests) == 2
    assert len(issues) == 2
    assert "/DC=CPO" in requests[1]
    assert "/CN=DE*ABC*E0001" in requests[1]  # the SECC id the station was registered with
    for command in (station_add, *requests, *issues):
        done = await asyncio.to_thread(bash, command, tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    first_certificate(tmp_path / "chain.pem", tmp_path / "cs001.pem")
    first_certificate(tmp_path / "secc-chain.pem", tmp_path / "secc.pem")

    checks = readme_commands("openssl ocsp -issuer")
    assert len(checks) == 2
    async with serving(home, {}) as service:
        url = f"http://127.0.0.1:{service.ports.http_port}"
        for command, leaf in zip(checks, ("cs001.pem", "secc.pem"), strict=True):
            assert "http://localhost:8080" in command
            done = await asyncio.to_thread(
                bash, command.replace("http://localhost:8080", url), tmp_path
            )
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            assert "Response verify OK" in done.stderr, done.stderr
            assert f"{leaf}: good" in done.stdout, done.stdout
