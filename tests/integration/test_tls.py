"""The OCPP endpoint's TLS, with real handshakes on 127.0.0.1: the 1.3-only default
refuses TLS 1.2; conformance mode accepts exactly the four OCPP TLS 1.2 suites; client
certificates are validated up to the station CA but their validity period is left to
the handshake decision."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from integration_support import PASSPHRASE, Home, initialized_home, passphrase_file

from cli.main import cli
from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from csms.transport import tls
from csms.transport.openssl_seam import (
    SeamUnavailable,
    observes_rejected_certificates,
    session_cache_mode,
)
from csms.transport.tls import (
    TLS12_OCPP_SUITES,
    ReloadingContext,
    ServerCredential,
    TlsConfigError,
    server_context,
)
from pki.clock import FixedClock
from pki.keys.file import FileKeyStore


@dataclass(frozen=True)
class Pki:
    home: Home
    station_ca_pem: str
    good: tuple[Path, Path]
    expired: tuple[Path, Path]
    foreign: tuple[Path, Path]

    @property
    def root_pem(self) -> Path:
        return self.home.root_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    async def build() -> Pki:
        home = await initialized_home(
            tmp_path_factory.mktemp("tls"), {"CS001": ("SN-0001", 3, False)}
        )
        past = FixedClock(datetime.now(UTC) - timedelta(days=400))
        return Pki(
            home=home,
            station_ca_pem=(home.path / "certs" / "cso-station-ca.pem").read_text(),
            good=await home.issue("good", station="CS001", serial="SN-0001"),
            expired=await home.issue("expired", station="CS001", serial="SN-0001", clock=past),
            foreign=home.self_signed("foreign", "SN-0001"),
        )

    return asyncio.run(build())


def server(pki: Pki, min_version: str) -> ssl.SSLContext:
    return server_context(
        min_version=min_version,
        credentials=[
            ServerCredential(
                pki.home.path / "certs" / f"{n}.pem", pki.home.path / "keys" / f"{n}.key.pem"
            )
            for n in ("csms-server-ec", "csms-server-rsa")
        ],
        station_cas_pem=pki.station_ca_pem,
        passphrase=PASSPHRASE.encode,
    )


def client(
    pki: Pki,
    identity: tuple[Path, Path] | None,
    *,
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    return pki.home.client_context(identity, max_version=max_version, ciphers=ciphers)


@dataclass(frozen=True)
class Outcome:
    version: str | None = None
    cipher: str | None = None
    peer_cn: str | None = None
    error: str | None = None


async def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Outcome:
    """One connection on 127.0.0.1: what the server saw, or why the client failed."""
    seen: list[Outcome] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        cn = None
        if der:
            names = x509.load_der_x509_certificate(der).subject
            cn = str(names.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        version, cipher = (
            writer.get_extra_info("ssl_object").version(),
            writer.get_extra_info("cipher")[0],
        )
        seen.append(Outcome(version, cipher, cn))
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx), 5
        )
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        if line != b"ok\n":
            return Outcome(error=f"closed: {line!r}")
    except (ssl.SSLError, ConnectionError) as exc:
        return Outcome(error=type(exc).__name__ + ": " + str(exc))
    finally:
        listener.close()
        await listener.wait_closed()
    return seen[0]


@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
def test_the_server_context_has_the_openssl_seam_in_place(pki: Pki, min_version: str) -> None:
    """No session cache, and the verify callback that notes a refused certificate
    installed last (after verify_mode, which drops it on CPython 3.13): ADR 17. Every
    other test here shows OpenSSL's decisions unchanged with it."""
    context = server(pki, min_version)
    assert session_cache_mode(context) == 0
    assert observes_rejected_certificates(context)
    assert context.verify_mode is ssl.CERT_OPTIONAL


async def test_default_policy_speaks_tls_1_3_with_a_station_certificate(pki: Pki) -> None:
    outcome = await handshake(server(pki, "1.3"), client(pki, pki.good))
    assert outcome == Outcome("TLSv1.3", outcome.cipher, "SN-0001")


async def test_the_peer_certificate_is_read_in_der_only(pki: Pki) -> None:
    """asyncio decodes the peer certificate into a dict at every handshake and keeps it
    for the connection's life; the server context skips it (an idle station's memory)."""
    kept: list[object] = []

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kept.append(writer.get_extra_info("peercert"))
        kept.append(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server(pki, "1.3"))
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client(pki, pki.good))
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    decoded, der = kept
    assert decoded == {}
    assert isinstance(der, bytes)
    subject = x509.load_der_x509_certificate(der).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SN-0001"


async def _client_session(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLSession:
    """The client's TLS session once the server's first application data has arrived
    (after the tickets a TLS 1.3 server sends, if it sends any)."""

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        assert await asyncio.wait_for(reader.readline(), 5) == b"ok\n"
        session = writer.get_extra_info("ssl_object").session
        writer.close()
    assert session is not None
    return session


@pytest.mark.parametrize(("min_version", "max_version"), [
    ("1.3", ssl.TLSVersion.TLSv1_3), ("1.2", ssl.TLSVersion.TLSv1_3),
    ("1.2", ssl.TLSVersion.TLSv1_2),
])  # fmt: skip
async def test_no_session_tickets_every_connection_proves_the_station_key(
    pki: Pki, min_version: str, max_version: ssl.TLSVersion
) -> None:
    """A ticket would let whoever holds it resume as the station without its key (ADR 5)."""
    session = await _client_session(
        server(pki, min_version), client(pki, pki.good, max_version=max_version)
    )
    assert not session.has_ticket


async def test_the_ticket_check_sees_tickets_when_a_server_sends_them(pki: Pki) -> None:
    ticketing = server(pki, "1.3")
    ticketing.num_tickets = 2
    assert (await _client_session(ticketing, client(pki, pki.good))).has_ticket


async def test_default_policy_refuses_tls_1_2(pki: Pki) -> None:
    outcome = await handshake(
        server(pki, "1.3"), client(pki, pki.good, max_version=ssl.TLSVersion.TLSv1_2)
    )
    assert outcome.error is not None  # the server never saw an established session


@pytest.mark.parametrize("suite", TLS12_OCPP_SUITES)
async def test_conformance_mode_accepts_each_ocpp_tls_1_2_suite(pki: Pki, suite: str) -> None:
    outcome = await handshake(
        server(pki, "1.2"),
        client(pki, pki.good, max_version=ssl.TLSVersion.TLSv1_2, ciphers=suite),
    )
    assert outcome == Outcome("TLSv1.2", suite, "SN-0001")


async def test_conformance_mode_refuses_other_tls_1_2_suites(pki: Pki) -> None:
    outcome = await handshake(
        server(pki, "1.2"),
        client(
            pki, pki.good, max_version=ssl.TLSVersion.TLSv1_2,
            ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
    )  # fmt: skip
    assert outcome.error is not None


async def test_conformance_mode_still_prefers_tls_1_3(pki: Pki) -> None:
    outcome = await handshake(server(pki, "1.2"), client(pki, pki.good))
    assert outcome.version == "TLSv1.3"


async def test_a_certificate_from_an_unknown_ca_is_refused(pki: Pki) -> None:
    outcome = await handshake(server(pki, "1.3"), client(pki, pki.foreign))
    assert outcome.error is not None


async def test_no_client_certificate_reaches_the_http_layer(pki: Pki) -> None:
    # Answered with an HTTP status before the upgrade, by the handshake decision.
    outcome = await handshake(server(pki, "1.3"), client(pki, None))
    assert outcome == Outcome("TLSv1.3", outcome.cipher, None)


async def test_an_expired_station_certificate_reaches_the_handshake_decision(pki: Pki) -> None:
    expired = x509.load_pem_x509_certificate(pki.expired[0].read_bytes())
    assert expired.not_valid_after_utc < datetime.now(UTC)
    outcome = await handshake(server(pki, "1.3"), client(pki, pki.expired))
    assert outcome == Outcome("TLSv1.3", outcome.cipher, "SN-0001")


def test_bad_settings_name_what_is_wrong(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"min_version: '1\.1'"):
        server_context(min_version="1.1", credentials=[], station_cas_pem="x",
                       passphrase=PASSPHRASE.encode)  # fmt: skip
    with pytest.raises(TlsConfigError, match="no trusted station CA"):
        server_context(
            min_version="1.3",
            credentials=[ServerCredential(pki.root_pem, tmp_path / "missing.key")],
            station_cas_pem=" ",
            passphrase=PASSPHRASE.encode,
        )
    with pytest.raises(TlsConfigError, match=r"missing\.key"):
        server_context(
            min_version="1.3",
            credentials=[ServerCredential(pki.root_pem, tmp_path / "missing.key")],
            station_cas_pem=pki.station_ca_pem,
            passphrase=PASSPHRASE.encode,
        )
    with pytest.raises(TlsConfigError, match="csms-server-ec"):
        server_context(
            min_version="1.3",
            credentials=[
                ServerCredential(
                    pki.home.path / "certs" / "csms-server-ec.pem",
                    pki.home.path / "keys" / "csms-server-ec.key.pem",
                )
            ],
            station_cas_pem=pki.station_ca_pem,
            passphrase=lambda: b"wrong passphrase",
        )


def _renewed_server_certificate(pki: Pki, directory: Path) -> tuple[Path, Path, int]:
    """A new csms-server-ec certificate and key, signed by the CSO root, written as the
    renewal will write them; (certificate file, key file, serial)."""
    root_key = FileKeyStore(pki.home.path / "keys", PASSPHRASE.encode()).open("cso-root")
    root = x509.load_pem_x509_certificate(pki.root_pem.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(root.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )  # fmt: skip
    certificate = root_key.sign_certificate(builder, "sha256")
    chain, key_file = directory / "server.pem", directory / "server.key.pem"
    chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    return chain, key_file, certificate.serial_number


async def _server_serial(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> int:
    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_renewed_server_certificate_is_served_without_a_restart(
    pki: Pki, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    chain, key = live / "csms-server-ec.pem", live / "csms-server-ec.key.pem"
    shutil.copy(pki.home.path / "certs" / "csms-server-ec.pem", chain)
    shutil.copy(pki.home.path / "keys" / "csms-server-ec.key.pem", key)
    original = x509.load_pem_x509_certificate(chain.read_bytes()).serial_number
    reloading = ReloadingContext(
        lambda: server_context(
            min_version="1.3", credentials=[ServerCredential(chain, key)],
            station_cas_pem=pki.station_ca_pem, passphrase=PASSPHRASE.encode,
        ),
        [chain, key],
        check_interval=0,
    )  # fmt: skip
    client_ctx = client(pki, pki.good)
    assert await _server_serial(reloading.context, client_ctx) == original

    new_chain, new_key, renewed = _renewed_server_certificate(pki, tmp_path)
    new_key.replace(key)
    new_chain.replace(chain)
    assert await _server_serial(reloading.context, client_ctx) == renewed

    chain.write_text("not a certificate")  # a broken file: the last good one stays
    assert await _server_serial(reloading.context, client_ctx) == renewed


def s_client(pki: Pki, port: int, *options: str, send: bytes = b"") -> str:
    """`openssl s_client` to 127.0.0.1:``port`` trusting the CSO root, sending ``send``
    and reading until the server closes (so that it has every ticket the server sent);
    its combined output."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
         str(pki.root_pem), "-ign_eof", *options],
        input=send, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return (result.stdout + result.stderr).decode(errors="replace")


@dataclass(frozen=True)
class Resumption:
    first: str
    """s_client's output for the station's own connection."""
    saved: bool
    """Whether the client got a session it could offer again: a session ID (TLS 1.2) or
    a ticket."""
    second: str
    """s_client's output for the connection offering it, without certificate or key."""
    peers: list[str | None]
    """The subject the server saw on each connection (None: no client certificate)."""

    @property
    def resumed(self) -> bool:
        return "Reused, TLSv1." in self.second


async def resume_without_the_key(
    pki: Pki, server_ctx: ssl.SSLContext, version_flag: str, saved: Path
) -> Resumption:
    """Connect as the station with `openssl s_client -sess_out`, then again offering the
    saved session with `-sess_in` but no certificate and no key."""
    peers: list[str | None] = []

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        peers.append(x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None)
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        chain, key = pki.good
        first = await asyncio.to_thread(
            s_client, pki, port, version_flag, "-cert", str(chain), "-key", str(key),
            "-sess_out", str(saved),
        )  # fmt: skip
        assert "New, TLSv1." in first, first
        if not saved.exists():  # noqa: ASYNC240 -- s_client has exited
            return Resumption(first, False, "", peers)
        second = await asyncio.to_thread(s_client, pki, port, version_flag, "-sess_in", str(saved))
        assert "New, TLSv1." in second or "Reused, TLSv1." in second, second
    return Resumption(first, True, second, peers)


@pytest.mark.parametrize(("min_version", "version_flag"), [
    ("1.2", "-tls1_2"), ("1.2", "-tls1_3"), ("1.3", "-tls1_3"),
])  # fmt: skip
async def test_a_saved_session_never_resumes_without_the_station_key(
    pki: Pki, tmp_path: Path, min_version: str, version_flag: str
) -> None:
    """A station's TLS session, saved by the client (`-sess_out`) and offered again
    without its certificate and key (`-sess_in`), gets a full handshake: no session-ID
    cache (TLS 1.2: a resumed session would carry the station's certificate to the gate
    on a connection that never proved its key), no tickets (TLS 1.3: nothing to offer
    again). ADR 17."""
    outcome = await resume_without_the_key(
        pki, server(pki, min_version), version_flag, tmp_path / "session.pem"
    )
    assert outcome.peers[0] is not None
    assert "SN-0001" in outcome.peers[0]
    if version_flag == "-tls1_2":
        assert re.search(r"^ +Session-ID: *$", outcome.first, re.MULTILINE), outcome.first
    assert not outcome.saved  # s_client saves only a session it could resume
    assert not outcome.resumed


def plain_python_server(pki: Pki) -> ssl.SSLContext:
    """What the ssl module does unless told otherwise (session cache and tickets on)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        pki.home.path / "certs" / "csms-server-ec.pem",
        pki.home.path / "keys" / "csms-server-ec.key.pem",
        password=PASSPHRASE.encode,
    )
    context.load_verify_locations(cadata=pki.station_ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


@pytest.mark.parametrize("version_flag", ["-tls1_2", "-tls1_3"])
async def test_the_resumption_check_sees_a_resumed_session(
    pki: Pki, tmp_path: Path, version_flag: str
) -> None:
    """The check above can fail: against the ssl module's defaults s_client resumes as
    the station, by session ID (TLS 1.2) or ticket (TLS 1.3), without its key."""
    outcome = await resume_without_the_key(
        pki, plain_python_server(pki), version_flag, tmp_path / "session.pem"
    )
    assert outcome.saved
    assert outcome.resumed, outcome.second
    assert outcome.peers[1] == outcome.peers[0]  # the station's certificate, not its key


def conformance_home(pki: Pki, directory: Path) -> Path:
    """A copy of the test home with tls.min_version = "1.2"."""
    home = directory / "ca"
    shutil.copytree(pki.home.path, home)
    policy = home / "policy.toml"
    policy.write_text(policy.read_text().replace('min_version = "1.3"', 'min_version = "1.2"'))
    return home


UPGRADE = (
    b"GET /ocpp/CS001 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n"
)


async def test_pkictl_serve_does_not_admit_a_replayed_tls_1_2_session(
    pki: Pki, tmp_path: Path
) -> None:
    """Issue 22: in conformance mode, the session a station's connection saved
    (`-sess_out`) and offered again without certificate or key (`-sess_in`) was resumed
    and the websocket upgrade to /ocpp/CS001 admitted. Now it is a full handshake
    without a client certificate (403 before the upgrade), and s_client is not even given
    a session to save."""
    home = conformance_home(pki, tmp_path)
    saved = tmp_path / "session.pem"
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(home, passphrase_file(pki.home.directory)) as app:
        task = asyncio.create_task(
            serve(app, ServeOptions("127.0.0.1", 0, 0), stop, ready.set_result)
        )
        try:
            port = (await asyncio.wait_for(ready, 60)).ocpp_port
            chain, key = pki.good
            first = await asyncio.to_thread(
                s_client, pki, port, "-tls1_2", "-cert", str(chain), "-key", str(key),
                "-sess_out", str(saved), "-no_ign_eof",
            )  # fmt: skip
            replayed = None
            if saved.exists():
                replayed = await asyncio.to_thread(
                    s_client, pki, port, "-tls1_2", "-sess_in", str(saved), send=UPGRADE
                )
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    assert "New, TLSv1.2" in first, first
    if replayed is None:  # nothing to offer again: the server gave no session ID
        assert re.search(r"^ +Session-ID: *$", first, re.MULTILINE), first
        return
    assert "Reused" not in replayed, replayed
    assert "HTTP/1.1 403" in replayed, replayed
    assert "101 Switching Protocols" not in replayed


def test_conformance_mode_refuses_to_serve_if_the_cache_cannot_be_turned_off(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pkictl serve` with tls.min_version = "1.2" does not start with resumption left
    on: one line saying why, exit 6 (configuration)."""
    home = conformance_home(pki, tmp_path)

    def unavailable(_: ssl.SSLContext) -> None:
        raise SeamUnavailable("the SSL_CTX found does not answer as the context does")

    monkeypatch.setattr(tls, "disable_session_cache", unavailable)
    result = CliRunner().invoke(
        cli,
        ["--home", str(home), "--passphrase-file", str(passphrase_file(pki.home.directory)),
         "serve", "--host", "127.0.0.1", "--ocpp-port", "0", "--http-port", "0"],
    )  # fmt: skip
    assert result.exit_code == 6, result.output
    assert result.stderr.splitlines()[-1] == (
        'error: tls.min_version = "1.2" needs OpenSSL\'s session cache turned off and it '
        "cannot be: the SSL_CTX found does not answer as the context does"
    )
