"""The HTTP/1.1 server of the HTTP port (csms.transport.http) on loopback: keep-alive,
bounded bodies, a handler that fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from csms.transport.http import MAX_BODY_BYTES, HttpServer, Reply


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async def handle(method: str, target: str, body: bytes) -> Reply:
        if target == "/fail":
            raise RuntimeError("boom")
        return Reply(200, f"{method} {target} {len(body)}".encode())

    http = HttpServer(handle)
    server = await http.start("127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await http.close()


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(), 5)  # until the server closes
    finally:
        writer.close()


async def test_keep_alive_answers_each_request_on_one_connection(port: int) -> None:
    two = (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
           b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    answer = await exchange(port, two)
    assert answer.count(b"HTTP/1.1 200") == 2
    assert b"POST /ocsp 3" in answer
    assert b"GET /health 0" in answer


async def test_too_large_a_body_is_refused_and_a_failing_handler_is_a_500(port: int) -> None:
    size = MAX_BODY_BYTES + 1
    big = b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    assert (await exchange(port, big)).startswith(b"HTTP/1.1 413")
    failing = b"GET /fail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert (await exchange(port, failing)).startswith(b"HTTP/1.1 500")
    garbage = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert b"200" not in garbage  # dropped, nothing answered
