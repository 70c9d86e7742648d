"""The gate remembers which station CA signed a certificate, never whether it is valid:
the CA's dates are checked at every admission (the signature check is what costs)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from csms.services import gate as gate_module
from csms.services.gate import ConnectionGate
from pki.clock import FixedClock
from pki.policy import RenewalRule
from pki.store.sql import SqlStore

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Station CA")])


def certificate(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def leaf(signer: ec.EllipticCurvePrivateKey, serial: str = "SN-1") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)])
    return certificate(name, ec.generate_private_key(ec.SECP256R1()), signer)


@pytest.fixture
def keys() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]:
    return ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())


def gate_for(store: SqlStore, *cas: x509.Certificate) -> ConnectionGate:
    return ConnectionGate(
        store=store,
        clock=FixedClock(NOW),
        organization="Example CPO",
        observed_renewal=RenewalRule(before_expiry_days=90),
        station_cas=cas,
    )


async def test_the_ca_dates_are_checked_at_every_admission(
    sqlite_store: SqlStore, keys: tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]
) -> None:
    ca_key, _ = keys
    ca = certificate(CA_NAME, ca_key, ca_key)
    gate = gate_for(sqlite_store, ca)
    station = leaf(ca_key)
    assert gate._issuer_valid(station, fingerprint(station), NOW)
    # the same certificate, remembered, once the CA has expired:
    assert not gate._issuer_valid(station, fingerprint(station), NOW + timedelta(days=2))
    assert gate._issuer_valid(station, fingerprint(station), NOW)


async def test_of_two_cas_with_one_name_the_one_whose_key_signed_counts(
    sqlite_store: SqlStore, keys: tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]
) -> None:
    old_key, new_key = keys
    expired_old = (
        x509.CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(old_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW - timedelta(days=1))
        .sign(old_key, hashes.SHA256())
    )
    gate = gate_for(sqlite_store, expired_old, certificate(CA_NAME, new_key, new_key))
    by_old, by_new, by_nobody = (
        leaf(old_key),
        leaf(new_key),
        leaf(ec.generate_private_key(ec.SECP256R1())),
    )
    for _ in range(2):  # the second time from memory
        assert not gate._issuer_valid(by_old, fingerprint(by_old), NOW)
        assert gate._issuer_valid(by_new, fingerprint(by_new), NOW)
        assert not gate._issuer_valid(by_nobody, fingerprint(by_nobody), NOW)


async def test_what_it_remembers_is_bounded(
    sqlite_store: SqlStore,
    keys: tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate_module, "SIGNERS_REMEMBERED", 4)
    ca_key, _ = keys
    gate = gate_for(sqlite_store, certificate(CA_NAME, ca_key, ca_key))
    for number in range(10):
        station = leaf(ca_key, f"SN-{number}")
        assert gate._issuer_valid(station, fingerprint(station), NOW)
        assert len(gate._signers) <= 4
