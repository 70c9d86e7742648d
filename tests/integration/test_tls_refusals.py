"""Failed TLS handshakes against `pkictl serve` leave a trace like every other refusal:
a WARNING line, a `tls.refused` event (`pkictl events list`) and a `/health` count, with
the peer, OpenSSL's reason and the refused certificate (subject, issuer, serial,
SHA-256) -- while OpenSSL's decision stays its own (ADR 17). A flood from one address
is one line and one event, then one summary."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from integration_support import (
    ORG,
    Home,
    Identity,
    initialized_home,
    passphrase_file,
    write_key,
)

from cli.main import cli
from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from csms.services import handshake_failures


@dataclass(frozen=True)
class Fleet:
    home: Home
    good: Identity
    self_signed: Identity
    unknown_ca: Identity


def foreign_ca_identity(directory: Path) -> Identity:
    """A station-like certificate (CN = a registered serial, O = the CSO) from a CA the
    CSMS does not trust."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-0001"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(0xC0FFEE0001)
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    chain = directory / "unknown-ca.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return chain, write_key(directory / "unknown-ca.key", key)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    async def build() -> Fleet:
        home = await initialized_home(
            tmp_path_factory.mktemp("tls-refusals"), {"CS001": ("SN-0001", 3, False)}
        )
        return Fleet(
            home=home,
            good=await home.issue("good", station="CS001", serial="SN-0001"),
            self_signed=home.self_signed("self-signed", "SN-0001"),
            unknown_ca=foreign_ca_identity(home.directory),
        )

    return asyncio.run(build())


@dataclass
class Running:
    fleet: Fleet
    ports: Listening
    stop: asyncio.Event
    task: asyncio.Task[None]
    since: int
    """The audit log's last sequence number when serving started."""

    async def handshake(self, identity: Identity | None, *, tls_1_2: bool = False) -> str:
        """Connect over TLS and read until the server closes; what the client saw."""
        context = self.fleet.home.client_context(
            identity,
            max_version=ssl.TLSVersion.TLSv1_2 if tls_1_2 else ssl.TLSVersion.TLSv1_3,
        )
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.ports.ocpp_port, ssl=context), 30
            )
            writer.write(b"GET /ocpp/CS001 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 30)
            writer.close()
        except (ssl.SSLError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return f"read {data[:12]!r}"

    async def health(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports.http_port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        writer.close()
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    async def tls_events(self) -> list[dict[str, Any]]:
        """`pkictl events list --json`: the tls.refused events since serving started."""
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["--home", str(self.fleet.home.path), "events", "list", "--json"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return [
            e
            for e in json.loads(result.stdout)
            if e["event"] == "tls.refused" and e["seq"] > self.since
        ]

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def service(fleet: Fleet) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(fleet.home.path, passphrase_file(fleet.home.directory)) as app:
        task = asyncio.create_task(
            serve(app, ServeOptions("127.0.0.1", 0, 0), stop, ready.set_result)
        )
        ports = await asyncio.wait_for(ready, 60)
        head = await app.store.audit_head()
        running = Running(fleet, ports, stop, task, head.seq if head else 0)
        try:
            yield running
        finally:
            if not task.done():
                await running.stopped()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``check`` (generously: the machine may be busy)."""
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def certificate_of(identity: Identity) -> x509.Certificate:
    return x509.load_pem_x509_certificate(identity[0].read_bytes())


def tls_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pkictl.tls" and r.levelno == logging.WARNING and "TLS handshake" in r.message
    ]


@pytest.mark.parametrize(
    ("kind", "refusal", "verify_error"),
    [
        ("self_signed", "tls-certificate-verify-failed", "self-signed certificate (depth 0)"),
        ("unknown_ca", "tls-certificate-verify-failed",
         "unable to get local issuer certificate (depth 0)"),
        ("tls_1_2", "tls-unsupported-protocol", None),
    ],
)  # fmt: skip
async def test_a_failed_handshake_is_logged_kept_and_counted(
    service: Running,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    refusal: str,
    verify_error: str | None,
) -> None:
    caplog.set_level(logging.WARNING, "pkictl.tls")
    fleet = service.fleet
    identity = fleet.good if kind == "tls_1_2" else getattr(fleet, kind)
    seen = await service.handshake(identity, tls_1_2=kind == "tls_1_2")
    assert not seen.startswith("read b'HTTP"), seen  # refused at the TLS layer

    async def logged() -> bool:
        return bool(tls_lines(caplog))

    await eventually(logged, "the WARNING line")
    [line] = tls_lines(caplog)
    assert re.search(r"TLS handshake from 127\.0\.0\.1:\d+ failed: ", line), line
    assert (await service.health())["refusals"] == {refusal: 1}

    async def kept() -> bool:
        return bool(await service.tls_events())

    await eventually(kept, "the tls.refused event")
    [event] = await service.tls_events()
    assert event["what"] == refusal
    assert event["station"] is None
    assert event["remote"].startswith("127.0.0.1:")
    detail = event["detail"]
    assert detail["verify_error"] == verify_error
    if kind == "tls_1_2":
        assert "unsupported protocol" in detail["openssl"]
        assert detail["certificate"] is None  # none is sent before the version is agreed
        assert "certificate" not in line
        return
    assert "certificate verify failed" in detail["openssl"]
    certificate = certificate_of(identity)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    assert detail["certificate"] == {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "sha256": fingerprint,
    }
    assert f"serial {certificate.serial_number:x}" in line
    assert fingerprint in line
    assert certificate.issuer.rfc4514_string() in line


async def test_the_trust_decision_is_openssls_own(service: Running) -> None:
    """With the verify callback observing, the station's own certificate is admitted
    as before and nothing is recorded."""
    seen = await service.handshake(service.fleet.good)
    assert seen.startswith("read b'HTTP/1.1 "), seen
    assert (await service.health())["refusals"] == {}
    assert await service.tls_events() == []


@pytest.fixture
def long_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window no busy machine outlasts: the flood below falls in one."""
    monkeypatch.setattr(handshake_failures, "WINDOW", timedelta(hours=1))


async def test_a_flood_from_one_address_is_one_line_and_one_summary(
    long_window: None, service: Running, caplog: pytest.LogCaptureFixture
) -> None:  # long_window first: set before serving starts
    caplog.set_level(logging.WARNING, "pkictl.tls")
    for _ in range(15):
        await service.handshake(service.fleet.self_signed)
    assert (await service.health())["refusals"] == {"tls-certificate-verify-failed": 15}
    assert len(tls_lines(caplog)) == 1
    await service.stopped()  # the window is not over: serving stops, the rest is summarised
    lines = tls_lines(caplog)
    assert len(lines) == 2
    assert re.search(r"TLS handshakes from 127\.0\.0\.1: 14 more failed", lines[1]), lines[1]
    events = await service.tls_events()
    assert [e["detail"].get("repeated") for e in events] == [None, 14]
    assert events[1]["detail"]["reasons"] == {"tls-certificate-verify-failed": 14}
