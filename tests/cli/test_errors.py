"""Exit codes of cli/errors.py that the other modules do not reach: the CA passphrase
(8), an uninitialized or damaged home (6), I/O errors (1), and --json error payloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_test_support import (
    Run,
    add_station,
    as_json,
    make_runner,
    query,
    station_csr,
)

ISSUE = ("cert", "issue", "--profile", "charging-station", "--station", "CS001", "--csr")
NO_PASSPHRASE = "no CA key passphrase: set PKICTL_PASSPHRASE or pass --passphrase-file"


def certificate_count(home: Path) -> int:
    ((count,),) = query(home, "SELECT count(*) FROM certificates")
    return int(count)


@pytest.fixture
def passphrase_moved_away(home: Path, tmp_path: Path) -> Path:
    """HOME/secrets/passphrase removed, kept elsewhere; returns where."""
    kept = tmp_path / "kept-passphrase"
    (home / "secrets" / "passphrase").rename(kept)
    return kept


def test_without_passphrase_read_only_commands_work_but_issuing_exits_8(
    pkictl: Run, home: Path, tmp_path: Path, passphrase_moved_away: Path
) -> None:
    assert len(as_json(pkictl("ca", "list", "--json"))) == 12
    assert len(as_json(pkictl("cert", "list", "--json"))) == 12
    pkictl("ca", "show", "cso-root")
    pkictl("ca", "export", "cso-root")
    pkictl("policy", "show")
    pkictl("audit", "verify")
    add_station(pkictl)  # the registry needs no CA key either
    assert [s["id"] for s in as_json(pkictl("station", "list", "--json"))] == ["CS001"]
    csr = str(station_csr(tmp_path / "s.csr"))
    result = pkictl(*ISSUE, csr, expect=8)
    assert NO_PASSPHRASE in result.stderr
    payload = as_json(pkictl(*ISSUE, csr, "--json", expect=8))
    assert (payload["error"], payload["exit_code"]) == ("KeyAccessError", 8)
    assert NO_PASSPHRASE in pkictl("crl", "cso-station-ca", expect=8).stderr
    assert certificate_count(home) == 12
    # Supplied either way, the same home issues again.
    with_file = make_runner(home, global_args=("--passphrase-file", str(passphrase_moved_away)))
    with_file(*ISSUE, csr)
    with_env = make_runner(
        home, env={"PKICTL_PASSPHRASE": passphrase_moved_away.read_text().strip()}
    )
    with_env(*ISSUE, csr)
    assert certificate_count(home) == 14
    assert not (home / "secrets" / "passphrase").exists()


def test_revoking_without_passphrase_stands_but_defers_the_crl(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    add_station(pkictl)
    serial = as_json(pkictl(*ISSUE, str(station_csr(tmp_path / "s.csr")), "--json"))["serial"]
    kept = tmp_path / "kept"
    (home / "secrets" / "passphrase").rename(kept)
    crl_file = home / "crl" / "cso-station-ca.crl"
    before = crl_file.read_bytes()
    result = pkictl("cert", "revoke", serial, "--reason", "keyCompromise", "--json")
    assert "warning: CRL not regenerated" in result.stderr
    assert "pkictl crl cso-station-ca" in result.stderr
    view = as_json(result)
    assert (view["status"], view["crl"]) == ("revoked", None)
    assert crl_file.read_bytes() == before
    publish = make_runner(home, global_args=("--passphrase-file", str(kept)))
    assert as_json(publish("crl", "cso-station-ca", "--json"))["revoked"] == 1


def test_wrong_env_passphrase_exits_8_and_takes_precedence(home: Path, tmp_path: Path) -> None:
    """The right passphrase is still in HOME/secrets, but PKICTL_PASSPHRASE wins."""
    add_station(make_runner(home))
    wrong = make_runner(home, env={"PKICTL_PASSPHRASE": "not-the-passphrase"})
    result = wrong(*ISSUE, str(station_csr(tmp_path / "s.csr")), expect=8)
    assert "cannot be decrypted: wrong passphrase or damaged file" in result.stderr
    assert "cso-station-ca.key.pem" in result.stderr
    assert "wrong passphrase" in wrong("crl", "cso-root", expect=8).stderr
    assert len(wrong("ca", "list").stdout.splitlines()) == 13  # reading needs no key
    assert certificate_count(home) == 12


def test_wrong_or_empty_passphrase_file_exits_8(home: Path, tmp_path: Path) -> None:
    add_station(make_runner(home))
    csr = str(station_csr(tmp_path / "s.csr"))
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-passphrase\n")
    result = make_runner(home, global_args=("--passphrase-file", str(wrong)))(*ISSUE, csr, expect=8)
    assert "wrong passphrase" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    result = make_runner(home, global_args=("--passphrase-file", str(empty)))(*ISSUE, csr, expect=8)
    assert f"passphrase file {empty} is empty" in result.stderr


def test_missing_passphrase_file_option_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    runner = make_runner(home, global_args=("--passphrase-file", str(missing)))
    assert "--passphrase-file" in runner("ca", "list", expect=2).stderr


def test_missing_key_file_exits_8(pkictl: Run, home: Path, tmp_path: Path) -> None:
    add_station(pkictl)
    (home / "keys" / "cso-station-ca.key.pem").unlink()
    result = pkictl(*ISSUE, str(station_csr(tmp_path / "s.csr")), expect=8)
    assert "cso-station-ca.key.pem is missing" in result.stderr


@pytest.mark.parametrize("state", ["missing", "empty", "foreign"])
@pytest.mark.parametrize(
    "command", [("ca", "list"), ("cert", "list", "--json"), ("audit", "verify")]
)
def test_uninitialized_home_exits_6(tmp_path: Path, state: str, command: tuple[str, ...]) -> None:
    target = tmp_path / "ca"
    if state != "missing":
        target.mkdir()
    if state == "foreign":
        (target / "pkictl.db").write_bytes(b"")
    result = make_runner(target)(*command, expect=6)
    assert f"{target} is not an initialized pkictl home" in result.stderr
    assert "pkictl init" in result.stderr
    assert target.exists() is (state != "missing")
    if state == "foreign":
        assert (target / "pkictl.db").read_bytes() == b""


def test_damaged_configuration_exits_6(pkictl: Run, home: Path) -> None:
    (home / "pkictl.toml").write_text("[ca]\norganization = 'x'\n")
    result = pkictl("ca", "list", expect=6)
    assert str(home / "pkictl.toml") in result.stderr
    assert "country" in result.stderr  # the missing key
    (home / "pkictl.toml").write_text("this is not toml ]]]\n")
    assert str(home / "pkictl.toml") in pkictl("station", "list", expect=6).stderr


def test_io_error_exits_1_with_a_message(pkictl: Run, tmp_path: Path) -> None:
    """cli/errors.py: 1 is an I/O error too, and 'the message says what'."""
    target = tmp_path / "no-such-dir" / "root.pem"
    result = pkictl("ca", "export", "cso-root", "--out", str(target), expect=1)
    assert str(target) in result.stderr
    assert result.stderr.startswith("error:")


def test_help_documents_the_exit_codes(pkictl: Run) -> None:
    text = " ".join(pkictl("--help").stdout.split())
    assert "Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 not found" in text
    assert "8 CA key unavailable" in text
