"""`pkictl cert issue|list|show|revoke` and `pkictl crl`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_test_support import (
    ORG,
    Run,
    add_station,
    as_json,
    execute,
    home_certificate,
    issue,
    load_pems,
    openssl_verify,
    query,
    station_csr,
    station_v2g_csr,
    write_csr,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEX = re.compile(r"^[0-9a-f]+$")
LISTED_KEYS = {
    "serial",
    "subject",
    "issuer",
    "profile",
    "station",
    "not_before",
    "not_after",
    "status",
    "source",
}
AUTHORITIES = 12  # certificates `pkictl init` records


@pytest.fixture
def stations(pkictl: Run) -> None:
    add_station(pkictl, "CS001", "SN-0001", secc_id="SECC0001")
    add_station(pkictl, "CS002", "SN-0002")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def certificate_count(home: Path) -> int:
    ((count,),) = query(home, "SELECT count(*) FROM certificates")
    return int(count)


def last_audit(pkictl: Run) -> dict[str, Any]:
    entry: dict[str, Any] = as_json(pkictl("audit", "list", "--limit", "1", "--json"))[0]
    return entry


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(path.read_bytes())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# --- issue ------------------------------------------------------------------------------


@pytest.mark.usefixtures("stations")
def test_issue_writes_the_chain_leaf_first_without_root_and_prints_the_serial(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "cso-root.pem"
    pkictl("ca", "export", "cso-root", "--out", str(root))
    chain_file = tmp_path / "chain.pem"
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr")), "--station", "CS001", "--out", str(chain_file),
    )  # fmt: skip
    chain = load_pems(chain_file.read_bytes())
    leaf, station_ca = chain  # exactly two: no root
    assert result.stdout == f"{leaf.serial_number:x}\n"
    assert station_ca == home_certificate(home, "cso-station-ca")
    assert all(c.issuer != c.subject for c in chain), "the self-signed root is in the chain"
    assert leaf.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "SN-0001"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        ]
    )
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.public_bytes(Encoding.PEM))
    done = openssl_verify(leaf_file, root, untrusted=chain_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{leaf_file}: OK"
    # Without the station CA the chain does not verify: the test above is not vacuous.
    assert openssl_verify(leaf_file, root).returncode != 0
    listed = as_json(pkictl("cert", "list", "--station", "CS001", "--json"))
    assert [c["serial"] for c in listed] == [f"{leaf.serial_number:x}"]
    assert certificate_count(home) == AUTHORITIES + 1


@pytest.mark.usefixtures("stations")
def test_issue_v2g_secc_chain_verifies_against_the_v2g_root(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "v2g-root.pem"
    pkictl("ca", "export", "v2g-root", "--out", str(root))
    chain_file = tmp_path / "chain.pem"
    pkictl(
        "cert", "issue", "--profile", "v2g-secc", "--csr",
        str(station_v2g_csr(tmp_path / "v.csr")), "--station", "CS001", "--out", str(chain_file),
    )  # fmt: skip
    chain = load_pems(chain_file.read_bytes())
    assert chain[1:] == [
        home_certificate(home, "cpo-sub-ca-2"),
        home_certificate(home, "cpo-sub-ca-1"),
    ]
    leaf = chain[0]
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "SECC0001"
    ]
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)] == [
        "CPO"
    ]
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.public_bytes(Encoding.PEM))
    done = openssl_verify(leaf_file, root, untrusted=chain_file)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.usefixtures("stations")
def test_issue_without_out_prints_the_chain_and_the_serial_on_stderr(
    pkictl: Run, tmp_path: Path
) -> None:
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr")), "--station", "CS001",
    )  # fmt: skip
    leaf, _ = load_pems(result.stdout)
    assert f"serial {leaf.serial_number:x}" in result.stderr


@pytest.mark.usefixtures("stations")
def test_issue_json(pkictl: Run, tmp_path: Path) -> None:
    view = issue(pkictl, station_csr(tmp_path / "s.csr"))
    leaf, _ = load_pems(view["chain_pem"])
    assert view["serial"] == f"{leaf.serial_number:x}"
    assert view["profile"] == "charging-station"
    assert view["station"] == "CS001"
    assert view["issuer_ca"] == "cso-station-ca"
    assert view["status"] == "valid"
    assert view["source"] == "issued"
    assert view["out"] is None
    not_before, not_after = parse_iso(view["not_before"]), parse_iso(view["not_after"])
    assert not_before == leaf.not_valid_before_utc
    assert not_after == leaf.not_valid_after_utc
    spread = timedelta(seconds=leaf.serial_number % (45 * 86400))  # validity_spread_days
    assert not_after - not_before == timedelta(days=365, seconds=60) - spread


@pytest.mark.usefixtures("stations")
def test_issue_days(pkictl: Run, tmp_path: Path) -> None:
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr")), "--station", "CS001", "--days", "30",
    )  # fmt: skip
    leaf, _ = load_pems(result.stdout)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, hours=1)
    now = datetime.now(UTC)
    assert now + timedelta(days=29) < leaf.not_valid_after_utc <= now + timedelta(days=30)


def _csr_cases(tmp: Path) -> dict[str, tuple[list[str], str, str | None]]:
    """name -> (issue args, expected reason, expected field)."""
    good = str(station_csr(tmp / "good.csr"))
    wrong_cn = str(station_csr(tmp / "wrong-cn.csr", serial="SN-9999"))
    wrong_org = str(station_csr(tmp / "wrong-o.csr", org="Someone Else"))
    p384 = str(
        write_csr(
            tmp / "p384.csr",
            [
                (NameOID.COMMON_NAME, "SECC0001"),
                (NameOID.ORGANIZATION_NAME, ORG),
                (NameOID.DOMAIN_COMPONENT, "CPO"),
            ],
            key=ec.generate_private_key(ec.SECP384R1()),
        )
    )
    secc = str(station_v2g_csr(tmp / "secc.csr"))
    garbage = tmp / "garbage.csr"
    garbage.write_text("this is not a CSR\n")
    cs = "charging-station"
    return {
        "subject-cn": (["--profile", cs, "--csr", wrong_cn, "--station", "CS001"],
                       "subject-mismatch", "CN"),
        "subject-o": (["--profile", cs, "--csr", wrong_org, "--station", "CS001"],
                      "subject-mismatch", "O"),
        "other-station": (["--profile", cs, "--csr", good, "--station", "CS002"],
                          "subject-mismatch", "CN"),
        "unknown-station": (["--profile", cs, "--csr", good, "--station", "CS404"],
                            "unknown-station", "station"),
        "unknown-profile": (["--profile", "nope", "--csr", good, "--station", "CS001"],
                            "unknown-profile", "profile"),
        "ca-profile": (["--profile", "cso-root", "--csr", good, "--station", "CS001"],
                       "profile-not-for-csr", "profile"),
        "too-long": (["--profile", cs, "--csr", good, "--station", "CS001", "--days", "731"],
                     "validity-invalid", None),
        "zero-days": (["--profile", cs, "--csr", good, "--station", "CS001", "--days", "0"],
                      "validity-invalid", None),
        "key-type": (["--profile", "v2g-secc", "--csr", p384, "--station", "CS001"],
                     "key-type-not-allowed", None),
        "no-secc-id": (["--profile", "v2g-secc", "--csr", secc, "--station", "CS002"],
                       "station-identity-incomplete", None),
        "not-pem": (["--profile", cs, "--csr", str(garbage), "--station", "CS001"],
                    "csr-not-pem", None),
    }  # fmt: skip


REFUSALS = [
    "subject-cn",
    "subject-o",
    "other-station",
    "unknown-station",
    "unknown-profile",
    "ca-profile",
    "too-long",
    "zero-days",
    "key-type",
    "no-secc-id",
    "not-pem",
]


@pytest.mark.usefixtures("stations")
@pytest.mark.parametrize("case", REFUSALS)
def test_refusal_exits_4_with_a_json_reason_and_writes_no_certificate(
    pkictl: Run, home: Path, tmp_path: Path, case: str
) -> None:
    args, reason, field = _csr_cases(tmp_path)[case]
    out = tmp_path / "chain.pem"
    result = pkictl("cert", "issue", *args, "--out", str(out), "--json", expect=4)
    payload = as_json(result)
    assert payload["error"] == "IssuanceRefused"
    assert payload["exit_code"] == 4
    assert payload["reason"] == reason
    if field is not None:
        assert payload["field"] == field
    assert payload["message"]
    assert f"error: {payload['message']}" in result.stderr
    assert not out.exists()
    assert certificate_count(home) == AUTHORITIES
    entry = last_audit(pkictl)
    assert entry["action"] == "certificate.refused"
    assert entry["outcome"] == "refused"
    assert entry["detail"]["reason"] == reason


@pytest.mark.usefixtures("stations")
def test_refusal_without_json_prints_the_reason_code(pkictl: Run, tmp_path: Path) -> None:
    """cli/errors.py: exit code 4 is 'refused by policy (the reason code is printed)'."""
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr", serial="SN-9999")), "--station", "CS001", expect=4,
    )  # fmt: skip
    assert result.stdout == ""
    assert "SN-9999" in result.stderr
    assert "subject-mismatch" in result.stderr


def test_issue_csr_file_must_exist(pkictl: Run, tmp_path: Path) -> None:
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr", str(tmp_path / "none.csr"),
        "--station", "CS001", expect=2,
    )  # fmt: skip
    assert "--csr" in result.stderr


# --- list and show ----------------------------------------------------------------------


@pytest.mark.usefixtures("stations")
def test_issue_to_a_missing_directory_is_refused_before_issuing(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr")), "--station", "CS001",
        "--out", str(tmp_path / "missing" / "chain.pem"), expect=2,
    )  # fmt: skip
    assert "--out" in result.stderr
    assert "missing" in result.stderr
    assert certificate_count(home) == AUTHORITIES


@pytest.mark.usefixtures("stations")
def test_issue_hands_the_chain_out_when_out_cannot_be_written(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    full = Path("/dev/full")  # accepts the open, fails every write with ENOSPC
    result = pkictl(
        "cert", "issue", "--profile", "charging-station", "--csr",
        str(station_csr(tmp_path / "s.csr")), "--station", "CS001",
        "--out", str(full), expect=1,
    )  # fmt: skip
    (leaf, _) = load_pems(result.stdout.encode())
    assert f"serial {leaf.serial_number:x}" in result.stderr
    assert "could not write" in result.stderr
    assert certificate_count(home) == AUTHORITIES + 1


@pytest.fixture
def issued(pkictl: Run, tmp_path: Path, stations: None) -> dict[str, str]:
    return {
        "cs1": issue(pkictl, station_csr(tmp_path / "1.csr"))["serial"],
        "secc1": issue(pkictl, station_v2g_csr(tmp_path / "2.csr"), profile="v2g-secc")["serial"],
        "cs2": issue(pkictl, station_csr(tmp_path / "3.csr", serial="SN-0002"), "CS002")["serial"],
    }


def test_list_json_schema(pkictl: Run, issued: dict[str, str]) -> None:
    rows = as_json(pkictl("cert", "list", "--json"))
    assert len(rows) == AUTHORITIES + 3
    for row in rows:
        assert set(row) >= LISTED_KEYS, row
        assert HEX.match(row["serial"]), row
        assert ISO_Z.match(row["not_before"]), row
        assert ISO_Z.match(row["not_after"]), row
        assert row["status"] in {"valid", "revoked", "expired", "superseded"}
        assert row["source"] in {"issued", "observed"}
        assert row["subject"]
        assert row["issuer"]
    expiries = [parse_iso(r["not_after"]) for r in rows]
    assert expiries == sorted(expiries), "not soonest expiry first"
    by_serial = {r["serial"]: r for r in rows}
    secc = by_serial[issued["secc1"]]
    assert secc["profile"] == "v2g-secc"
    assert secc["station"] == "CS001"
    assert secc["subject"] == f"DC=CPO,O={ORG},CN=SECC0001"
    assert secc["issuer"] == f"DC=V2G,C=DE,O={ORG},CN={ORG} CPO Sub-CA 2"
    assert (secc["status"], secc["source"]) == ("valid", "issued")
    # the CA hierarchy is on record too, without a station
    root = next(r for r in rows if r["profile"] == "cso-root")
    assert root["station"] is None
    assert root["subject"] == root["issuer"]


def test_list_filters(pkictl: Run, issued: dict[str, str]) -> None:
    def serials(*args: str) -> set[str]:
        return {r["serial"] for r in as_json(pkictl("cert", "list", *args, "--json"))}

    everything = as_json(pkictl("cert", "list", "--json"))
    assert serials("--station", "CS001") == {issued["cs1"], issued["secc1"]}
    assert serials("--station", "CS002") == {issued["cs2"]}
    assert serials("--station", "CS404") == set()
    assert serials("--profile", "charging-station") == {issued["cs1"], issued["cs2"]}
    assert serials("--profile", "v2g-secc", "--station", "CS002") == set()
    # v2g-secc certificates live 60 days, everything else 365 days or more
    assert serials("--expiring-within", "90") == {issued["secc1"]}
    horizon = datetime.now(UTC) + timedelta(days=400)
    within = {r["serial"] for r in everything if parse_iso(r["not_after"]) <= horizon}
    assert issued["cs1"] in within
    assert len(within) < len(everything)  # the CAs live longer
    assert serials("--expiring-within", "400") == within
    assert serials("--expiring-within", "0") == set()
    assert serials("--status", "revoked") == set()
    assert "--expiring-within" in pkictl("cert", "list", "--expiring-within", "-1", expect=2).stderr


def test_list_table(pkictl: Run, issued: dict[str, str]) -> None:
    out = pkictl("cert", "list", "--station", "CS002").stdout
    assert out.splitlines()[0].split() == [
        "SERIAL", "PROFILE", "STATION", "SUBJECT", "NOT", "AFTER", "DAYS", "LEFT", "STATUS",
        "SOURCE",
    ]  # fmt: skip
    # a short unique prefix of the serial (#22 item 27); --json has the whole one
    assert re.search(rf"^{issued['cs2'][:12]}\s+charging-station\s+CS002\s", out, re.MULTILINE)
    assert len(out.splitlines()) == 2


def test_show(pkictl: Run, issued: dict[str, str]) -> None:
    serial = issued["cs1"]
    pem = pkictl("cert", "show", serial, "--pem").stdout
    (certificate,) = load_pems(pem)
    assert f"{certificate.serial_number:x}" == serial
    view = as_json(pkictl("cert", "show", serial, "--json"))
    assert view["pem"] == pem
    assert view["serial"] == serial
    assert view["station"] == "CS001"
    assert set(view) >= LISTED_KEYS
    listed = next(r for r in as_json(pkictl("cert", "list", "--json")) if r["serial"] == serial)
    assert {k: view[k] for k in listed} == listed
    text = pkictl("cert", "show", serial).stdout
    assert re.search(rf"^serial\s+{serial}$", text, re.MULTILINE)
    # serials are accepted as people paste them: upper case, 0x, colons
    pasted = ":".join(re.findall("..", serial.zfill(len(serial) + len(serial) % 2))).upper()
    assert as_json(pkictl("cert", "show", pasted, "--json"))["serial"] == serial
    assert as_json(pkictl("cert", "show", f"0x{serial}", "--json"))["serial"] == serial


def test_show_unknown_or_malformed_serial(pkictl: Run) -> None:
    assert "no certificate with serial abc123" in pkictl("cert", "show", "abc123", expect=3).stderr
    payload = as_json(pkictl("cert", "show", "abc123", "--json", expect=3))
    assert (payload["error"], payload["exit_code"]) == ("NotFoundError", 3)
    assert "not hexadecimal" in pkictl("cert", "show", "xyz", expect=2).stderr


# --- revoke and CRLs ----------------------------------------------------------------------


def test_revoke_lists_the_certificate_in_the_regenerated_crl(
    pkictl: Run, home: Path, issued: dict[str, str]
) -> None:
    serial = issued["cs1"]
    crl_file = home / "crl" / "cso-station-ca.crl"
    before = crl_number(load_crl(crl_file))
    view = as_json(pkictl("cert", "revoke", serial, "--reason", "keyCompromise", "--json"))
    assert view["status"] == "revoked"
    assert view["revocation_reason"] == "keyCompromise"
    assert ISO_Z.match(view["revoked_at"])
    assert view["crl"]["ca"] == "cso-station-ca"
    assert view["crl"]["number"] == before + 1
    assert view["crl"]["revoked"] == 1
    crl = load_crl(crl_file)
    assert crl_number(crl) == before + 1
    assert crl.is_signature_valid(home_certificate(home, "cso-station-ca").public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert len(list(crl)) == 1  # only the revoked one, not its siblings
    assert as_json(pkictl("cert", "show", serial, "--json"))["status"] == "revoked"
    revoked = as_json(pkictl("cert", "list", "--status", "revoked", "--json"))
    assert {r["serial"] for r in revoked} == {serial}
    # the V2G CA's CRL is not touched
    v2g = load_crl(home / "crl" / "cpo-sub-ca-2.crl")
    assert crl_number(v2g) == 1
    assert len(list(v2g)) == 0


def test_revoke_without_json(pkictl: Run, issued: dict[str, str]) -> None:
    result = pkictl("cert", "revoke", issued["secc1"], "--reason", "superseded")
    assert f"revoked {issued['secc1']} (superseded)" in result.stderr


def test_revoke_twice_is_a_conflict(pkictl: Run, home: Path, issued: dict[str, str]) -> None:
    serial = issued["cs2"]
    pkictl("cert", "revoke", serial, "--reason", "cessationOfOperation")
    crl = (home / "crl" / "cso-station-ca.crl").read_bytes()
    result = pkictl("cert", "revoke", serial, "--reason", "keyCompromise", expect=5)
    assert "already revoked" in result.stderr
    assert (home / "crl" / "cso-station-ca.crl").read_bytes() == crl
    view = as_json(pkictl("cert", "show", serial, "--json"))
    assert view["revocation_reason"] == "cessationOfOperation"


def test_revoke_unknown_serial_or_reason(pkictl: Run, issued: dict[str, str]) -> None:
    pkictl("cert", "revoke", "abc123", "--reason", "keyCompromise", expect=3)
    assert (
        "--reason" in pkictl("cert", "revoke", issued["cs1"], "--reason", "bored", expect=2).stderr
    )
    assert as_json(pkictl("cert", "show", issued["cs1"], "--json"))["status"] == "valid"


def test_crl_numbers_strictly_increase_and_out_writes_der(
    pkictl: Run, home: Path, tmp_path: Path
) -> None:
    first = as_json(pkictl("crl", "cso-station-ca", "--json"))
    out = tmp_path / "station-ca.crl"
    second = as_json(pkictl("crl", "cso-station-ca", "--out", str(out), "--json"))
    assert first["number"] < second["number"]
    assert first["number"] >= 2  # init published number 1
    der = out.read_bytes()
    assert der[:1] == b"\x30"  # DER, not PEM
    crl = x509.load_der_x509_crl(der)
    assert crl_number(crl) == second["number"]
    assert crl.is_signature_valid(home_certificate(home, "cso-station-ca").public_key())  # type: ignore[arg-type]
    assert (home / "crl" / "cso-station-ca.crl").read_bytes() == der
    assert second["path"] == str(home / "crl" / "cso-station-ca.crl")
    numbers = [
        n for (n,) in query(home, "SELECT number FROM crls WHERE issuer_ca = 'cso-station-ca'")
    ]
    assert sorted(numbers) == [1, first["number"], second["number"]]
    # the text form, and another CA's counter is its own
    text = pkictl("crl", "cso-station-ca").stdout
    assert re.search(rf"^number\s+{second['number'] + 1}$", text, re.MULTILINE)
    assert as_json(pkictl("crl", "v2g-root", "--json"))["number"] == 2


@pytest.mark.parametrize("name", ["nope", "cso-station-ca-ocsp", "csms-server-ec"])
def test_crl_of_something_that_is_not_a_ca_exits_3(pkictl: Run, name: str) -> None:
    assert name in pkictl("crl", name, expect=3).stderr


def test_show_and_revoke_take_a_unique_serial_prefix_as_git_does(
    pkictl: Run, home: Path, issued: dict[str, str]
) -> None:
    """#22 item 26: the README's `cert show 3f2a…` works; an ambiguous prefix is refused
    with exit 2 naming the candidates, and nothing is revoked."""
    serial = issued["cs1"]
    assert as_json(pkictl("cert", "show", serial[:6], "--json"))["serial"] == serial
    # two serials sharing a prefix, made so behind pkictl's back
    execute(home, "UPDATE certificates SET serial_hex = ? WHERE serial_hex = ?",
            ["abcd01" + serial[6:], serial])  # fmt: skip
    execute(home, "UPDATE certificates SET serial_hex = ? WHERE serial_hex = ?",
            ["abcd02" + issued["cs2"][6:], issued["cs2"]])  # fmt: skip
    refused = pkictl("cert", "show", "abcd", expect=2)
    assert "SERIAL: abcd is ambiguous" in refused.stderr
    assert f"abcd01{serial[6:]}" in refused.stderr
    assert f"abcd02{issued['cs2'][6:]}" in refused.stderr
    assert as_json(pkictl("cert", "show", "abcd", "--json", expect=2))["exit_code"] == 2
    revoke = ("cert", "revoke", "abcd", "--reason", "keyCompromise")
    assert "ambiguous" in pkictl(*revoke, expect=2).stderr
    assert {r["status"] for r in as_json(pkictl("cert", "list", "--json"))} == {"valid"}
    shown = as_json(pkictl("cert", "show", "abcd01", "--json"))
    assert shown["serial"] == f"abcd01{serial[6:]}"
    revoked = as_json(pkictl("cert", "revoke", "ABCD01", "--reason", "superseded", "--json"))
    assert (revoked["serial"], revoked["status"]) == (f"abcd01{serial[6:]}", "revoked")
    assert as_json(pkictl("cert", "show", "abcd02", "--json"))["status"] == "valid"
    assert "no certificate" in pkictl("cert", "show", "abc", expect=3).stderr  # < 4 digits
    assert "no certificate" in pkictl("cert", "show", "abcd03", expect=3).stderr
