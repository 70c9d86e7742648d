"""`pkictl serve` takes as many open files as the process may have: each station
connection holds one, and the usual soft limit (1,024) would stop a node there."""

from __future__ import annotations

import resource
import subprocess
import sys

PROBE = (
    "import resource; from csms.service import raise_open_files_limit; "
    "print(raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=_low_soft_limit,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    returned, soft, hard = (int(value) for value in done.stdout.split())
    assert soft > 256
    assert returned == soft
    assert hard in {soft, resource.RLIM_INFINITY}
