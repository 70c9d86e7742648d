"""`pkictl ca list|show|export` and the certificates `pkictl init` created."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

import pytest
from cli_test_support import (
    ORG,
    Run,
    as_json,
    home_certificate,
    load_pems,
    openssl_verify,
    query,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
BASE_URL = "http://csms.example.com:8080"
ISSUERS = {
    "cso-root": None,
    "cso-station-ca": "cso-root",
    "v2g-root": None,
    "cpo-sub-ca-1": "v2g-root",
    "cpo-sub-ca-2": "cpo-sub-ca-1",
    "cso-root-ocsp": "cso-root",
    "cso-station-ca-ocsp": "cso-station-ca",
    "v2g-root-ocsp": "v2g-root",
    "cpo-sub-ca-1-ocsp": "cpo-sub-ca-1",
    "cpo-sub-ca-2-ocsp": "cpo-sub-ca-2",
    "csms-server-ec": "cso-root",
    "csms-server-rsa": "cso-root",
}
CAS = ("cso-root", "cso-station-ca", "v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2")


def db_certificate(home: Path, name: str) -> bytes:
    rows = query(home, "SELECT certificate_der FROM authorities WHERE name = ?", [name])
    assert len(rows) == 1, name
    return bytes(rows[0][0])


def test_ca_list_json_describes_every_authority(pkictl: Run, home: Path) -> None:
    rows = as_json(pkictl("ca", "list", "--json"))
    by_name = {row["name"]: row for row in rows}
    assert len(rows) == len(by_name) == 12
    assert {name: row["issuer"] for name, row in by_name.items()} == ISSUERS
    roles = {name: row["role"] for name, row in by_name.items()}
    assert roles == {
        **dict.fromkeys(("cso-root", "v2g-root"), "root"),
        **dict.fromkeys(("cso-station-ca", "cpo-sub-ca-1", "cpo-sub-ca-2"), "intermediate"),
        **{f"{ca}-ocsp": "ocsp-signer" for ca in CAS},
        **dict.fromkeys(("csms-server-ec", "csms-server-rsa"), "csms-server"),
    }
    for name, row in by_name.items():
        certificate = home_certificate(home, name)
        assert row["serial"] == format(certificate.serial_number, "x")
        assert row["subject"] == certificate.subject.rfc4514_string()
        assert ISO_Z.match(row["not_before"]), row
        assert ISO_Z.match(row["not_after"]), row
        assert row["not_after"] == certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_ca_list_table(pkictl: Run) -> None:
    out = pkictl("ca", "list").stdout
    assert out.splitlines()[0].split()[:3] == ["NAME", "ROLE", "ISSUER"]
    for name in ISSUERS:
        assert re.search(rf"^{re.escape(name)}\s", out, re.MULTILINE), name


def test_ca_show(pkictl: Run, home: Path) -> None:
    view = as_json(pkictl("ca", "show", "csms-server-rsa", "--json"))
    certificate = home_certificate(home, "csms-server-rsa")
    assert view["name"] == "csms-server-rsa"
    assert view["role"] == "csms-server"
    assert view["issuer"] == "cso-root"
    assert "3072" in view["key"]
    assert (
        view["fingerprint_sha256"]
        == hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    )
    text = pkictl("ca", "show", "cso-station-ca").stdout
    assert re.search(r"^name\s+cso-station-ca$", text, re.MULTILINE)
    assert re.search(r"^issuer\s+cso-root$", text, re.MULTILINE)


def test_ca_export_prints_the_database_certificate_as_pem(pkictl: Run, home: Path) -> None:
    for name in ("cso-root", "cpo-sub-ca-2", "csms-server-ec"):
        result = pkictl("ca", "export", name)
        assert result.stdout.startswith("-----BEGIN CERTIFICATE-----")
        (exported,) = load_pems(result.stdout)
        assert exported.public_bytes(Encoding.DER) == db_certificate(home, name)


def test_ca_export_out_writes_the_file(pkictl: Run, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "root.pem"
    result = pkictl("ca", "export", "cso-root", "--out", str(out))
    assert result.stdout == ""
    assert f"wrote {out}" in result.stderr
    (exported,) = load_pems(out.read_bytes())
    assert exported.public_bytes(Encoding.DER) == db_certificate(home, "cso-root")


def test_ca_export_chain_appends_issuers_without_the_root(pkictl: Run, home: Path) -> None:
    certificates = load_pems(pkictl("ca", "export", "cpo-sub-ca-2", "--chain").stdout)
    assert [c.public_bytes(Encoding.DER) for c in certificates] == [
        db_certificate(home, "cpo-sub-ca-2"),
        db_certificate(home, "cpo-sub-ca-1"),
    ]


@pytest.mark.parametrize("command", ["show", "export"])
def test_ca_unknown_name_exits_3_listing_known_names(pkictl: Run, command: str) -> None:
    result = pkictl("ca", command, "no-such-ca", expect=3)
    assert "no-such-ca" in result.stderr
    for name in ISSUERS:
        assert name in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "key_type", "size"),
    [
        ("csms-server-ec", ec.EllipticCurvePublicKey, 256),
        ("csms-server-rsa", rsa.RSAPublicKey, 3072),
    ],
)
def test_csms_server_certificates(
    initialized_home: Path, tmp_path: Path, name: str, key_type: type, size: int
) -> None:
    certificate = home_certificate(initialized_home, name)
    key = certificate.public_key()
    assert isinstance(key, key_type)
    assert key.key_size == size  # type: ignore[union-attr]
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert key.curve.name == "secp256r1"
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["csms.example.com"]  # the first --csms-host
    org = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in org] == [ORG]
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["csms.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    root = home_certificate(initialized_home, "cso-root")
    certificate.verify_directly_issued_by(root)
    done = openssl_verify(
        initialized_home / "certs" / f"{name}.pem",
        initialized_home / "certs" / "cso-root.pem",
        purpose="sslserver",
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hierarchy_signatures_and_basic_constraints(initialized_home: Path) -> None:
    for name, issuer in ISSUERS.items():
        certificate = home_certificate(initialized_home, name)
        signer = home_certificate(initialized_home, issuer or name)
        certificate.verify_directly_issued_by(signer)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is (name in CAS), name
    path_length = {
        n: home_certificate(initialized_home, n)
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.path_length
        for n in ("cso-station-ca", "cpo-sub-ca-1", "cpo-sub-ca-2")
    }
    assert path_length == {"cso-station-ca": 0, "cpo-sub-ca-1": 1, "cpo-sub-ca-2": 0}


@pytest.mark.parametrize(
    ("name", "issuer"),
    [
        ("cso-station-ca", "cso-root"),
        ("cpo-sub-ca-1", "v2g-root"),
        ("cpo-sub-ca-2", "cpo-sub-ca-1"),
    ],
)
def test_sub_cas_point_ocsp_and_crl_at_the_base_url(
    initialized_home: Path, name: str, issuer: str
) -> None:
    certificate = home_certificate(initialized_home, name)
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    assert ocsp == [f"{BASE_URL}/ocsp"]
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in p.full_name or ()] == [f"{BASE_URL}/crl/{issuer}.crl"]


def test_v2g_certificates_carry_the_iso15118_role(initialized_home: Path) -> None:
    for name in ("v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"):
        subject = home_certificate(initialized_home, name).subject
        assert [a.value for a in subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)] == [
            "V2G"
        ]


@pytest.mark.parametrize("ca", CAS)
def test_each_ca_has_a_delegated_ocsp_signer(initialized_home: Path, ca: str) -> None:
    signer = home_certificate(initialized_home, f"{ca}-ocsp")
    signer.verify_directly_issued_by(home_certificate(initialized_home, ca))
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)  # raises if absent
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
