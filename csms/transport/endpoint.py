"""The OCPP websocket endpoint: every refusal is an HTTP answer before the upgrade.

`wss://HOST:PORT/ocpp/STATION_ID` (or `/STATION_ID`), subprotocol `ocpp2.0.1`
required. The request handler gathers the facts (URL, client certificate, Basic
credentials) and the connection gate decides; only admitted stations get a websocket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import weakref
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from csms.domain.handshake import HttpStatus, Transport
from csms.services.gate import Admission, ConnectionGate, ConnectionRequest
from pki.records import STATION_ID_PATTERN

OCPP_SUBPROTOCOL = "ocpp2.0.1"
MAX_FRAME_BYTES = 64 * 1024
# No permessage-deflate: OCPP messages are small, and websockets' default keeps a zlib
# compressor and decompressor per connection, ~48 KiB of an idle station's memory
# (measured: bench/RESULTS.md). OCPP-J does not ask for it; stations that offer it get
# uncompressed frames, which the extension negotiation allows.
COMPRESSION = None
OPEN_TIMEOUT_S = 30.0
"""The websocket upgrade must be done within this (websockets' default is 10 s): in a
reconnection storm a station that has finished its TLS handshake is answered late
rather than dropped -- dropped, it would come back and pay for TLS again."""

WRITE_LIMIT = 32 * 1024
"""Bytes queued for a station (websockets' write buffer high-water mark) before its
connection stops reading from it: see `BackpressuredConnection`."""
WRITE_STALL_S = 60.0
"""Seconds a station may leave WRITE_LIMIT bytes unread before its connection is
aborted: no close frame would get through, and the keepalive ping waits in the same
queue, so nothing else would ever end it."""
MAX_QUEUED_FRAMES = 16
"""Frames received and not yet handled before the connection stops reading (at most
16 x 64 KiB per station: a session handles one message at a time)."""

SessionRunner = Callable[[str, ServerConnection, Admission], Awaitable[None]]
LOG = logging.getLogger("pkictl.endpoint")


class BackpressuredConnection(ServerConnection):
    """A websocket connection that stops reading from a peer that does not read.

    websockets answers a ping, and a close, as the frame is parsed, writing the pong
    whether the peer reads or not; our own messages wait for the write buffer to drain,
    these do not. A station sending pings and reading nothing made the server buffer
    every pong (+220 MB). Here, while more than WRITE_LIMIT bytes wait to be written,
    nothing more is read from the peer (its pings wait in its own socket buffers);
    reading resumes when the buffer has drained, unless the queue of received frames
    holds it paused too. A peer that reads nothing for `stall_timeout_s` is aborted
    (logged): no close frame, and not the keepalive ping either, would reach it."""

    stall_timeout_s = WRITE_STALL_S
    _stalled: asyncio.TimerHandle | None = None  # only while writes wait: no idle cost

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.paused and self.transport.is_reading():  # paused: writes wait to drain
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled = self.loop.call_later(self.stall_timeout_s, self._abort_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._forget_stall()
        if not self.recv_messages.paused and not self.transport.is_reading():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_stall()
        super().connection_lost(exc)

    def _forget_stall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _abort_stalled(self) -> None:
        self._stalled = None
        LOG.warning(
            "%s (%s) read nothing of the %d bytes waiting for it for %.0f s: connection aborted",
            self.request.path if self.request else "?", remote_of(self),
            self.transport.get_write_buffer_size(), self.stall_timeout_s,
        )  # fmt: skip
        self.transport.abort()


def station_id_from_path(path: str) -> str | None:
    """The station id of `/ocpp/ID` or `/ID`; None for any other path."""
    segments = [unquote(s) for s in urlsplit(path).path.split("/")[1:]]
    if len(segments) == 2 and segments[0] == "ocpp":
        candidate = segments[1]
    elif len(segments) == 1:
        candidate = segments[0]
    else:
        return None
    return candidate if STATION_ID_PATTERN.match(candidate) else None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of an `Authorization: Basic` header; None if absent or unusable."""
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def remote_of(connection: ServerConnection) -> str:
    """`host:port` of the peer, for logs and events."""
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "unknown"


def offered_subprotocols(request: Request) -> list[str]:
    return [
        item.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for item in header.split(",")
    ]


def forget_handshake_headers(connection: ServerConnection) -> None:
    """websockets keeps the upgrade request and response for the connection's life; their
    headers (~3 KiB) are read by nothing once the station is admitted."""
    for message in (connection.request, connection.response):
        if message is not None:
            message.headers.clear()


class OcppEndpoint:
    def __init__(self, gate: ConnectionGate, run_session: SessionRunner, transport: Transport):
        self._gate = gate
        self._run_session = run_session
        self._transport = transport
        # Weak: a connection whose upgrade fails after admission must not linger here.
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, tuple[str, Admission]] = (
            weakref.WeakKeyDictionary()
        )

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            return connection.respond(
                HTTPStatus.NOT_FOUND,
                "connect to /ocpp/STATION_ID (id: 1-48 of A-Z a-z 0-9 . _ : -)\n",
            )
        if OCPP_SUBPROTOCOL not in offered_subprotocols(request):
            return connection.respond(
                HTTPStatus.BAD_REQUEST,
                f"the websocket subprotocol {OCPP_SUBPROTOCOL} is required\n",
            )
        ssl_object = connection.transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        admission = await self._gate.admit(
            ConnectionRequest(
                station_id=station_id,
                transport=self._transport,
                peer_certificate_der=peer or None,
                basic_auth=basic_credentials(request.headers.get("Authorization")),
                remote=remote_of(connection),
            )
        )
        decision = admission.decision
        if not decision.accepted:
            if decision.status is HttpStatus.UNAUTHORIZED:
                # one body for an unknown id, a wrong password and none: guessing ids and
                # guessing passwords look alike (ADR 5); the log has the reason
                response = connection.respond(decision.status, "unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
                return response
            return connection.respond(decision.status, f"{decision.refusal}\n")
        self._admitted[connection] = (station_id, admission)
        return None

    async def handle(self, connection: ServerConnection) -> None:
        station_id, admission = self._admitted.pop(connection)
        forget_handshake_headers(connection)
        await self._run_session(station_id, connection, admission)
