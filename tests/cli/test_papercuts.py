"""CLI papercuts a security team hits daily (#22 item 27): --out never overwrites
silently, tables show days left and short serials (whole ones in --json), no Python
reprs in human output, a failed renewal says why."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_test_support import Run, add_station, as_json, issue, station_csr

from cli.renewals import renewal_line

ISSUE = ("cert", "issue", "--profile", "charging-station", "--station", "CS001")


@pytest.mark.parametrize(
    "command",
    [
        ("ca", "export", "cso-root"),
        ("crl", "cso-root"),
        ("tx", "export"),
        ISSUE,
    ],
)
def test_out_refuses_an_existing_file_without_force(
    pkictl: Run, home: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    add_station(pkictl)
    extra = ("--csr", str(station_csr(tmp_path / "cs.csr"))) if command == ISSUE else ()
    out = tmp_path / "existing"
    out.write_bytes(b"keep me")
    certificates = len(as_json(pkictl("cert", "list", "--json")))

    refused = pkictl(*command, *extra, "--out", str(out), expect=5)
    assert refused.stderr.strip() == f"error: --out: {out} exists; give --force to overwrite it"
    assert out.read_bytes() == b"keep me"
    # refused before anything was done: no certificate issued
    assert len(as_json(pkictl("cert", "list", "--json"))) == certificates

    pkictl(*command, *extra, "--out", str(out), "--force")
    assert out.read_bytes() != b"keep me"
    assert len(out.read_bytes()) > 0
    fresh = tmp_path / "fresh"
    pkictl(*command, *extra, "--out", str(fresh))  # a new file needs no --force
    assert fresh.stat().st_size > 0


def test_cert_list_has_days_left_and_short_serials_json_the_whole(
    pkictl: Run, tmp_path: Path
) -> None:
    add_station(pkictl)
    issued = issue(pkictl, station_csr(tmp_path / "cs.csr"))
    rows = as_json(pkictl("cert", "list", "--json"))
    (mine,) = [r for r in rows if r["serial"] == issued["serial"]]
    assert len(mine["serial"]) >= 30  # the whole serial in --json
    not_after = datetime.fromisoformat(mine["not_after"].replace("Z", "+00:00"))
    expected = (not_after - datetime.now(UTC)).days
    assert mine["days_left"] in (expected, expected - 1)

    table = pkictl("cert", "list").stdout
    header, *lines = table.splitlines()
    assert "DAYS LEFT" in header
    assert all(len(line) <= 200 for line in table.splitlines())
    shown = [line.split()[0] for line in lines]
    assert issued["serial"] not in table  # shortened ...
    assert issued["serial"][:12] in shown  # ... to a prefix at least 12 digits long
    assert all(len(s) >= 12 for s in shown)
    assert len(set(shown)) == len(shown)  # ... that tells the rows apart
    line = next(line for line in lines if line.startswith(issued["serial"][:12]))
    assert re.search(rf"\b{mine['days_left']}\b", line)


def test_audit_verify_shows_the_head_without_a_python_repr(pkictl: Run) -> None:
    report = as_json(pkictl("audit", "verify", "--json"))
    head = report["head"]
    text = pkictl("audit", "verify").stderr
    assert f"head {head['seq']}:{head['hash']}: intact" in text
    assert "{" not in text
    assert "'" not in text


def test_station_show_says_yes_or_no_not_true_or_false(pkictl: Run) -> None:
    add_station(pkictl)
    shown = pkictl("station", "show", "CS001").stdout
    assert "True" not in shown
    assert "False" not in shown
    assert re.search(r"has password\s+no", shown), shown


def test_a_failed_renewal_line_says_why() -> None:
    row = {"id": 7, "station": "CS001", "state": "failed", "reason": "trigger rejected"}
    assert renewal_line(row) == "renewal #7 of CS001: failed (trigger rejected)"
    assert renewal_line({**row, "state": "confirmed", "reason": None}) == (
        "renewal #7 of CS001: confirmed"
    )


def test_json_output_keeps_exact_values(pkictl: Run) -> None:
    add_station(pkictl)
    (station,) = as_json(pkictl("station", "list", "--json"))
    assert station["has_password"] is False
    assert json.dumps(station)  # plain JSON
