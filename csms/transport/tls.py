"""TLS for the OCPP endpoint, from the policy (OCPP A00.FR.313-321/416-421).

- ``min_version = "1.3"`` (the default): TLS 1.3 only. A TLS 1.2 client is refused at
  the handshake; there is no fallback to negotiate.
- ``min_version = "1.2"`` (conformance mode): TLS 1.3, plus for TLS 1.2 exactly the four
  suites OCPP requires. Two of them are static RSA, so the RSA server certificate is
  loaded beside the ECDSA one and OpenSSL picks by the suite negotiated.

Client certificates are requested but optional at the TLS layer, so that a station
without one can still be answered with an HTTP status before the websocket upgrade and
the refusal recorded. OpenSSL validates a presented chain up to a trusted station CA
(the anchor: a partial chain) and refuses an untrusted one. It does not judge validity
periods: an expired station certificate is the handshake decision's to refuse, or to
admit for a station allowed to renew one (A00.FR.429, `csms.domain.handshake`).
"""

from __future__ import annotations

import asyncio.sslproto
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from csms.services.handshake_failures import FailedHandshake
from csms.transport.openssl_seam import (
    RejectedCertificate,
    SeamUnavailable,
    disable_session_cache,
    forget_rejected,
    observe_rejected_certificates,
    take_rejected,
)
from pki.keys.file import atomic_write

if TYPE_CHECKING:
    from ssl import _PeerCertRetDictType, _PeerCertRetType

TLS12_OCPP_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
)
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h); the ssl module has no name for it.
VERIFY_NO_CHECK_TIME = 0x200000
LOG = logging.getLogger("pkictl.tls")
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class ServerCredential:
    """A server certificate chain (leaf first, no root) and its encrypted private key."""

    chain: Path
    key: Path


class TlsConfigError(Exception):
    """The TLS settings cannot be used; the message says which and why."""


class StationSSLObject(ssl.SSLObject):
    """The server side of a station's TLS connection. pkictl reads the peer certificate
    only in DER form and parses it with cryptography; the decoded dict that asyncio asks
    for at every handshake (and keeps for the connection's life, ~2 KiB) is not made:
    the dict form answers ``{}``, as for a certificate that was not validated.

    A handshake step that fails keeps the client certificate OpenSSL refused in it, if
    any (``rejected``: seen by the seam's verify callback, ADR 17)."""

    rejected: RejectedCertificate | None = None

    def do_handshake(self) -> None:
        forget_rejected()
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            self.rejected = take_rejected()
            raise

    @overload
    def getpeercert(self, binary_form: Literal[False] = False) -> _PeerCertRetDictType | None: ...
    @overload
    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...
    @overload
    def getpeercert(self, binary_form: bool) -> _PeerCertRetType: ...
    def getpeercert(self, binary_form: bool = False) -> _PeerCertRetType:
        return super().getpeercert(True) if binary_form else {}


class StationContext(ssl.SSLContext):
    """The OCPP endpoint's server context: whoever serves with it can be told of every
    handshake that fails (``on_handshake_failure``, see ``report_failed_handshakes``)."""

    on_handshake_failure: Callable[[FailedHandshake], None] | None = None


def server_context(
    *,
    min_version: str,
    credentials: Sequence[ServerCredential],
    station_cas_pem: str,
    passphrase: Callable[[], bytes],
) -> StationContext:
    if min_version not in MIN_VERSIONS:
        raise TlsConfigError(f"tls.min_version: {min_version!r} is not one of 1.2, 1.3")
    if not credentials:
        raise TlsConfigError("no server certificate to serve")
    if not station_cas_pem.strip():
        raise TlsConfigError("no trusted station CA: profile 3 could admit nobody")
    context = StationContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslobject_class = StationSSLObject
    context.minimum_version = MIN_VERSIONS[min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    if min_version == "1.2":
        context.set_ciphers(":".join(TLS12_OCPP_SUITES))  # TLS 1.3 suites are separate
    # No session tickets (TLS 1.3 and 1.2): a ticket is a bearer credential that resumes
    # the station's identity without its key, and minting two per handshake cost ~10 %
    # of an admission while they seldom resume (new keys per process and restart; ADR 5).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    context.num_tickets = 0
    for credential in credentials:
        try:
            context.load_cert_chain(credential.chain, credential.key, password=passphrase)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"server certificate {credential.chain} / key {credential.key}: {exc}"
            ) from None
    context.load_verify_locations(cadata=station_cas_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    # The station CAs are the trust anchors, not the root above them: the CSO root also
    # signs the CSMS's server certificates, which must not open a station's session.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | VERIFY_NO_CHECK_TIME
    _no_session_cache(context, min_version)
    # last: CPython 3.13 drops the verify callback when verify_mode is assigned
    try:
        observe_rejected_certificates(context)
    except SeamUnavailable as exc:
        _warn_once(f"failed TLS handshakes are recorded without the client certificate "
                   f"OpenSSL refused: {exc}")  # fmt: skip
    return context


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        LOG.warning("%s", message)


def _no_session_cache(context: ssl.SSLContext, min_version: str) -> None:
    """Every connection is a full handshake: no session ID is handed out or resumed
    (ADR 17). TLS 1.2 needs it: a resumed session brings the station's certificate along
    without its key, so conformance mode does not start without it. TLS 1.3 resumes only
    from tickets, and none are issued: there it is a second lock, and its absence a
    warning."""
    try:
        disable_session_cache(context)
    except SeamUnavailable as exc:
        if min_version == "1.2":
            raise TlsConfigError(
                f'tls.min_version = "1.2" needs OpenSSL\'s session cache turned off and it '
                f"cannot be: {exc}"
            ) from None
        _warn_once(f"TLS session cache left on (TLS 1.3 resumes only from tickets, and "
                   f"none are issued): {exc}")  # fmt: skip


def restore_fitting_key(credential: ServerCredential, passphrase: Callable[[], bytes]) -> bool:
    """A server certificate renewal writes the new key, then the new certificate. One
    interrupted in between leaves a key that does not fit the served certificate; the
    key it replaced (kept as NAME.key.pem.replaced) does: put it back. True if it did."""
    try:
        certificate = x509.load_pem_x509_certificate(credential.chain.read_bytes())
        key = serialization.load_pem_private_key(credential.key.read_bytes(), passphrase())
    except (OSError, ValueError, TypeError):
        return False  # unreadable: loading the context says what is wrong
    if key.public_key() == certificate.public_key():
        return False
    previous = credential.key.with_name(credential.key.name + ".replaced")
    try:
        old = serialization.load_pem_private_key(previous.read_bytes(), passphrase())
    except (OSError, ValueError, TypeError):
        return False
    if old.public_key() != certificate.public_key():
        return False
    atomic_write(credential.key, previous.read_bytes(), 0o600)
    LOG.warning("%s did not fit %s (an interrupted renewal): the previous key is back",
                credential.key, credential.chain)  # fmt: skip
    return True


class ReloadingContext:
    """A server context that picks up a renewed server certificate without a restart.

    At each new handshake (OpenSSL's servername callback, which runs for every
    ClientHello) it looks -- at most once per ``check_interval`` -- whether the watched
    certificate or key files changed, builds a fresh context if so, and hands the new
    connection to the newest one. Established connections keep what they negotiated. A
    broken new file is logged and the last good context stays in service.
    """

    def __init__(
        self,
        build: Callable[[], ssl.SSLContext],
        watched: Sequence[Path],
        *,
        check_interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._watched = tuple(watched)
        self._check_interval = check_interval
        self._monotonic = monotonic
        self._stamps = self._stat()
        self._checked = monotonic()
        self.context = build()
        self.context.sni_callback = self._on_client_hello
        self._current = self.context

    def _stat(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._watched:
            try:
                status = path.stat()
            except OSError:
                stamps.append((0, 0))
            else:
                stamps.append((status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        now = self._monotonic()
        if now - self._checked >= self._check_interval:
            self._checked = now
            stamps = self._stat()
            if stamps != self._stamps:
                self._stamps = stamps
                try:
                    self._current = self._build()
                    LOG.info("server certificate reloaded for new connections")
                except TlsConfigError as exc:
                    LOG.error("server certificate not reloaded, keeping the old one: %s", exc)
        if self._current is not self.context:
            ssl_object.context = self._current


# asyncio gives every TLS connection a 256 KiB read buffer (SSLProtocol.max_size), the
# bulk of what an idle station costs. It only bounds how much one read takes from
# OpenSSL: OCPP messages are mostly under 2 KiB (OCPP-J part 4, 5.2), and a larger frame
# takes a few more reads. Nothing else changes.
TLS_READ_BUFFER = 4 * 1024


def bound_tls_read_buffers() -> None:
    """Make asyncio's per-connection TLS read buffer TLS_READ_BUFFER bytes (process-wide:
    there is no per-server setting)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


# --- failed handshakes ----------------------------------------------------------------

_complete_handshake = asyncio.sslproto.SSLProtocol._on_handshake_complete


def _on_handshake_complete(
    protocol: asyncio.sslproto.SSLProtocol, exc: BaseException | None
) -> None:
    """asyncio's end of a server or client handshake; a failed one on a StationContext
    is reported to its handler first. Never raises: asyncio goes on as before."""
    if isinstance(exc, ssl.SSLError):
        try:
            _report_failure(protocol, exc)
        except Exception:
            LOG.exception("a failed TLS handshake could not be recorded")
    _complete_handshake(protocol, exc)


def _report_failure(protocol: asyncio.sslproto.SSLProtocol, exc: ssl.SSLError) -> None:
    handler = getattr(getattr(protocol, "_sslcontext", None), "on_handshake_failure", None)
    if handler is None:
        return
    transport = getattr(protocol, "_transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    host, port = (str(peer[0]), peer[1]) if isinstance(peer, tuple) else ("unknown", None)
    rejected = getattr(getattr(protocol, "_sslobj", None), "rejected", None)
    verify_error = getattr(exc, "verify_message", None)
    if rejected is not None:
        verify_error = f"{rejected.reason} (depth {rejected.depth})"
    handler(
        FailedHandshake(
            remote=f"{host}:{port}" if port is not None else host,
            address=host,
            reason=exc.reason,
            message=str(exc.args[1]) if len(exc.args) > 1 else str(exc),
            verify_error=verify_error,
            certificate_der=rejected.der if rejected is not None else None,
        )
    )


def report_failed_handshakes(
    context: ssl.SSLContext, handler: Callable[[FailedHandshake], None]
) -> None:
    """Call ``handler`` (on the event loop) for every TLS handshake that fails on a server
    serving with ``context``, a StationContext. asyncio reports failed handshakes to no
    one (only in debug mode); its TLS protocol is wrapped once per process to do so."""
    if not isinstance(context, StationContext):
        raise TypeError("failed handshakes are reported for a StationContext only")
    context.on_handshake_failure = handler
    protocol = asyncio.sslproto.SSLProtocol
    if protocol._on_handshake_complete is not _on_handshake_complete:
        protocol._on_handshake_complete = _on_handshake_complete  # type: ignore[method-assign,assignment]
