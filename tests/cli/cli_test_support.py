"""Helpers of the CLI tests: run `pkictl` through click, make CSRs, look into a home.

A plain module (not conftest.py) so that test modules can import it by a unique name.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

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


def make_runner(
    home: Path,
    *,
    env: Mapping[str, str | None] | None = None,
    global_args: Sequence[str] = (),
) -> Run:
    """A runner of `pkictl --home HOME [global_args] ...` through click, in-process.

    PKICTL_PASSPHRASE and PKICTL_DATABASE_URL are unset unless ``env`` sets them."""
    runner = CliRunner(
        env={
            "PKICTL_PASSPHRASE": None,
            "PKICTL_DATABASE_URL": None,
            "PKICTL_HOME": None,
            "PKICTL_ACTOR": "test",
            **(env or {}),
        }
    )

    def run(*args: str, expect: int | None = 0, stdin: str | None = None) -> Result:
        result = runner.invoke(
            cli,
            ["--home", str(home), *global_args, *args],
            input=stdin,
            catch_exceptions=False,
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


def station_v2g_csr(path: Path, secc_id: str = "SECC0001", org: str = ORG) -> Path:
    """A CSR for the v2g-secc profile: CN = SECC id, O = the CSO, DC = CPO."""
    return write_csr(
        path,
        [
            (NameOID.COMMON_NAME, secc_id),
            (NameOID.ORGANIZATION_NAME, org),
            (NameOID.DOMAIN_COMPONENT, "CPO"),
        ],
    )


def load_pems(data: bytes | str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data.encode() if isinstance(data, str) else data)


def home_certificate(home: Path, name: str) -> x509.Certificate:
    """certs/NAME.pem as `pkictl init` wrote it."""
    return x509.load_pem_x509_certificate((home / "certs" / f"{name}.pem").read_bytes())


def query(home: Path, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Read the home's SQLite database directly, bypassing pkictl."""
    with closing(sqlite3.connect(home / "pkictl.db")) as connection:
        return connection.execute(sql, tuple(parameters)).fetchall()


def execute(home: Path, sql: str, parameters: Sequence[object] = ()) -> int:
    """Change the home's SQLite database behind pkictl's back; returns the row count."""
    with closing(sqlite3.connect(home / "pkictl.db")) as connection, connection:
        return connection.execute(sql, tuple(parameters)).rowcount


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its content (None for directories)."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def openssl_verify(
    leaf: Path, root: Path, untrusted: Path | None = None, purpose: str = "any"
) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(root)]
    if untrusted is not None:
        command += ["-untrusted", str(untrusted)]
    command.append(str(leaf))
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)


def add_station(
    pkictl: Run, station_id: str = "CS001", serial: str = "SN-0001", secc_id: str | None = None
) -> None:
    args = ["station", "add", station_id, "--serial", serial]
    if secc_id is not None:
        args += ["--secc-id", secc_id]
    pkictl(*args)


def issue(
    pkictl: Run, csr: Path, station_id: str = "CS001", profile: str = "charging-station"
) -> dict[str, Any]:
    """Issue through `pkictl cert issue --json`; the JSON view of the new certificate."""
    view: dict[str, Any] = as_json(
        pkictl(
            "cert",
            "issue",
            "--profile",
            profile,
            "--csr",
            str(csr),
            "--station",
            station_id,
            "--json",
        )
    )
    return view
