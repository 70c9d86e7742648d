"""`pkictl station add|list|show|remove`: the registry certificates are bound to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from cli_test_support import Run, as_json, execute, issue, make_runner, query, station_csr
from cryptography import x509
from sqlalchemy import create_engine

from pki.store.sql import _alembic_config

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / f"password-{len(password)}"
    path.write_text(password + "\n")  # a trailing newline, as editors write it
    return path


def test_add_list_show(pkictl: Run) -> None:
    added = pkictl("station", "add", "CS001", "--serial", "SN-0001", "--secc-id", "SECC0001")
    assert "registered station CS001 (serial SN-0001)" in added.stderr
    pkictl("station", "add", "CS002", "--serial", "SN-0002")
    listed = as_json(pkictl("station", "list", "--json"))
    assert [s["id"] for s in listed] == ["CS001", "CS002"]
    first = listed[0]
    assert first["serial_number"] == "SN-0001"
    assert first["secc_id"] == "SECC0001"
    assert first["security_profile"] == 3  # the default
    assert first["has_password"] is False
    assert ISO_Z.match(first["created_at"])
    assert listed[1]["secc_id"] is None
    shown = as_json(pkictl("station", "show", "CS001", "--json"))
    assert shown == {**first, "certificates": []}
    table = pkictl("station", "list").stdout
    assert re.search(r"^CS001\s+SN-0001\s+SECC0001\s+3\s", table, re.MULTILINE)
    assert re.search(r"^CS002\s+SN-0002\s+3\s", table, re.MULTILINE)


def test_add_json(pkictl: Run) -> None:
    view = as_json(pkictl("station", "add", "CS-9:a_b.c", "--serial", "SN 9", "--json"))
    assert view["id"] == "CS-9:a_b.c"
    assert view["serial_number"] == "SN 9"


def test_list_empty(pkictl: Run) -> None:
    assert as_json(pkictl("station", "list", "--json")) == []
    assert "(none)" in pkictl("station", "list").stdout


@pytest.mark.parametrize("profile", ["1", "2"])
def test_basic_auth_profiles_require_a_password_file(pkictl: Run, profile: str) -> None:
    result = pkictl(
        "station", "add", "CS001", "--serial", "SN-0001", "--security-profile", profile, expect=2
    )
    assert "password-file" in result.stderr
    assert as_json(pkictl("station", "list", "--json")) == []


@pytest.mark.parametrize(("profile", "length"), [("1", 15), ("1", 16), ("2", 40), ("2", 41)])
def test_password_length_is_enforced(
    pkictl: Run, home: Path, tmp_path: Path, profile: str, length: int
) -> None:
    expect = 0 if 16 <= length <= 40 else 2
    password = "p" * (length - 4) + "w0rd"
    result = pkictl(
        "station", "add", "CS001", "--serial", "SN-0001", "--security-profile", profile,
        "--password-file", str(password_file(tmp_path, password)), expect=expect,
    )  # fmt: skip
    listed = as_json(pkictl("station", "list", "--json"))
    if expect:
        assert "password-file" in result.stderr
        assert "16 to 40" in result.stderr
        assert listed == []
        return
    assert listed[0]["has_password"] is True
    assert listed[0]["security_profile"] == int(profile)
    ((stored,),) = query(home, "SELECT password_hash FROM stations WHERE id = 'CS001'")
    assert stored.startswith("scrypt$")
    assert password not in stored


@pytest.mark.parametrize("station_id", ["bad id!", "a" * 49, "cs/001", ""])
def test_bad_station_id_exits_2(pkictl: Run, station_id: str) -> None:
    result = pkictl("station", "add", station_id, "--serial", "SN-0001", expect=2)
    assert "id:" in result.stderr
    assert as_json(pkictl("station", "list", "--json")) == []


def test_longest_station_id_is_accepted(pkictl: Run) -> None:
    pkictl("station", "add", "a" * 48, "--serial", "SN-0001")
    assert [s["id"] for s in as_json(pkictl("station", "list", "--json"))] == ["a" * 48]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--security-profile", "4"), "--security-profile"),
        (("--secc-id", "x" * 65), "secc-id"),
        (("--secc-id", "bad\tid"), "secc-id"),
    ],
)
def test_other_bad_input_exits_2(pkictl: Run, args: tuple[str, ...], needle: str) -> None:
    result = pkictl("station", "add", "CS001", "--serial", "SN-0001", *args, expect=2)
    assert needle in result.stderr
    assert as_json(pkictl("station", "list", "--json")) == []


def test_bad_serial_exits_2(pkictl: Run) -> None:
    assert "serial" in pkictl("station", "add", "CS001", "--serial", " ", expect=2).stderr


def test_duplicate_station_is_a_conflict(pkictl: Run) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    result = pkictl("station", "add", "CS001", "--serial", "SN-0002", expect=5)
    assert "already registered" in result.stderr
    assert as_json(pkictl("station", "show", "CS001", "--json"))["serial_number"] == "SN-0001"


def test_show_unknown_station_exits_3(pkictl: Run) -> None:
    assert "CS404" in pkictl("station", "show", "CS404", expect=3).stderr


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--serial", "SN-0001"), "serial"),
        (("--serial", "SN-0003", "--secc-id", "SECC0001"), "secc-id"),
    ],
)
def test_a_serial_or_secc_id_another_station_holds_is_a_conflict(
    pkictl: Run, args: tuple[str, ...], field: str
) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001", "--secc-id", "SECC0001")
    result = pkictl("station", "add", "CS003", *args, expect=5)
    assert f"{field}: " in result.stderr
    assert "station 'CS001'" in result.stderr  # the station that holds it
    refused = as_json(pkictl("station", "add", "CS003", *args, "--json", expect=5))
    assert (refused["exit_code"], refused["field"], refused["held_by"]) == (5, field, "CS001")
    assert "CS001" in refused["message"]
    assert [s["id"] for s in as_json(pkictl("station", "list", "--json"))] == ["CS001"]


def test_remove_revokes_its_certificates_and_publishes_the_crl(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001", "--secc-id", "SECC0001")
    pkictl("station", "add", "CS002", "--serial", "SN-0002")
    serials = [issue(pkictl, station_csr(tmp_path / f"{n}.csr"))["serial"] for n in (1, 2)]
    other = issue(pkictl, station_csr(tmp_path / "o.csr", "SN-0002"), station_id="CS002")
    removed = pkictl("station", "remove", "CS001")
    assert "removed station CS001" in removed.stderr
    assert "revoked 2 certificate(s) (cessationOfOperation)" in removed.stderr
    assert "published the CRL of cso-station-ca" in removed.stderr
    assert [s["id"] for s in as_json(pkictl("station", "list", "--json"))] == ["CS002"]
    pkictl("station", "show", "CS001", expect=3)
    assert "CS001" in pkictl("station", "remove", "CS001", expect=3).stderr
    # Its certificates stay on record, revoked; the other station's are untouched ...
    kept = as_json(pkictl("cert", "list", "--station", "CS001", "--json"))
    assert sorted((c["serial"], c["status"], c["revocation_reason"]) for c in kept) == sorted(
        (serial, "revoked", "cessationOfOperation") for serial in serials
    )
    assert as_json(pkictl("cert", "show", other["serial"], "--json"))["status"] == "valid"
    crl = x509.load_der_x509_crl((home / "crl" / "cso-station-ca.crl").read_bytes())
    assert {format(e.serial_number, "x") for e in crl} == set(serials)
    # ... nothing more is issued for it ...
    refused = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr", str(tmp_path / "1.csr"),
        "--station", "CS001", "--json", expect=4,
    )  # fmt: skip
    assert as_json(refused)["reason"] == "unknown-station"
    audit = as_json(pkictl("audit", "list", "--limit", "100", "--json"))
    (entry,) = [e for e in audit if e["action"] == "station.removed"]
    assert sorted(entry["detail"].pop("revoked")) == sorted(serials)
    assert entry["detail"] == {"certificates": "revoked", "kept": []}
    revocations = [e for e in audit if e["action"] == "certificate.revoked"]
    assert sorted(e["target"] for e in revocations) == sorted(f"serial:{s}" for s in serials)
    # ... and the id registered again (its serial and SECC id free again) starts clean.
    pkictl("station", "add", "CS001", "--serial", "SN-0001", "--secc-id", "SECC0001")
    fresh = as_json(pkictl("station", "show", "CS001", "--json"))["certificates"]
    assert {c["status"] for c in fresh} == {"revoked"}


def test_remove_keep_certificates(pkictl: Run, tmp_path: Path) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    serial = issue(pkictl, station_csr(tmp_path / "s.csr"))["serial"]
    removed = as_json(pkictl("station", "remove", "CS001", "--keep-certificates", "--json"))
    assert removed == {
        "station": "CS001", "revoked": [], "kept": [serial], "crls": [],
        "withdrawn": {"renewals": 0, "queued_calls": 0},
    }  # fmt: skip
    assert as_json(pkictl("cert", "show", serial, "--json"))["status"] == "valid"
    audit = as_json(pkictl("audit", "list", "--json"))
    (entry,) = [e for e in audit if e["action"] == "station.removed"]
    assert entry["detail"] == {"certificates": "kept", "revoked": [], "kept": [serial]}
    assert "certificate.revoked" not in [e["action"] for e in audit]


def test_remove_without_the_ca_key_revokes_and_says_the_crl_waits(
    home: Path, tmp_path: Path
) -> None:
    """The revocation stands; publishing waits for the key, as `cert revoke` does."""
    pkictl = make_runner(home)
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    serial = issue(pkictl, station_csr(tmp_path / "s.csr"))["serial"]
    before = (home / "crl" / "cso-station-ca.crl").read_bytes()
    without_key = make_runner(home, env={"PKICTL_PASSPHRASE": "not the passphrase"})
    removed = without_key("station", "remove", "CS001")
    assert "warning: CRL of cso-station-ca not regenerated" in removed.stderr
    assert "pkictl crl cso-station-ca" in removed.stderr
    assert as_json(pkictl("cert", "show", serial, "--json"))["status"] == "revoked"
    assert (home / "crl" / "cso-station-ca.crl").read_bytes() == before


def test_show_lists_the_station_certificates(pkictl: Run, tmp_path: Path) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    pkictl("station", "add", "CS002", "--serial", "SN-0002")
    first = issue(pkictl, station_csr(tmp_path / "1.csr"))["serial"]
    second = issue(pkictl, station_csr(tmp_path / "2.csr"))["serial"]
    issue(pkictl, station_csr(tmp_path / "3.csr", serial="SN-0002"), station_id="CS002")
    shown = as_json(pkictl("station", "show", "CS001", "--json"))
    assert sorted(c["serial"] for c in shown["certificates"]) == sorted([first, second])
    assert {c["station"] for c in shown["certificates"]} == {"CS001"}
    text = pkictl("station", "show", "CS001").stdout
    assert first[:12] in text  # tables show a short unique prefix (#22 item 27)
    assert second[:12] in text


def test_an_upgrade_over_duplicate_serials_exits_5_naming_them(pkictl: Run, home: Path) -> None:
    """A database from before migration 0020 whose stations share a serial: every command
    refuses (exit 5) and says which stations and how to resolve it; nothing changes."""
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    engine = create_engine(f"sqlite:///{home / 'pkictl.db'}")
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0019")
        connection.exec_driver_sql(
            "INSERT INTO stations (id, serial_number, security_profile, created_at, "
            "allow_expired) VALUES ('CS003', 'SN-0001', 3, '2999-01-01 00:00:00', 0)"
        )
    engine.dispose()
    refused = pkictl("station", "list", expect=5)
    assert "serial_number 'SN-0001' is held by stations CS001, CS003" in refused.stderr
    assert "pkictl db upgrade" in refused.stderr
    assert query(home, "SELECT version_num FROM alembic_version") == [("0019",)]
    execute(home, "DELETE FROM stations WHERE id = 'CS003'")
    assert [s["id"] for s in as_json(pkictl("station", "list", "--json"))] == ["CS001"]
