"""Fixtures for CLI tests: a real home initialized by `pkictl init` through click.

Initializing generates RSA-3072 and a dozen EC keys, so one home is made per module and
copied for every test that changes it. The helpers live in `cli_test_support`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_test_support import INIT_ARGS, Run, make_runner
from click.testing import Result


@pytest.fixture(scope="module")
def init_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """The module's one `pkictl init` (generated passphrase): its home and its result.
    Never change this home: tests that do use the ``home`` copy."""
    home = tmp_path_factory.mktemp("template") / "ca"
    return home, make_runner(home)(*INIT_ARGS)


@pytest.fixture(scope="module")
def initialized_home(init_result: tuple[Path, Result]) -> Path:
    return init_result[0]


@pytest.fixture
def home(initialized_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ca"
    shutil.copytree(initialized_home, copy)
    return copy


@pytest.fixture
def pkictl(home: Path) -> Run:
    return make_runner(home)
