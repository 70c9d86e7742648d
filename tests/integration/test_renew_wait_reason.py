"""`pkictl renew --wait` says why a renewal failed (#22 item 27): a simulated station
(real CSR, real CertificateSigned) refuses the certificate; the human output names the
reason the renewal failed with, and the exit code is 9."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from integration_support import initialized_home
from simulated_station import serving

from cli.main import cli

FLEET = {"RW1": ("SN-RW1", 3, False)}


async def test_renew_wait_prints_the_reason_of_a_failure(tmp_path: Path) -> None:
    home = await initialized_home(tmp_path, FLEET)
    async with serving(home, FLEET) as service:
        station = await service.station("RW1")
        station.refuse_install = True
        _, listener = await service.connect(station, station.identity)
        try:
            runner = CliRunner(env={"PKICTL_PASSPHRASE": None, "PKICTL_DATABASE_URL": None})
            result = await asyncio.to_thread(
                runner.invoke, cli, ["--home", str(home.path), "renew", "RW1", "--wait", "60"]
            )
        finally:
            listener.cancel()
    assert result.exit_code == 9, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("renewal #")]
    assert line.startswith("renewal #1 of RW1: failed (")
    assert "Rejected" in line, line
