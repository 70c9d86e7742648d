"""The wheel a user installs holds every module of pkictl (#22: a hand-kept package list
left csms.db out, and a non-editable install failed with ModuleNotFoundError).

Built from a copy of the tracked files (a stale build/ or *.egg-info of the working tree
would hide the fault), then imported from the unpacked wheel with the site machinery off,
so the editable install of the source tree cannot answer the imports. `.ci/wheel-check`
installs the same wheel into a fresh venv and runs `pkictl --help` and `pkictl init`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _source_copy(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_wheel_holds_every_module_and_its_cli_imports(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("pkictl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if not n.startswith("pkictl-")}
        archive.extractall(tmp_path / "installed")

    expected = {
        path.relative_to(source).as_posix()
        for top in ("pki", "csms", "cli")
        for path in (source / top).rglob("*.py")
    } | {"pkictl_policies/__init__.py", "pkictl_policies/default.toml"}
    assert expected - shipped == set(), "modules missing from the wheel"
    assert not {n for n in shipped if n.startswith(("tests/", "bench/"))}

    # -S: no site-packages processing, so the editable finder of the source tree is off;
    # the dependencies come from this venv's site-packages, pkictl from the wheel only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKICTL_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "installed"), sysconfig.get_paths()["purelib"]]
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c",
         "import sys, cli.main; sys.argv = ['pkictl', '--help']; cli.main.main()"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "certificate lifecycle" in done.stdout
    done = subprocess.run(
        [sys.executable, "-S", "-c",
         "import csms.app, importlib.resources as r; print(csms.app.__file__);"
         "print(r.files('pkictl_policies').joinpath('default.toml').is_file())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "installed" / "csms" / "app.py"), "True"]
