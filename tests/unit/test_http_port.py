"""The HTTP/1.1 server of the HTTP port (csms.transport.http) on loopback: keep-alive,
pipelining, bounded and strict requests, a handler that fails, slow clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from csms.transport import http
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


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /health HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"400"),  # obs-fold
        (b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", b"400"),  # space before the colon
        (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
         b"400"),
        (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
         b"411"),
        (b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 9000 + b"\r\n\r\n", b"431"),
    ],
)  # fmt: skip
async def test_what_is_not_strict_http_is_refused_with_a_status_and_closed(
    port: int, raw: bytes, status: bytes
) -> None:
    answer = await exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in answer
    assert b"200 OK" not in answer


async def test_http_1_0_closes_head_has_no_body_and_a_half_closed_client_is_answered(
    port: int,
) -> None:
    answer = await exchange(port, b"GET /health HTTP/1.0\r\n\r\n")  # closed without asking
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"GET /health 0")
    head = await exchange(port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: 14\r\n" in head
    assert head.endswith(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    writer.write_eof()  # sent all it will: still answered, then closed
    assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"POST /ocsp 2")
    writer.close()


async def test_a_request_sent_byte_by_byte_and_pipelined_requests_are_answered_in_order(
    port: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    for byte in first:
        writer.write(bytes([byte]))
        await writer.drain()
    writer.write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" * 20
                 + b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.count(b"HTTP/1.1 200") == 22
    assert answer.index(b"POST /a 3") < answer.index(b"GET /b 0") < answer.index(b"GET /c 0")


async def test_a_client_that_sends_half_a_request_is_dropped_after_the_idle_timeout(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "IDLE_TIMEOUT_S", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    writer.close()
