"""Failed TLS handshakes are recorded like other refusals, and a flood is aggregated:
per address per minute the first in full, then one summary; the table is bounded."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from csms.services.handshake_failures import (
    OTHER_ADDRESSES,
    TLS_REFUSED_ACTION,
    FailedHandshake,
    HandshakeFailures,
    certificate_facts,
)
from pki.clock import FixedClock
from pki.store.sql import SqlStore


def self_signed(cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(0x1234ABCD)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def failure(address: str = "192.0.2.7", *, der: bytes | None = None) -> FailedHandshake:
    return FailedHandshake(
        remote=f"{address}:40000",
        address=address,
        reason="CERTIFICATE_VERIFY_FAILED",
        message="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "self-signed certificate (_ssl.c:1006)",
        verify_error="self-signed certificate (depth 0)",
        certificate_der=der,
    )


async def events(store: SqlStore) -> list[dict[str, object]]:
    return [dict(e.event.detail) for e in await store.audit_entries(actions=[TLS_REFUSED_ACTION])]


async def test_the_first_failure_is_recorded_in_full(
    store: SqlStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    certificate = self_signed("SN-\x1b[31m0001\nforged line")
    der = certificate.public_bytes(Encoding.DER)
    refusals: Counter[str] = Counter()
    failures = HandshakeFailures(store, clock, refusals)
    with caplog.at_level(logging.WARNING, "pkictl.tls"):
        failures.record(failure(der=der))
    await failures.write_pending()
    assert refusals == {"tls-certificate-verify-failed": 1}
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    text = line.getMessage()
    assert "192.0.2.7:40000" in text
    assert "certificate verify failed: self-signed certificate" in text
    assert "_ssl.c" not in text
    assert "serial 1234abcd" in text
    assert certificate.fingerprint(hashes.SHA256()).hex() in text
    assert "\n" not in text  # control characters of the subject are escaped
    assert "\x1b" not in text
    assert "\\x1b[31m0001\\nforged line" in text
    [event] = await events(store)
    assert event["reason"] == "tls-certificate-verify-failed"
    assert event["remote"] == "192.0.2.7:40000"
    assert event["verify_error"] == "self-signed certificate (depth 0)"
    assert event["certificate"] == certificate_facts(der)
    assert event["certificate"] == {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": "1234abcd",
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
    }


async def test_a_flood_from_one_address_is_one_line_then_one_summary_a_minute(
    sqlite_store: SqlStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    refusals: Counter[str] = Counter()
    failures = HandshakeFailures(sqlite_store, clock, refusals)
    with caplog.at_level(logging.WARNING, "pkictl.tls"):
        for _ in range(500):
            failures.record(failure())
            clock.advance(timedelta(milliseconds=100))  # 50 s
        failures.record(failure("198.51.100.1"))  # another address: its own line
        assert len(caplog.records) == 2
        clock.advance(timedelta(seconds=11))  # the first address's minute is over
        failures.expire()
        assert len(caplog.records) == 3
        failures.record(failure())  # a new minute: in full again
    await failures.write_pending()
    assert refusals == {"tls-certificate-verify-failed": 502}  # /health counts every one
    lines = [r.getMessage() for r in caplog.records]
    assert "192.0.2.7:40000 failed" in lines[0]
    assert "198.51.100.1:40000 failed" in lines[1]
    assert "192.0.2.7: 499 more failed in the 60 s after the first" in lines[2]
    assert "tls-certificate-verify-failed x499" in lines[2]
    assert "192.0.2.7:40000 failed" in lines[3]
    recorded = await events(sqlite_store)
    assert [e.get("repeated") for e in recorded] == [None, None, 499, None]
    assert recorded[2]["reasons"] == {"tls-certificate-verify-failed": 499}


async def test_the_table_of_addresses_is_bounded(
    sqlite_store: SqlStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    failures = HandshakeFailures(sqlite_store, clock, Counter(), capacity=3)
    with caplog.at_level(logging.WARNING, "pkictl.tls"):
        for n in range(1000):  # rotating addresses
            failures.record(failure(f"10.0.{n // 256}.{n % 256}"))
            assert failures.tracked <= 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # three addresses, then the rest together
    assert "more than 3 addresses failing" in lines[3]
    clock.advance(timedelta(minutes=1))
    with caplog.at_level(logging.WARNING, "pkictl.tls"):
        failures.expire()
    assert f"{OTHER_ADDRESSES}: 996 more failed" in caplog.records[-1].getMessage()
    assert failures.tracked == 0


async def test_open_windows_are_summarised_when_serving_stops(
    sqlite_store: SqlStore, clock: FixedClock
) -> None:
    failures = HandshakeFailures(sqlite_store, clock, Counter())
    async with failures.running():
        for _ in range(3):
            failures.record(failure())
    assert [e.get("repeated") for e in await events(sqlite_store)] == [None, 2]


def test_an_unparseable_certificate_still_has_its_fingerprint() -> None:
    facts = certificate_facts(b"\x30\x03\x02\x01\x00")
    assert set(facts) == {"sha256", "unparsed"}


def test_an_unknown_reason_is_counted_under_a_fixed_name() -> None:
    weird = FailedHandshake("a:1", "a", "not a code; DROP", "x")
    assert weird.refusal == "tls-handshake"
    assert FailedHandshake("a:1", "a", None, "x").refusal == "tls-handshake"
    assert FailedHandshake("a:1", "a", "UNSUPPORTED_PROTOCOL", "x").refusal == (
        "tls-unsupported-protocol"
    )
