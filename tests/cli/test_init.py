"""`pkictl init`: what it creates, how it protects the keys, and when it refuses."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tomllib
from pathlib import Path

import pytest
from cli_test_support import (
    INIT_ARGS,
    ORG,
    add_station,
    as_json,
    home_certificate,
    make_runner,
    station_csr,
    station_v2g_csr,
    tree,
)
from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID

CSO = {
    "cso-root",
    "cso-station-ca",
    "cso-root-ocsp",
    "cso-station-ca-ocsp",
    "csms-server-ec",
    "csms-server-rsa",
}
V2G = {"v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2", "v2g-root-ocsp", "cpo-sub-ca-1-ocsp",
       "cpo-sub-ca-2-ocsp"}  # fmt: skip
CAS = {"cso-root", "cso-station-ca", "v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"}
ENV_PASSPHRASE = "correct horse battery staple 2024"


# Spelled in two pieces so that no file here looks like it holds key material.
ENCRYPTED_PEM_HEADER = b"-----BEGIN " + b"ENCRYPTED PRIVATE KEY-----"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_key(path: Path, passphrase: bytes | None) -> object:
    return serialization.load_pem_private_key(path.read_bytes(), password=passphrase)


def assert_keys_open_only_with(home: Path, names: set[str], passphrase: bytes) -> None:
    for name in names:
        path = home / "keys" / f"{name}.key.pem"
        assert mode(path) == 0o600, f"{path} has mode {oct(mode(path))}"
        assert path.read_bytes().startswith(ENCRYPTED_PEM_HEADER), path
        with pytest.raises(TypeError):  # encrypted: a password is required
            load_key(path, None)
        # A wrong passphrase: usually "bad decrypt", but ~1 in 256 times the garbage has
        # valid padding and fails as ASN.1 instead; a ValueError either way.
        with pytest.raises(ValueError):  # noqa: PT011
            load_key(path, b"not the passphrase")
        key = load_key(path, passphrase)
        public = key.public_key()  # type: ignore[attr-defined]
        certificate = home_certificate(home, name)
        assert public == certificate.public_key(), f"{name}: key does not match certs/{name}.pem"


# --- the module's shared init: generated passphrase, both hierarchies ----------------


def test_init_announces_the_generated_passphrase_on_stderr(
    init_result: tuple[Path, Result],
) -> None:
    home, result = init_result
    passphrase_file = home / "secrets" / "passphrase"
    assert f"Generated a CA key passphrase in {passphrase_file}" in result.stderr
    assert "0600" in result.stderr
    assert "passphrase" not in result.stdout.lower()  # stdout is the table only
    for name in CSO | V2G:
        assert name in result.stdout
    assert f"Initialized the pkictl home {home} (12 certificates)" in result.stderr


def test_init_writes_config_policy_database_certificates_and_crls(initialized_home: Path) -> None:
    home = initialized_home
    config = tomllib.loads((home / "pkictl.toml").read_text())
    assert config["ca"] == {
        "organization": ORG,
        "country": "DE",  # normalised from "de"
        "csms_hosts": ["csms.example.com", "127.0.0.1"],
        "base_url": "http://csms.example.com:8080",
        "hierarchies": ["cso", "v2g"],
    }
    shipped = (Path(__file__).resolve().parents[2] / "policies" / "default.toml").read_text()
    assert (home / "policy.toml").read_text() == shipped
    assert (home / "pkictl.db").is_file()
    assert {p.stem for p in (home / "certs").glob("*.pem")} == CSO | V2G
    assert {p.name for p in (home / "crl").iterdir()} == {f"{n}.crl" for n in CAS}
    for name in CAS:
        crl = x509.load_der_x509_crl((home / "crl" / f"{name}.crl").read_bytes())
        assert crl.is_signature_valid(home_certificate(home, name).public_key())  # type: ignore[arg-type]
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert not list(home.glob(".init-*")), "the staging directory was left behind"


def test_init_keys_are_encrypted_pkcs8_0600_and_open_with_the_generated_passphrase(
    initialized_home: Path,
) -> None:
    home = initialized_home
    secret = home / "secrets" / "passphrase"
    assert mode(secret) == 0o600
    assert mode(secret.parent) & 0o077 == 0
    assert mode(home / "keys") & 0o077 == 0
    passphrase = secret.read_text().strip().encode()
    assert len(passphrase) >= 32
    assert {p.name for p in (home / "keys").iterdir()} == {f"{n}.key.pem" for n in CSO | V2G}
    assert_keys_open_only_with(home, CSO | V2G, passphrase)


def test_init_key_types_of_the_hierarchy(initialized_home: Path) -> None:
    for name in (CSO | V2G) - {"csms-server-rsa"}:
        key = home_certificate(initialized_home, name).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey), name
        assert key.curve.name == "secp256r1", name


# --- refusals: the home stays as it was ----------------------------------------------


def test_init_refuses_an_existing_home(home: Path) -> None:
    before = tree(home)
    result = make_runner(home)(*INIT_ARGS, expect=5)  # 5: conflict, exists already
    assert "already an initialized pkictl home" in result.stderr
    assert str(home) in result.stderr
    assert tree(home) == before


def test_init_refuses_a_non_empty_unrelated_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "keys").mkdir(parents=True)
    (foreign / "keys" / "old.key").write_text("someone else's key")
    (foreign / "index.txt").write_text("V\t300101000000Z\t01\tunknown\t/CN=x\n")
    before = tree(foreign)
    result = make_runner(foreign)(*INIT_ARGS, expect=5)
    assert "refusing to initialize" in result.stderr
    assert str(foreign) in result.stderr
    assert "pkictl.toml" in result.stderr
    assert tree(foreign) == before


def test_init_refuses_while_another_init_is_staging(tmp_path: Path) -> None:
    target = tmp_path / "ca"
    (target / f".init-{os.getpid()}").mkdir(parents=True)  # this process: alive
    before = tree(target)
    result = make_runner(target)(*INIT_ARGS, expect=5)
    assert f"another `pkictl init` (pid {os.getpid()})" in result.stderr
    assert tree(target) == before


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--country", "Germany"),
        ("--csms-host", "bad host!"),
        ("--base-url", "ftp://x"),
        ("--org", "   "),
    ],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "dir-with-readme"])
def test_init_rejects_bad_input_naming_the_option(
    tmp_path: Path, option: str, value: str, existing: bool
) -> None:
    target = tmp_path / "ca"
    if existing:
        target.mkdir()
        (target / "README.md").write_text("our CA\n")
    before = tree(target)
    args = {"--org": ORG, "--country": "DE", "--csms-host": "csms.example.com"}
    args[option] = value
    flat = [item for pair in args.items() for item in pair]
    result = make_runner(target)("init", *flat, expect=2)
    assert f"error: {option}:" in result.stderr
    assert result.stdout == ""
    assert target.exists() is existing
    assert tree(target) == before


def test_init_with_an_invalid_policy_fails_naming_file_and_key(tmp_path: Path) -> None:
    policy = tmp_path / "broken.toml"
    policy.write_text('schema = 1\n[tls]\nmin_version = "1.1"\n[profiles]\n')
    target = tmp_path / "ca"
    result = make_runner(target)(*INIT_ARGS, "--policy", str(policy), expect=6)
    assert str(policy) in result.stderr
    assert "tls.min_version" in result.stderr
    assert not target.exists(), "a failed init created the home directory"


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "dir-with-readme"])
def test_init_failing_midway_leaves_the_directory_as_it_was(tmp_path: Path, existing: bool) -> None:
    """An empty passphrase file is only rejected when the first key is written, after
    the staging directory exists: everything must be rolled back."""
    target = tmp_path / "ca"
    if existing:
        target.mkdir()
        (target / "README.md").write_text("our CA\n")
    before = tree(target)
    empty = tmp_path / "empty-passphrase"
    empty.write_text("\n")
    result = make_runner(target, global_args=("--passphrase-file", str(empty)))(
        *INIT_ARGS, expect=8
    )
    assert "is empty" in result.stderr
    assert target.exists() is existing
    assert tree(target) == before


def test_init_requires_org_country_and_host(tmp_path: Path) -> None:
    result = make_runner(tmp_path / "ca")("init", "--country", "DE", expect=2)
    assert "--org" in result.stderr
    assert not (tmp_path / "ca").exists()


# --- an init of its own: PKICTL_PASSPHRASE, --no-v2g, --base-url, --json ------------


@pytest.fixture(scope="module")
def cso_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """Initialized with PKICTL_PASSPHRASE set, --no-v2g and an explicit --base-url, over
    a directory that already holds a README.md (which init allows and keeps)."""
    home = tmp_path_factory.mktemp("cso-only") / "ca"
    home.mkdir()
    (home / "README.md").write_text("our CA\n")
    result = make_runner(home, env={"PKICTL_PASSPHRASE": ENV_PASSPHRASE})(
        *INIT_ARGS, "--no-v2g", "--base-url", "https://pki.example.net:8443/x/", "--json"
    )
    return home, result


def test_init_with_env_passphrase_generates_nothing(cso_only: tuple[Path, Result]) -> None:
    home, result = cso_only
    assert not (home / "secrets").exists()
    assert "Generated" not in result.stderr
    assert as_json(result)["generated_passphrase"] is None
    assert (home / "README.md").read_text() == "our CA\n"
    assert_keys_open_only_with(home, CSO, ENV_PASSPHRASE.encode())


def test_init_no_v2g_creates_only_the_cso_hierarchy(cso_only: tuple[Path, Result]) -> None:
    home, result = cso_only
    payload = as_json(result)
    assert payload["home"] == str(home)
    assert {a["name"] for a in payload["authorities"]} == CSO
    listed = as_json(make_runner(home)("ca", "list", "--json"))
    assert {a["name"] for a in listed} == CSO
    assert {p.stem for p in (home / "certs").glob("*.pem")} == CSO
    assert {p.name for p in (home / "keys").iterdir()} == {f"{n}.key.pem" for n in CSO}
    assert {p.name for p in (home / "crl").iterdir()} == {"cso-root.crl", "cso-station-ca.crl"}
    assert tomllib.loads((home / "pkictl.toml").read_text())["ca"]["hierarchies"] == ["cso"]
    make_runner(home)("ca", "show", "v2g-root", expect=3)


def test_init_base_url_goes_into_aia_and_crl_distribution_points(
    cso_only: tuple[Path, Result],
) -> None:
    home, _ = cso_only
    station_ca = home_certificate(home, "cso-station-ca")
    aia = station_ca.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    assert ocsp == ["https://pki.example.net:8443/x/ocsp"]
    points = station_ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in p.full_name or ()] == [
        "https://pki.example.net:8443/x/crl/cso-root.crl"
    ]


def test_env_passphrase_home_needs_the_passphrase_to_issue(
    cso_only: tuple[Path, Result], tmp_path: Path
) -> None:
    home = tmp_path / "ca"
    shutil.copytree(cso_only[0], home)
    plain = make_runner(home)
    add_station(plain, "CS001", "SN-0001", secc_id="SECC0001")
    csr = station_csr(tmp_path / "s.csr")
    issue_args = ("cert", "issue", "--profile", "charging-station", "--csr", str(csr))
    result = plain(*issue_args, "--station", "CS001", expect=8)
    assert "PKICTL_PASSPHRASE" in result.stderr
    wrong = make_runner(home, env={"PKICTL_PASSPHRASE": "wrong"})
    assert "wrong passphrase" in wrong(*issue_args, "--station", "CS001", expect=8).stderr
    right = make_runner(home, env={"PKICTL_PASSPHRASE": ENV_PASSPHRASE})
    right(*issue_args, "--station", "CS001", "--out", str(tmp_path / "chain.pem"))
    # Without the V2G hierarchy the v2g-secc profile has no issuer: a refusal, not a crash.
    v2g = station_v2g_csr(tmp_path / "v.csr")
    refused = right(
        "cert", "issue", "--profile", "v2g-secc", "--csr", str(v2g), "--station", "CS001",
        "--json", expect=4,
    )  # fmt: skip
    assert as_json(refused)["reason"] == "issuer-unavailable"


# --- where the database goes, and who may read it (#22 item 22) ----------------------


@pytest.mark.postgres
def test_global_database_url_puts_the_ca_in_postgresql_and_the_home_remembers_it(
    tmp_path: Path, fresh_postgres: str
) -> None:
    """`pkictl --database-url postgresql+asyncpg://... init` once put the CA in SQLite
    while later commands with the same flag used the (empty) PostgreSQL database."""
    home = tmp_path / "ca"
    run = make_runner(home, global_args=("--database-url", fresh_postgres))
    run(*INIT_ARGS)
    assert not (home / "pkictl.db").exists(), "the CA landed in SQLite"
    config = tomllib.loads((home / "pkictl.toml").read_text())
    assert config["database"] == {"url": fresh_postgres}
    with_flag = as_json(run("ca", "list", "--json"))
    assert len(with_flag) == 12
    without_flag = as_json(make_runner(home)("ca", "list", "--json"))  # from pkictl.toml
    assert without_flag == with_flag
    assert not (home / "pkictl.db").exists()


def test_init_refuses_two_different_database_urls(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    run = make_runner(home, global_args=("--database-url", f"sqlite+aiosqlite:///{tmp_path}/a"))
    result = run(*INIT_ARGS, "--database-url", f"sqlite+aiosqlite:///{tmp_path}/b", expect=2)
    assert "--database-url" in result.stderr
    assert not home.exists()


def test_init_into_an_existing_0755_directory_keeps_the_database_0600(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    previous = os.umask(0o022)
    try:
        make_runner(home)(*INIT_ARGS)
        database = home / "pkictl.db"
        assert mode(database) == 0o600, oct(mode(database))
        # -wal and -shm exist while a connection is open: open one and look at them
        with sqlite3.connect(database) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE probe (x)")
            for suffix in ("-wal", "-shm"):
                side = home / f"pkictl.db{suffix}"
                assert side.exists(), side
                assert mode(side) == 0o600, f"{side}: {oct(mode(side))}"
    finally:
        os.umask(previous)


def test_init_with_pkictl_database_url_records_it(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    elsewhere = tmp_path / "elsewhere.db"
    url = f"sqlite+aiosqlite:///{elsewhere}"
    make_runner(home, env={"PKICTL_DATABASE_URL": url})(*INIT_ARGS)
    assert not (home / "pkictl.db").exists()
    assert mode(elsewhere) == 0o600
    assert tomllib.loads((home / "pkictl.toml").read_text())["database"] == {"url": url}
    assert len(as_json(make_runner(home)("ca", "list", "--json"))) == 12  # without the env
