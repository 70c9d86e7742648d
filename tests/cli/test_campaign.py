"""`pkictl ca rollover` and `pkictl campaign status` without a running service: what is
refused and why, a forced switch, abandoning. The campaign over OCPP is in
tests/integration/test_rollover.py."""

from __future__ import annotations

from pathlib import Path

from cli_test_support import Run, as_json
from cryptography import x509


def test_what_rollover_refuses_names_the_reason(pkictl: Run) -> None:
    assert "only cso-root" in pkictl("ca", "rollover", "v2g-root", expect=2).stderr
    assert "--force: only with --switch" in pkictl("ca", "rollover", "cso-root", "--force",
                                                   expect=2).stderr  # fmt: skip
    assert "never rolled over" in pkictl("campaign", "status", expect=3).stderr
    assert (
        "no rollover of cso-root is open"
        in pkictl("ca", "rollover", "cso-root", "--switch", expect=3).stderr
    )


def test_a_forced_switch_records_who_was_left_behind(pkictl: Run, home: Path) -> None:
    pkictl("station", "add", "CS001", "--serial", "SN-0001")
    started = as_json(pkictl("ca", "rollover", "cso-root", "--json"))
    assert started["enrolled"] == 1
    assert "already open" in pkictl("ca", "rollover", "cso-root", expect=5).stderr

    status = as_json(pkictl("campaign", "status", "--json"))
    (cs001,) = status["stations"]
    assert (cs001["state"], cs001["online"], status["ready_to_switch"]) == ("pending", False, False)
    assert "never connected" in cs001["blocker"]
    assert "CS001" in pkictl("ca", "rollover", "cso-root", "--switch", expect=5).stderr

    switched = as_json(pkictl("ca", "rollover", "cso-root", "--switch", "--force", "--json"))
    assert switched["state"] == "switched"
    served_root = x509.load_pem_x509_certificate((home / "certs" / "cso-root.pem").read_bytes())
    assert format(served_root.serial_number, "x") == started["serial"]
    station_ca = x509.load_pem_x509_certificate(
        (home / "certs" / "cso-station-ca.pem").read_bytes()
    )
    station_ca.verify_directly_issued_by(served_root)
    entries = as_json(pkictl("audit", "list", "--json"))
    (entry,) = [e for e in entries if e["action"] == "ca.rollover.switched"]
    assert entry["detail"]["left_behind"] == ["CS001"]
    assert entry["detail"]["forced"] is True
    pkictl("audit", "verify")


def test_an_abandoned_rollover_leaves_the_root_in_force(pkictl: Run, home: Path) -> None:
    root_file = home / "certs" / "cso-root.pem"
    before = root_file.read_bytes()
    first = as_json(pkictl("ca", "rollover", "cso-root", "--json"))
    assert as_json(pkictl("ca", "rollover", "cso-root", "--abandon", "--json"))["state"] == (
        "abandoned"
    )
    assert root_file.read_bytes() == before
    again = as_json(pkictl("ca", "rollover", "cso-root", "--json"))
    assert (again["generation"], again["id"]) == (first["generation"] + 1, first["id"] + 1)
    assert "G3" in again["subject"]
