"""The 90-day expiry window from the CLI (issue 22, item 24): `renew --due --dry-run`
shows what starts within `--within DAYS` (default 7) with `starts_at`, so a renewal
deferred by its jitter is visible, and counts the window; `cert list --expiring-within
90 --summary` counts it by status and profile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cli_test_support import Run, add_station, as_json, execute, issue, station_csr


def fleet(pkictl: Run, home: Path, tmp_path: Path) -> dict[str, str]:
    """Station -> serial of a certificate valid for: 60 days (its renewal point moved
    into the past: due now; in the window), 91 days (its renewal starts in 1-4 days:
    its jitter), 200 days (nothing soon)."""
    serials = {}
    for n, days in ((1, 60), (2, 91), (3, 200)):
        station = f"CS00{n}"
        add_station(pkictl, station, f"SN-000{n}")
        csr = station_csr(tmp_path / f"{station}.csr", f"SN-000{n}")
        view = issue(pkictl, csr, station)
        serials[station] = view["serial"]
        pkictl("cert", "revoke", view["serial"], "--reason", "superseded")  # replaced below
        serials[station] = as_json(
            pkictl("cert", "issue", "--profile", "charging-station", "--csr", str(csr),
                   "--station", station, "--days", str(days), "--json")
        )["serial"]  # fmt: skip
    moved = execute(home, "UPDATE certificates SET renew_after = '2020-01-01 00:00:00.000000' "
                          "WHERE serial_hex = ?", (serials["CS001"].lower(),))  # fmt: skip
    assert moved == 1
    return serials


def test_dry_run_shows_what_starts_within_the_days_asked_with_starts_at(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    serials = fleet(pkictl, home, tmp_path)
    now = datetime.now(UTC)
    rows = as_json(pkictl("renew", "--due", "--dry-run", "--json"))
    assert [(r["station"], r["status"]) for r in rows] == [("CS001", "due"), ("CS002", "waiting")]
    assert [r["serial"] for r in rows] == [serials["CS001"], serials["CS002"]]
    waiting = datetime.fromisoformat(rows[1]["starts_at"])
    assert now + timedelta(hours=23) < waiting < now + timedelta(days=4, hours=1)
    assert rows[1]["renewal"] is None
    assert [r["station"] for r in as_json(pkictl("renew", "--due", "--dry-run", "--within",
                                                 "0", "--json"))] == ["CS001"]  # fmt: skip
    assert len(as_json(pkictl("renew", "--due", "--dry-run", "--within", "365", "--json"))) == 3
    human = pkictl("renew", "--due", "--dry-run")
    assert "STARTS AT" in human.stdout
    assert "1 certificates in use expire within 90 days: 0 renewing, 0 starting later, " \
           "1 not progressing" in human.stderr  # fmt: skip
    refused = pkictl("renew", "--due", "--within", "3", expect=2)
    assert "--within goes with --dry-run" in refused.output


def test_cert_list_counts_the_90_day_window(pkictl: Run, home: Path, tmp_path: Path) -> None:
    fleet(pkictl, home, tmp_path)
    summary = as_json(pkictl("cert", "list", "--expiring-within", "90", "--summary", "--json"))
    assert summary["expiring_within_days"] == 90
    assert summary["by_status"] == {"valid": 1}
    assert summary["total"] == 1
    everything = as_json(pkictl("cert", "list", "--summary", "--json"))
    assert everything["by_status"]["revoked"] == 3
    assert everything["by_status"]["valid"] >= 3
    human = pkictl("cert", "list", "--expiring-within", "90", "--summary")
    assert "charging-station" in human.stdout
    assert "1 certificates expiring within 90 days" in human.stderr
