"""`pkictl policy check|show`, policy changes in the home, and the audit log."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_test_support import (
    Run,
    add_station,
    as_json,
    execute,
    issue,
    load_pems,
    make_runner,
    query,
    station_csr,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.toml"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SHORTER = (
    "validity_days = 365\nmax_validity_days = 730",
    "validity_days = 200\nmax_validity_days = 730",
)
BROKEN = (
    "validity_days = 365\nmax_validity_days = 730",
    "validity_days = 365\nmax_validity_days = 100",
)
BROKEN_KEY = "profiles.charging-station.max_validity_days"


def edited_policy(old_new: tuple[str, str]) -> str:
    text = DEFAULT_POLICY.read_text()
    old, new = old_new
    assert text.count(old) == 1
    return text.replace(old, new)


def audit(pkictl: Run, *args: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = as_json(pkictl("audit", "list", *args, "--json"))
    return entries


# --- policy check / show ----------------------------------------------------------------


def test_policy_check_of_the_home_policy(pkictl: Run, home: Path) -> None:
    result = pkictl("policy", "check")
    assert f"{home / 'policy.toml'}: valid (9 profiles, TLS minimum 1.3)" in result.stderr
    payload = as_json(pkictl("policy", "check", "--json"))
    assert payload["valid"] is True
    assert payload["source"] == str(home / "policy.toml")
    text = (home / "policy.toml").read_text()
    assert payload["digest"] == hashlib.sha256(text.encode()).hexdigest()
    assert payload["profiles"] == sorted(tomllib.loads(text)["profiles"])


def test_policy_check_of_a_file(pkictl: Run, tmp_path: Path) -> None:
    good = tmp_path / "shorter.toml"
    good.write_text(edited_policy(SHORTER))
    assert f"{good}: valid" in pkictl("policy", "check", str(good)).stderr


def test_policy_check_outside_a_home_checks_the_shipped_default(tmp_path: Path) -> None:
    result = make_runner(tmp_path / "nowhere")("policy", "check", "--json")
    assert as_json(result)["source"] == "policies/default.toml"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (edited_policy(BROKEN), BROKEN_KEY),
        (edited_policy(('min_version = "1.3"', 'min_version = "1.1"')), "tls.min_version"),
        (edited_policy(('kind = "ocsp-signer"', 'kind = "magic"')), "profiles.ocsp-signer.kind"),
        (edited_policy(("schema = 1", "schema = 2")), "schema"),
        ("schema = 1\n[profiles\n", "not valid TOML"),
    ],
    ids=["max-validity", "tls", "kind", "schema", "toml-syntax"],
)
def test_policy_check_of_a_broken_file_exits_6_naming_file_and_key(
    pkictl: Run, tmp_path: Path, text: str, key: str
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(text)
    result = pkictl("policy", "check", str(broken), expect=6)
    assert result.stderr.startswith(f"error: {broken}: {key}")
    payload = as_json(pkictl("policy", "check", str(broken), "--json", expect=6))
    assert (payload["error"], payload["exit_code"]) == ("PolicyError", 6)
    assert str(broken) in payload["message"]


def test_policy_check_of_a_missing_file_exits_6(pkictl: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert str(missing) in pkictl("policy", "check", str(missing), expect=6).stderr


def test_policy_show_lists_all_profiles(pkictl: Run, home: Path) -> None:
    shown = as_json(pkictl("policy", "show", "--json"))
    shipped = tomllib.loads(DEFAULT_POLICY.read_text())["profiles"]
    assert [p["name"] for p in shown["profiles"]] == list(shipped)
    assert shown["tls_min_version"] == "1.3"
    assert shown["source"] == str(home / "policy.toml")
    by_name = {p["name"]: p for p in shown["profiles"]}
    for name, raw in shipped.items():
        assert by_name[name]["kind"] == raw["kind"], name
        assert by_name[name]["validity_days"] == raw["validity_days"], name
        assert by_name[name]["key_usage"] == raw["key_usage"], name
    assert by_name["charging-station"]["max_validity_days"] == 730
    assert by_name["charging-station"]["issuer"] == "cso-station-ca"
    assert by_name["charging-station"]["subject"] == {
        "CN": "{station.serial}",
        "O": "{organization}",
    }
    assert by_name["v2g-secc"]["iso15118"] is True
    table = pkictl("policy", "show").stdout
    for name in shipped:
        assert re.search(rf"^{re.escape(name)}\s", table, re.MULTILINE), name


def test_policy_show_of_a_file(pkictl: Run, tmp_path: Path) -> None:
    shorter = tmp_path / "shorter.toml"
    shorter.write_text(edited_policy(SHORTER))
    shown = as_json(pkictl("policy", "show", str(shorter), "--json"))
    by_name = {p["name"]: p for p in shown["profiles"]}
    assert by_name["charging-station"]["validity_days"] == 200


# --- a policy edited in the home ----------------------------------------------------------


def test_edited_home_policy_is_audited_once_and_applied(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    policy = home / "policy.toml"
    old_digest = hashlib.sha256(policy.read_bytes()).hexdigest()
    assert [e for e in audit(pkictl) if e["action"] == "policy.changed"] == []
    policy.write_text(edited_policy(SHORTER))
    new_digest = hashlib.sha256(policy.read_bytes()).hexdigest()
    pkictl("ca", "list")
    changed = [e for e in audit(pkictl) if e["action"] == "policy.changed"]
    assert len(changed) == 1
    assert changed[0]["actor"] == "test"
    assert changed[0]["detail"] == {"from": old_digest, "to": new_digest, "file": str(policy)}
    pkictl("station", "list")
    assert len([e for e in audit(pkictl) if e["action"] == "policy.changed"]) == 1
    # the edited policy is the one in force
    add_station(pkictl)
    leaf, _ = load_pems(issue(pkictl, station_csr(tmp_path / "s.csr"))["chain_pem"])
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    spread = timedelta(days=45)  # the profile's validity_spread_days
    assert timedelta(days=200) - spread < lifetime <= timedelta(days=200, hours=1)
    assert audit(pkictl, "--limit", "1")[0]["action"] == "certificate.issued"


def test_broken_home_policy_stops_every_command_with_exit_6(pkictl: Run, home: Path) -> None:
    policy = home / "policy.toml"
    policy.write_text(edited_policy(BROKEN))
    before = query(home, "SELECT count(*) FROM audit_log")
    for command in (("ca", "list"), ("policy", "check"), ("cert", "list")):
        result = pkictl(*command, expect=6)
        assert str(policy) in result.stderr, command
        assert BROKEN_KEY in result.stderr, command
    assert query(home, "SELECT count(*) FROM audit_log") == before


# --- the audit log ----------------------------------------------------------------------


@pytest.fixture
def history(pkictl: Run, tmp_path: Path) -> str:
    """init, station add, an issue, a refusal, a revocation; the revoked serial."""
    add_station(pkictl)
    serial: str = issue(pkictl, station_csr(tmp_path / "s.csr"))["serial"]
    pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "bad.csr", serial="SN-9999")), "--station", "CS001", expect=4,
    )  # fmt: skip
    pkictl("cert", "revoke", serial, "--reason", "keyCompromise")
    return serial


def test_audit_list_records_init_issue_refuse_revoke(pkictl: Run, history: str) -> None:
    entries = audit(pkictl, "--limit", "1000")
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["ca.init", "policy.adopted"]
    assert actions[2:7] == ["crl.generated"] * 5  # one per CA at init
    assert actions[7:] == [
        "station.added",
        "certificate.issued",
        "certificate.refused",
        "certificate.revoked",
        "crl.generated",
    ]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    for previous, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == previous["hash"]
    for entry in entries:
        assert ISO_Z.match(entry["at"]), entry
        assert entry["actor"] == "test"
    by_action = {e["action"]: e for e in entries}
    init = by_action["ca.init"]["detail"]
    assert init["organization"] == "Example CPO"
    assert init["hierarchies"] == ["cso", "v2g"]
    assert len(init["authorities"]) == 12
    issued = by_action["certificate.issued"]
    assert issued["target"] == "station:CS001"
    assert issued["detail"]["serial"] == history
    assert issued["detail"]["profile"] == "charging-station"
    refused = by_action["certificate.refused"]
    assert refused["outcome"] == "refused"
    assert refused["detail"]["reason"] == "subject-mismatch"
    assert refused["detail"]["field"] == "CN"
    revoked = by_action["certificate.revoked"]
    assert revoked["target"] == f"serial:{history}"
    assert revoked["detail"]["reason"] == "keyCompromise"
    assert by_action["crl.generated"]["target"] == "ca:cso-station-ca"


def test_audit_list_limit_and_table(pkictl: Run, history: str) -> None:
    everything = audit(pkictl, "--limit", "1000")
    assert audit(pkictl, "--limit", "3") == everything[-3:]
    table = pkictl("audit", "list", "--limit", "2").stdout.splitlines()
    assert table[0].split() == ["SEQ", "AT", "ACTION", "ACTOR", "TARGET", "OUTCOME"]
    assert [line.split()[2] for line in table[1:]] == ["certificate.revoked", "crl.generated"]


def test_audit_verify_intact(pkictl: Run, history: str) -> None:
    entries = audit(pkictl, "--limit", "1000")
    report = as_json(pkictl("audit", "verify", "--json"))
    assert report == {
        "entries": len(entries),
        "head": {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]},
        "problems": [],
        "intact": True,
    }
    assert "intact" in pkictl("audit", "verify").stderr


def test_audit_verify_detects_an_edited_row(pkictl: Run, home: Path, history: str) -> None:
    ((detail,),) = query(home, "SELECT detail FROM audit_log WHERE action = 'certificate.revoked'")
    forged = json.dumps({**json.loads(detail), "reason": "superseded"})
    update = "UPDATE audit_log SET detail = ? WHERE action = 'certificate.revoked'"
    assert execute(home, update, [forged]) == 1
    ((seq,),) = query(home, "SELECT seq FROM audit_log WHERE action = 'certificate.revoked'")
    result = pkictl("audit", "verify", expect=7)
    assert f"entry {seq}: content does not match its hash (edited)" in result.stderr
    assert "TAMPERED" in result.stderr
    report = as_json(pkictl("audit", "verify", "--json", expect=7))
    assert report["intact"] is False
    assert report["problems"] == [f"entry {seq}: content does not match its hash (edited)"]


def test_audit_verify_detects_a_deleted_last_row(pkictl: Run, home: Path, history: str) -> None:
    ((last,),) = query(home, "SELECT max(seq) FROM audit_log")
    assert execute(home, "DELETE FROM audit_log WHERE seq = ?", [last]) == 1
    result = pkictl("audit", "verify", expect=7)
    assert f"log ends at entry {last - 1} but the head records entry {last}" in result.stderr
    assert "deleted" in result.stderr


def test_audit_verify_detects_a_deleted_middle_row(pkictl: Run, home: Path, history: str) -> None:
    assert execute(home, "DELETE FROM audit_log WHERE action = 'certificate.refused'") == 1
    report = as_json(pkictl("audit", "verify", "--json", expect=7))
    ((seq,),) = query(home, "SELECT seq FROM audit_log WHERE action = 'certificate.revoked'")
    assert f"entry {seq - 1} is missing (next is {seq})" in report["problems"]


def test_audit_verify_detects_a_rewritten_actor(pkictl: Run, home: Path) -> None:
    """Edited right after init: the very first entry."""
    assert execute(home, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1") == 1
    result = pkictl("audit", "verify", expect=7)
    assert "entry 1: content does not match its hash (edited)" in result.stderr
