"""Acceptance: every certificate the CA issues passes ``openssl verify -x509_strict`` with
its chain, and the pkilint RFC 5280 linter reports no error.

The one pkilint allowance (ISO 15118 role tags in DC, see tests/vectors/README.md) lives
in conftest.py; the tests at the end show that it is as narrow as documented and that
both checkers do reject what they should.

One CA is initialized for the module (RSA-3072 key generation is the slow part) and its
certificates are collected as plain values; the checks themselves are synchronous.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.audit import AuditEvent
from pki.authority import CertificateAuthority, CsoIdentity
from pki.clock import FixedClock
from pki.keys import MemoryKeyStore
from pki.policy import Policy
from pki.records import AuthorityRole, Station
from pki.store.sql import open_store

NOW = datetime.now(UTC).replace(microsecond=500_000)
STATION_ID = "CS001"
STATION_SERIAL = "SN-0001"
SECC_ID = "SECC0001"
CSMS_HOSTS = ("csms.example.com", "127.0.0.1")

AUTHORITIES = {
    "cso-root": AuthorityRole.ROOT,
    "cso-station-ca": AuthorityRole.INTERMEDIATE,
    "v2g-root": AuthorityRole.ROOT,
    "cpo-sub-ca-1": AuthorityRole.INTERMEDIATE,
    "cpo-sub-ca-2": AuthorityRole.INTERMEDIATE,
    "cso-root-ocsp": AuthorityRole.OCSP_SIGNER,
    "cso-station-ca-ocsp": AuthorityRole.OCSP_SIGNER,
    "v2g-root-ocsp": AuthorityRole.OCSP_SIGNER,
    "cpo-sub-ca-1-ocsp": AuthorityRole.OCSP_SIGNER,
    "cpo-sub-ca-2-ocsp": AuthorityRole.OCSP_SIGNER,
    "csms-server-ec": AuthorityRole.CSMS_SERVER,
    "csms-server-rsa": AuthorityRole.CSMS_SERVER,
}
V2G_AUTHORITIES = {"v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"}

# Leaves issued from station CSRs: (profile, key) per case.
LEAVES = {
    "charging-station-p256": ("charging-station", "p256"),
    "charging-station-p384": ("charging-station", "p384"),
    "charging-station-p521": ("charging-station", "p521"),
    "charging-station-rsa2048": ("charging-station", "rsa2048"),
    "v2g-secc-p256": ("v2g-secc", "p256"),
}

PURPOSES = {
    AuthorityRole.ROOT: "any",
    AuthorityRole.INTERMEDIATE: "any",
    AuthorityRole.OCSP_SIGNER: "ocsphelper",
    AuthorityRole.CSMS_SERVER: "sslserver",
}
LEAF_PURPOSES = {"charging-station": "sslclient", "v2g-secc": "sslserver"}


@dataclass(frozen=True)
class Hierarchy:
    """What the module's CA created, as certificates."""

    authorities: dict[str, tuple[AuthorityRole, x509.Certificate]]
    issuers: dict[str, str | None]
    leaves: dict[str, tuple[x509.Certificate, ...]]
    """Issued chains: leaf first, then the issuing CAs (never the root)."""

    def certificate(self, name: str) -> x509.Certificate:
        return self.authorities[name][1]

    def root_of(self, name: str) -> x509.Certificate:
        while (issuer := self.issuers[name]) is not None:
            name = issuer
        return self.certificate(name)

    def intermediates_of(self, name: str) -> list[x509.Certificate]:
        """The CAs between ``name`` and its root, nearest first."""
        out = []
        issuer = self.issuers[name]
        while issuer is not None and self.issuers[issuer] is not None:
            out.append(self.certificate(issuer))
            issuer = self.issuers[issuer]
        return out


@pytest.fixture(scope="module")
def hierarchy(
    tmp_path_factory: pytest.TempPathFactory,
    policy: Policy,
    make_csr: Callable[..., str],
) -> Hierarchy:
    keys = {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    path = tmp_path_factory.mktemp("conformance") / "db.sqlite"

    async def build() -> Hierarchy:
        store = await open_store(f"sqlite+aiosqlite:///{path}")
        try:
            clock = FixedClock(NOW)
            ca = CertificateAuthority(
                store=store,
                keys=MemoryKeyStore(),
                policy=policy,
                clock=clock,
                identity=CsoIdentity("Example CPO", "DE", CSMS_HOSTS, "http://csms.example.com"),
            )
            await ca.initialize(frozenset({"cso", "v2g"}), "test")
            await store.add_station(
                Station(STATION_ID, STATION_SERIAL, SECC_ID, 3, None, NOW),
                AuditEvent("station.added", "test", STATION_ID),
                NOW,
            )
            leaves = {}
            for case, (profile, key) in LEAVES.items():
                if profile == "v2g-secc":
                    csr = make_csr(keys[key], cn=SECC_ID, dc="CPO")
                else:
                    csr = make_csr(keys[key])
                issued = await ca.issue_for_station(
                    csr_pem=csr, profile_name=profile, station_id=STATION_ID, actor="test"
                )
                leaves[case] = issued.chain
            authorities = await store.list_authorities()
            return Hierarchy(
                authorities={a.name: (a.role, a.certificate()) for a in authorities},
                issuers={a.name: a.issuer for a in authorities},
                leaves=leaves,
            )
        finally:
            await store.close()

    return asyncio.run(build())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "openssl"


def assert_openssl_ok(result: tuple[int, str]) -> None:
    code, output = result
    assert code == 0, output
    assert output.strip().endswith(": OK"), output


# --- the CA's own certificates --------------------------------------------------------


def test_initialize_creates_the_expected_authorities(hierarchy: Hierarchy) -> None:
    assert {name: role for name, (role, _) in hierarchy.authorities.items()} == AUTHORITIES


@pytest.mark.parametrize("name", sorted(AUTHORITIES))
def test_authority_passes_openssl_strict(
    hierarchy: Hierarchy, conformance: Any, workdir: Path, name: str
) -> None:
    role, certificate = hierarchy.authorities[name]
    assert_openssl_ok(
        conformance.openssl_verify(
            certificate,
            hierarchy.intermediates_of(name) if role is not AuthorityRole.ROOT else [],
            hierarchy.root_of(name),
            directory=workdir,
            at=NOW,
            purpose=PURPOSES[role],
        )
    )


@pytest.mark.parametrize("name", sorted(AUTHORITIES))
def test_authority_passes_pkilint(hierarchy: Hierarchy, conformance: Any, name: str) -> None:
    _, certificate = hierarchy.authorities[name]
    assert conformance.pkilint_errors(certificate) == []


@pytest.mark.parametrize("name", sorted(V2G_AUTHORITIES))
def test_v2g_cas_differ_from_rfc5280_only_in_dc(
    hierarchy: Hierarchy, conformance: Any, name: str
) -> None:
    """Documents the allowance: pkilint's only error on a V2G CA is the DC=V2G role tag."""
    certificate = hierarchy.certificate(name)
    errors = {
        code
        for severity, code, _ in conformance.findings(certificate)
        if severity in ("ERROR", "FATAL")
    }
    assert errors == {"pkix.name_domain_components_invalid_domain_name"}
    dc = certificate.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)
    assert [a.value for a in dc] == ["V2G"]


@pytest.mark.parametrize("name", ["csms-server-ec", "csms-server-rsa"])
def test_server_certificate_names_and_purpose(hierarchy: Hierarchy, name: str) -> None:
    certificate = hierarchy.certificate(name)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["csms.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    expected_key = ec.EllipticCurvePublicKey if name.endswith("ec") else rsa.RSAPublicKey
    assert isinstance(certificate.public_key(), expected_key)


@pytest.mark.parametrize(
    "ca_name", ["cso-root", "cso-station-ca", "v2g-root", "cpo-sub-ca-1", "cpo-sub-ca-2"]
)
def test_ocsp_signer_is_delegated_by_its_ca(hierarchy: Hierarchy, ca_name: str) -> None:
    """RFC 6960 4.2.2.2: issued directly by the CA it answers for, id-kp-OCSPSigning,
    and id-pkix-ocsp-nocheck so that clients do not ask about the signer itself."""
    signer = hierarchy.certificate(f"{ca_name}-ocsp")
    signer.verify_directly_issued_by(hierarchy.certificate(ca_name))
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    basic = signer.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca


def openssl_verify_peer(
    hierarchy: Hierarchy,
    name: str,
    directory: Path,
    *,
    hostname: str | None = None,
    ip: str | None = None,
) -> tuple[int, str]:
    """``openssl verify -x509_strict -purpose sslserver`` with a host name or IP to match,
    as a TLS client checks the CSMS."""
    directory.mkdir(parents=True, exist_ok=True)
    root, leaf = directory / "root.pem", directory / "leaf.pem"
    root.write_bytes(hierarchy.root_of(name).public_bytes(serialization.Encoding.PEM))
    leaf.write_bytes(hierarchy.certificate(name).public_bytes(serialization.Encoding.PEM))
    command = ["openssl", "verify", "-x509_strict", "-purpose", "sslserver"]
    command += ["-attime", str(int(NOW.timestamp())), "-CAfile", str(root)]
    if hostname is not None:
        command += ["-verify_hostname", hostname]
    if ip is not None:
        command += ["-verify_ip", ip]
    done = subprocess.run(
        [*command, str(leaf)], capture_output=True, text=True, check=False, timeout=30
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["csms-server-ec", "csms-server-rsa"])
def test_server_certificate_matches_csms_hosts_in_openssl(
    hierarchy: Hierarchy, workdir: Path, name: str
) -> None:
    assert_openssl_ok(
        openssl_verify_peer(hierarchy, name, workdir / "dns", hostname="csms.example.com")
    )
    assert_openssl_ok(openssl_verify_peer(hierarchy, name, workdir / "ip", ip="127.0.0.1"))
    # ... and only them: the same check fails for another name or address.
    code, output = openssl_verify_peer(
        hierarchy, name, workdir / "other", hostname="evil.example.com"
    )
    assert code != 0, output
    assert "hostname mismatch" in output, output
    code, output = openssl_verify_peer(hierarchy, name, workdir / "other-ip", ip="127.0.0.2")
    assert code != 0, output
    assert "IP address mismatch" in output, output


# --- issued station certificates ------------------------------------------------------


@pytest.mark.parametrize("case", sorted(LEAVES))
def test_issued_leaf_passes_openssl_strict(
    hierarchy: Hierarchy, conformance: Any, workdir: Path, case: str
) -> None:
    profile, _ = LEAVES[case]
    leaf, *intermediates = hierarchy.leaves[case]
    issuer = "cso-station-ca" if profile == "charging-station" else "cpo-sub-ca-2"
    assert intermediates == [hierarchy.certificate(issuer), *hierarchy.intermediates_of(issuer)]
    assert_openssl_ok(
        conformance.openssl_verify(
            leaf,
            intermediates,
            hierarchy.root_of(issuer),
            directory=workdir,
            at=NOW,
            purpose=LEAF_PURPOSES[profile],
        )
    )


@pytest.mark.parametrize("case", sorted(LEAVES))
def test_issued_leaf_passes_pkilint(hierarchy: Hierarchy, conformance: Any, case: str) -> None:
    leaf = hierarchy.leaves[case][0]
    assert conformance.pkilint_errors(leaf) == []


def test_secc_leaf_differs_from_rfc5280_only_in_dc(hierarchy: Hierarchy, conformance: Any) -> None:
    leaf = hierarchy.leaves["v2g-secc-p256"][0]
    errors = {
        code for severity, code, _ in conformance.findings(leaf) if severity in ("ERROR", "FATAL")
    }
    assert errors == {"pkix.name_domain_components_invalid_domain_name"}
    dc = leaf.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)
    assert [a.value for a in dc] == ["CPO"]


def test_secc_chain_is_iso15118_shaped(hierarchy: Hierarchy) -> None:
    chain = hierarchy.leaves["v2g-secc-p256"]
    # At most 3 certificates below the V2G root; each <= 800 bytes DER, P-256.
    assert len(chain) <= 3
    for certificate in (*chain, hierarchy.certificate("v2g-root")):
        assert len(certificate.public_bytes(serialization.Encoding.DER)) <= 800
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"


# --- the checkers can fail ------------------------------------------------------------


def test_openssl_rejects_a_leaf_against_the_wrong_root(
    hierarchy: Hierarchy, conformance: Any, workdir: Path
) -> None:
    leaf, *intermediates = hierarchy.leaves["charging-station-p256"]
    code, output = conformance.openssl_verify(
        leaf, intermediates, hierarchy.certificate("v2g-root"), directory=workdir, at=NOW
    )
    assert code != 0, output


def test_openssl_rejects_a_server_certificate_as_client(
    hierarchy: Hierarchy, conformance: Any, workdir: Path
) -> None:
    code, output = conformance.openssl_verify(
        hierarchy.certificate("csms-server-ec"),
        [],
        hierarchy.certificate("cso-root"),
        directory=workdir,
        at=NOW,
        purpose="sslclient",
    )
    assert code != 0, output
    assert "unsuitable certificate purpose" in output, output


def test_openssl_rejects_an_expired_leaf(
    hierarchy: Hierarchy, conformance: Any, workdir: Path
) -> None:
    leaf, *intermediates = hierarchy.leaves["v2g-secc-p256"]
    code, output = conformance.openssl_verify(
        leaf,
        intermediates,
        hierarchy.certificate("v2g-root"),
        directory=workdir,
        at=leaf.not_valid_after_utc + timedelta(seconds=1),
    )
    assert code != 0, output
    assert "expired" in output, output


def self_signed(
    subject: x509.Name, *, ca: bool, critical_basic_constraints: bool
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=critical_basic_constraints
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def test_pkilint_reports_a_non_conforming_certificate(conformance: Any) -> None:
    # RFC 5280 4.2.1.9: basicConstraints MUST be critical in a CA certificate.
    certificate = self_signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bad CA")]),
        ca=True,
        critical_basic_constraints=False,
    )
    codes = {code for _, code, _ in conformance.pkilint_errors(certificate)}
    assert "pkix.basic_constraints_extension_not_critical" in codes


@pytest.mark.parametrize(
    "values",
    [["not a domain!"], ["V2G", "not a domain!"], ["v2g-root.invalid_"]],
)
def test_dc_allowance_covers_only_iso15118_role_tags(conformance: Any, values: list[str]) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Tagged"),
            *(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, v) for v in values),
        ]
    )
    certificate = self_signed(subject, ca=False, critical_basic_constraints=True)
    codes = {code for _, code, _ in conformance.pkilint_errors(certificate)}
    assert "pkix.name_domain_components_invalid_domain_name" in codes


def test_dc_allowance_accepts_role_tags(conformance: Any) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Tagged"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "CPO"),
        ]
    )
    certificate = self_signed(subject, ca=False, critical_basic_constraints=True)
    findings = {code for _, code, _ in conformance.findings(certificate)}
    assert "pkix.name_domain_components_invalid_domain_name" in findings
    assert conformance.pkilint_errors(certificate) == []
