"""The HTTP port of `pkictl serve` (/health, /ocsp, /crl/NAME.crl): HTTP/1.1 with
keep-alive over asyncio streams, parsed by h11.

OCSP clients POST their requests (RFC 6960 A.1), which the websockets server of the
OCPP port cannot take. The handler is an async function of (method, target, body) to a
Reply; the transport bounds what it reads and how long it waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11

LOG = logging.getLogger("pkictl.http")
MAX_BODY_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 30.0
READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[str, str, bytes], Awaitable[Reply]]
"""(method, request target, body) -> Reply."""


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._accept, host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, h11.ProtocolError):
            pass  # the client went away or spoke something else: drop the connection
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT_S):  # the whole request, not each read
                request, body = await self._read_request(connection, reader, writer)
            if request is None:
                return
            reply = await self._reply(request, body)
            if request.method == b"HEAD":  # the headers of the GET, no body
                reply = Reply(reply.status, b"", reply.content_type, reply.headers)
            headers = [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                *reply.headers,
            ]
            writer.write(b"".join((  # one write: one segment for a small answer
                connection.send(h11.Response(status_code=reply.status, headers=headers)) or b"",
                connection.send(h11.Data(data=reply.body)) or b"" if reply.body else b"",
                connection.send(h11.EndOfMessage()) or b"",
            )))  # fmt: skip
            async with asyncio.timeout(IDLE_TIMEOUT_S):  # a client that never reads
                await writer.drain()
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    async def _read_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> tuple[h11.Request | None, bytes]:  # fmt: skip
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(READ_CHUNK))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    await self._refuse(connection, writer, 413, b"request body too large\n")
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            else:  # ConnectionClosed, PAUSED
                return None, b""

    async def _refuse(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes
    ) -> None:
        headers = [("Content-Length", str(len(body))), ("Connection", "close")]
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
        writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()

    async def _reply(self, request: h11.Request, body: bytes) -> Reply:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        try:
            return await self._handler(method, target, body)
        except Exception:
            LOG.exception("HTTP %s %s failed", method, target)
            return Reply(500, b"internal error\n")

    async def close(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
