"""Fixtures for CLI tests: a real home initialized by `pkictl init` through click.

Initializing generates RSA-3072 and a dozen EC keys, so one home is made per module and
copied for every test that changes it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.main import cli

ORG = "Example CPO"
INIT_ARGS = (
    "init",
    "--org",
    ORG,
    "--country",
    "de",
    "--csms-host",
    "csms.example.com",
    "--csms-host",
    "127.0.0.1",
)

Run = Callable[..., Result]


def make_runner(home: Path) -> Run:
    runner = CliRunner(
        env={"PKICTL_PASSPHRASE": None, "PKICTL_DATABASE_URL": None, "PKICTL_ACTOR": "test"}
    )

    def run(*args: str, expect: int | None = 0, stdin: str | None = None) -> Result:
        result = runner.invoke(
            cli, ["--home", str(home), *args], input=stdin, catch_exceptions=False
        )
        if expect is not None:
            assert result.exit_code == expect, (
                f"pkictl {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    return run


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def initialized_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("template") / "ca"
    make_runner(home)(*INIT_ARGS)
    return home


@pytest.fixture
def home(initialized_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ca"
    shutil.copytree(initialized_home, copy)
    return copy


@pytest.fixture
def pkictl(home: Path) -> Run:
    return make_runner(home)


def write_csr(
    path: Path,
    attributes: Sequence[tuple[x509.ObjectIdentifier, str]],
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Path:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def station_csr(path: Path, serial: str = "SN-0001", org: str = ORG) -> Path:
    return write_csr(path, [(NameOID.COMMON_NAME, serial), (NameOID.ORGANIZATION_NAME, org)])
