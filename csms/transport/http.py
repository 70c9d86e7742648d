"""The HTTP port of `pkictl serve` (/health, /ocsp, /crl/NAME.crl): a small, strict
HTTP/1.1 server with keep-alive, written as an asyncio Protocol.

OCSP clients POST their requests (RFC 6960 A.1), which the websockets server of the
OCPP port cannot take. The port serves three fixed paths to machines, so it needs only
a narrow part of HTTP/1.1 (RFC 9112): a request line, headers, a Content-Length body.
It was built on h11 over asyncio streams first; at one request per connection (how OCSP
clients ask) that stack cost three times what the OCSP answer did (ADR 10). Here each
connection is one Protocol object, one timer and, while a request is answered, one task.

What the server refuses, with a status and ``Connection: close``: a malformed request
line or header (400), a header section over 8 KiB (431), a body over 16 KiB (413), a
transfer coding such as chunked (411: send Content-Length; OCSP clients do), an HTTP
version other than 1.0/1.1 (505). A request must arrive in full within 30 s of the
connection or the previous answer, and an answer must be taken within 30 s, or the
connection is dropped. One request is answered at a time; pipelined requests wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

LOG = logging.getLogger("pkictl.http")
MAX_BODY_BYTES = 16 * 1024
MAX_HEAD_BYTES = 8 * 1024
IDLE_TIMEOUT_S = 30.0
WRITE_BUFFER_LIMIT = 64 * 1024

_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) ([\x21-\x7e]{1,4096}) HTTP/1\.([01])")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x20-\x7e\x80-\xff\t]*?)[ \t]*")
_VERSION = re.compile(rb"[A-Z]{1,16} [\x21-\x7e]{1,4096} HTTP/\d\.\d")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[str, str, bytes], Awaitable[Reply]]
"""(method, request target, body) -> Reply."""


class Refused(Exception):
    """A request the server will not take: answered with ``status``, then closed."""

    def __init__(self, status: HTTPStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    body_length: int
    keep_alive: bool


def parse_head(head: bytes) -> Request:
    """The request line and headers (without the blank line that ends them)."""
    line, _, rest = head.partition(b"\r\n")
    matched = _REQUEST_LINE.fullmatch(line)
    if matched is None:
        if _VERSION.fullmatch(line):
            raise Refused(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and 1.1")
        raise Refused(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, minor = matched.groups()
    lengths: set[bytes] = set()
    connection: list[bytes] = []
    hosts = 0
    for header_line in rest.split(b"\r\n") if rest else ():
        header = _HEADER.fullmatch(header_line)
        if header is None:  # including obs-fold and whitespace before the colon
            raise Refused(HTTPStatus.BAD_REQUEST, "malformed header line")
        name, value = header.group(1).lower(), header.group(2)
        if name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "transfer codings are not accepted")
        elif name == b"connection":
            connection += (v.strip().lower() for v in value.split(b","))
        elif name == b"host":
            hosts += 1
    if hosts > 1 or (minor == b"1" and hosts == 0):
        raise Refused(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs exactly one Host header")
    if len(lengths) > 1 or not all(v.isdigit() and len(v) <= 9 for v in lengths):
        raise Refused(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    length = int(lengths.pop()) if lengths else 0
    if length > MAX_BODY_BYTES:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    keep_alive = b"close" not in connection and (minor == b"1" or b"keep-alive" in connection)
    return Request(method.decode(), target.decode("ascii"), length, keep_alive)


def render(reply: Reply, *, head_only: bool, close: bool) -> bytes:
    """The whole response, for one write (one segment for a small answer)."""
    status = HTTPStatus(reply.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + reply.body


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._connections: set[_Connection] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        """Listen; ``reuse_port``: beside other processes on the same port (SO_REUSEPORT),
        the kernel spreading connections among them."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self._handler, self._connections),
                                        host, port, reuse_port=reuse_port or None)  # fmt: skip

    async def close(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        await asyncio.gather(*(c.finished() for c in connections), return_exceptions=True)


class _Connection(asyncio.Protocol):
    """One client connection: read a request, answer it, repeat while kept alive."""

    def __init__(self, handler: Handler, registry: set[_Connection]) -> None:
        self._handler = handler
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._request: Request | None = None
        self._body_at = 0
        self._answering: asyncio.Task[None] | None = None
        self._paused_writing = False
        self._eof = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._registry.add(self)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_LIMIT)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._answering is None:
            self._next_request()
        if len(self._buffer) > MAX_HEAD_BYTES + MAX_BODY_BYTES and self._transport is not None:
            self._transport.pause_reading()  # more than a request ahead: read no further

    def eof_received(self) -> bool | None:
        """The client sent all it will: answer what is being answered, then close."""
        self._eof = True
        return True if self._answering is not None else None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._arm_timer()
        self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._answering is not None:
            self._answering.cancel()
        self._transport = None

    # --- requests ---------------------------------------------------------------------

    def _next_request(self) -> None:
        transport = self._transport
        busy = self._answering is not None or self._paused_writing
        if transport is None or self._closing or busy:
            return
        try:
            if self._request is None:
                end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
                if end < 0:
                    if len(self._buffer) > MAX_HEAD_BYTES:
                        raise Refused(
                            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header too large"
                        )
                    return
                self._request = parse_head(bytes(self._buffer[:end]))
                self._body_at = end + 4
        except Refused as refused:
            LOG.info("HTTP request refused: %s", refused)
            self._write(Reply(refused.status, f"{refused}\n".encode()), head_only=False, close=True)
            return
        request = self._request
        end = self._body_at + request.body_length
        if len(self._buffer) < end:
            return
        body = bytes(self._buffer[self._body_at : end])
        del self._buffer[:end]
        self._request = None
        if not transport.is_reading():
            transport.resume_reading()
        self._answering = self._loop.create_task(self._answer(request, body))

    async def _answer(self, request: Request, body: bytes) -> None:
        try:
            reply = await self._handler(request.method, request.target, body)
        except Exception:
            LOG.exception("HTTP %s %s failed", request.method, request.target)
            reply = Reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        self._answering = None
        keep_alive = request.keep_alive and not self._eof
        self._write(reply, head_only=request.method == "HEAD", close=not keep_alive)
        if keep_alive:
            self._arm_timer()
            self._next_request()

    def _write(self, reply: Reply, *, head_only: bool, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(render(reply, head_only=head_only, close=close))
        if close:
            self._closing = True  # nothing more is read or answered
            transport.close()  # after what is buffered has been sent

    # --- time limits ------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(IDLE_TIMEOUT_S, self._expired)

    def _expired(self) -> None:
        if self._answering is None:  # the handler's own time is not the client's
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def finished(self) -> None:
        if self._answering is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._answering
