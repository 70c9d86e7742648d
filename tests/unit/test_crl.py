"""Revocation and CRLs through the CertificateAuthority, checked with cryptography and
with openssl (`openssl crl`, `openssl verify -crl_check`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from pki.authority import CertificateAuthority, IssuedCertificate
from pki.clock import FixedClock
from pki.errors import NotFoundError, StateError
from pki.records import CertificateQuery, CertificateStatus
from pki.store.sql import SqlStore


async def issue(
    ca: CertificateAuthority,
    make_csr: Callable[..., str],
    *,
    profile: str = "charging-station",
    **csr: str,
) -> IssuedCertificate:
    return await ca.issue_for_station(
        csr_pem=make_csr(**csr), profile_name=profile, station_id="CS001", actor="test"
    )


async def authority_certificate(ca: CertificateAuthority, name: str) -> x509.Certificate:
    authority = await ca.store.get_authority(name)
    assert authority is not None
    return authority.certificate()


async def actions(ca: CertificateAuthority) -> list[str]:
    store = ca.store
    assert isinstance(store, SqlStore)
    return [e.event.action for e in await store.audit_entries()]


def pem(*items: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items)


def openssl(*arguments: str) -> tuple[int, str]:
    done = subprocess.run(
        ["openssl", *arguments], capture_output=True, text=True, check=False, timeout=30
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
async def revoked_setup(
    sqlite_ca: CertificateAuthority, make_csr: Callable[..., str], clock: FixedClock
) -> tuple[IssuedCertificate, IssuedCertificate]:
    """(kept, revoked): two station certificates, the second revoked (keyCompromise)
    one hour after issuance."""
    kept = await issue(sqlite_ca, make_csr)
    revoked = await issue(sqlite_ca, make_csr)
    clock.advance(timedelta(hours=1, microseconds=1))
    await sqlite_ca.revoke(revoked.record.serial, "keyCompromise", "operator")
    return kept, revoked


async def test_crl_content_and_signature(
    sqlite_ca: CertificateAuthority,
    revoked_setup: tuple[IssuedCertificate, IssuedCertificate],
    clock: FixedClock,
) -> None:
    kept, revoked = revoked_setup
    issuer = await authority_certificate(sqlite_ca, "cso-station-ca")
    root = await authority_certificate(sqlite_ca, "cso-root")
    crl = await sqlite_ca.crl("cso-station-ca", "operator")

    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert crl.issuer == issuer.subject

    entries = list(crl)
    assert [e.serial_number for e in entries] == [revoked.record.serial]
    assert crl.get_revoked_certificate_by_serial_number(kept.record.serial) is None
    (entry,) = entries
    revoked_at = clock.now().replace(microsecond=0)
    assert entry.revocation_date_utc == revoked_at
    reason = entry.extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason is x509.ReasonFlags.key_compromise
    assert not reason.critical

    assert crl.last_update_utc == revoked_at
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)

    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    number = crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER)
    assert isinstance(number.value, x509.CRLNumber)
    assert number.value.crl_number == 1
    assert not number.critical


async def test_an_expired_revoked_certificate_leaves_the_crl(
    sqlite_ca: CertificateAuthority,
    revoked_setup: tuple[IssuedCertificate, IssuedCertificate],
    clock: FixedClock,
) -> None:
    """RFC 5280 3.3: an entry may go once the certificate has expired -- a CRL keeps to
    what can still be used, not every revocation ever made. OCSP still says revoked."""
    _, revoked = revoked_setup
    crl = await sqlite_ca.crl("cso-station-ca", "operator")
    assert crl.get_revoked_certificate_by_serial_number(revoked.record.serial) is not None
    clock.advance(revoked.record.not_after - clock.now() - timedelta(seconds=1))
    last_day = await sqlite_ca.crl("cso-station-ca", "operator")
    assert last_day.get_revoked_certificate_by_serial_number(revoked.record.serial) is not None
    clock.advance(timedelta(seconds=1))
    after = await sqlite_ca.crl("cso-station-ca", "operator")
    assert len(after) == 0
    status = await sqlite_ca.ocsp_status(revoked.record.issuer_name_hash, revoked.record.serial)
    assert status.state.value == "revoked"


async def test_crl_numbers_increase_and_are_per_ca(
    sqlite_ca: CertificateAuthority, clock: FixedClock
) -> None:
    def number(crl: x509.CertificateRevocationList) -> int:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    first = await sqlite_ca.crl("cso-station-ca", "operator")
    clock.advance(timedelta(minutes=1))
    second = await sqlite_ca.crl("cso-station-ca", "operator")
    other = await sqlite_ca.crl("cpo-sub-ca-2", "operator")
    third = await sqlite_ca.crl("cso-station-ca", "operator")
    assert [number(first), number(second), number(third)] == [1, 2, 3]
    assert number(other) == 1
    assert second.last_update_utc - first.last_update_utc == timedelta(minutes=1)
    assert list(first) == []
    assert other.is_signature_valid(
        (await authority_certificate(sqlite_ca, "cpo-sub-ca-2")).public_key()  # type: ignore[arg-type]
    )
    assert await actions(sqlite_ca) == ["ca.init", "station.added"] + ["crl.generated"] * 4


async def test_crl_of_one_ca_does_not_list_another_cas_revocations(
    sqlite_ca: CertificateAuthority, make_csr: Callable[..., str]
) -> None:
    secc = await issue(sqlite_ca, make_csr, cn="SECC0001", dc="CPO", profile="v2g-secc")
    station = await issue(sqlite_ca, make_csr)
    await sqlite_ca.revoke(secc.record.serial, "unspecified", "operator")
    await sqlite_ca.revoke(station.record.serial, "superseded", "operator")

    cso = await sqlite_ca.crl("cso-station-ca", "operator")
    v2g = await sqlite_ca.crl("cpo-sub-ca-2", "operator")
    assert [e.serial_number for e in cso] == [station.record.serial]
    assert [e.serial_number for e in v2g] == [secc.record.serial]
    reason = cso[0].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    # RFC 5280 5.3.1: unspecified is expressed by leaving the reason code out.
    assert len(v2g[0].extensions) == 0


async def test_openssl_parses_the_crl_and_checks_revocation(
    sqlite_ca: CertificateAuthority,
    revoked_setup: tuple[IssuedCertificate, IssuedCertificate],
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    kept, revoked = revoked_setup
    issuer = await authority_certificate(sqlite_ca, "cso-station-ca")
    root = await authority_certificate(sqlite_ca, "cso-root")
    crl = await sqlite_ca.crl("cso-station-ca", "operator")

    (tmp_path / "crl.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    code, output = openssl("crl", "-inform", "DER", "-noout", "-text", "-in", f"{tmp_path}/crl.der")
    assert code == 0, output
    assert "Key Compromise" in output
    assert f"{revoked.record.serial:X}" in output.replace(":", "").upper().replace(" ", "")
    assert "X509v3 CRL Number" in output

    (tmp_path / "root.pem").write_bytes(pem(root))
    (tmp_path / "ca.pem").write_bytes(pem(issuer))
    (tmp_path / "crl.pem").write_bytes(pem(crl))
    (tmp_path / "kept.pem").write_bytes(pem(kept.chain[0]))
    (tmp_path / "revoked.pem").write_bytes(pem(revoked.chain[0]))
    base = [
        "verify",
        "-x509_strict",
        "-crl_check",
        "-attime",
        str(int(clock.now().timestamp()) + 60),
        "-CAfile",
        f"{tmp_path}/root.pem",
        "-untrusted",
        f"{tmp_path}/ca.pem",
        "-CRLfile",
        f"{tmp_path}/crl.pem",
    ]
    code, output = openssl(*base, f"{tmp_path}/kept.pem")
    assert code == 0, output
    assert "OK" in output
    code, output = openssl(*base, f"{tmp_path}/revoked.pem")
    assert code != 0, output
    assert "certificate revoked" in output

    # Without the CRL openssl cannot check at all: the CRL is what made the difference.
    code, output = openssl(*base[:-2], f"{tmp_path}/kept.pem")
    assert code != 0, output
    assert "unable to get certificate CRL" in output


async def test_revocation_is_recorded_and_audited_once(
    sqlite_ca: CertificateAuthority,
    revoked_setup: tuple[IssuedCertificate, IssuedCertificate],
    clock: FixedClock,
) -> None:
    kept, revoked = revoked_setup
    store = sqlite_ca.store
    (record,) = await store.find_certificates(CertificateQuery(serial=revoked.record.serial))
    assert record.status is CertificateStatus.REVOKED
    assert record.revoked_at == clock.now()
    assert record.revocation_reason == "keyCompromise"
    (untouched,) = await store.find_certificates(CertificateQuery(serial=kept.record.serial))
    assert untouched.status is CertificateStatus.VALID

    assert isinstance(store, SqlStore)
    revocations = [
        e for e in await store.audit_entries() if e.event.action == "certificate.revoked"
    ]
    assert len(revocations) == 1
    (entry,) = revocations
    assert entry.event.actor == "operator"
    assert entry.event.target == f"serial:{revoked.record.serial_hex}"
    assert entry.event.detail == {
        "reason": "keyCompromise",
        "issuer": "cso-station-ca",
        "station": "CS001",
    }

    with pytest.raises(StateError, match="already revoked"):
        await sqlite_ca.revoke(revoked.record.serial, "superseded", "operator")
    await sqlite_ca.crl("cso-station-ca", "operator")
    await sqlite_ca.crl("cso-station-ca", "operator")
    assert (await actions(sqlite_ca))[-4:] == [
        "certificate.issued",
        "certificate.revoked",
        "crl.generated",
        "crl.generated",
    ]
    generated = [e for e in await store.audit_entries() if e.event.action == "crl.generated"]
    assert [e.event.detail for e in generated] == [
        {"number": 1, "revoked": 1},
        {"number": 2, "revoked": 1},
    ]
    assert {e.event.target for e in generated} == {"ca:cso-station-ca"}


async def test_revocation_refusals_write_nothing(
    sqlite_ca: CertificateAuthority, make_csr: Callable[..., str]
) -> None:
    issued = await issue(sqlite_ca, make_csr)
    root = await authority_certificate(sqlite_ca, "cso-root")
    before = await actions(sqlite_ca)

    with pytest.raises(NotFoundError, match="no certificate with serial"):
        await sqlite_ca.revoke(issued.record.serial + 1, "keyCompromise", "operator")
    with pytest.raises(StateError, match="not issued by a CA of this instance"):
        await sqlite_ca.revoke(root.serial_number, "keyCompromise", "operator")
    with pytest.raises(ValueError, match="not an RFC 5280 reason"):
        await sqlite_ca.revoke(issued.record.serial, "stolen", "operator")
    with pytest.raises(ValueError, match="not an RFC 5280 reason"):
        await sqlite_ca.revoke(issued.record.serial, "removeFromCRL", "operator")
    with pytest.raises(NotFoundError, match="no CA named"):
        await sqlite_ca.crl("charging-station", "operator")
    with pytest.raises(NotFoundError, match="no CA named"):
        await sqlite_ca.crl("cso-root-ocsp", "operator")

    assert await actions(sqlite_ca) == before
    (record,) = await sqlite_ca.store.find_certificates(
        CertificateQuery(serial=issued.record.serial)
    )
    assert record.status is CertificateStatus.VALID
    assert await sqlite_ca.store.revoked_entries("cso-station-ca", record.not_before) == []
