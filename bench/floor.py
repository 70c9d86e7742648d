"""Do-nothing servers: what the same bench client measures against a server with no
work in it -- the ceiling any Python server on the same stack can reach in that bench on
this machine (the client and the kernel's share of the cost).

* ``http`` -- an asyncio Protocol answering every connection with fixed bytes shaped
  like an OCSP response and closing, as `openssl ocsp` does; nothing is parsed, looked
  up or signed (`python -m bench.ocsp --floor`).
* ``ws TLS_CERT TLS_KEY PASSPHRASE`` -- websockets over TLS with the same server
  certificate, answering every OCPP CALL with a constant CALLRESULT; nothing validated
  or stored, no compression (`python -m bench.fleet --scenario messages --floor`).

Run as ``python -m bench.floor http|ws ...``: prints its port on stdout, serves until
killed. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

OCSP_BODY = b"\x30\x03\x0a\x01\x00"  # OCSPResponse, status internalError: a DER SEQUENCE
HTTP_REPLY = (
    b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n"
    + f"Content-Length: {len(OCSP_BODY)}\r\n\r\n".encode()
    + OCSP_BODY
)
CALL_RESULT = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300}


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(HTTP_REPLY)
        self.transport.close()


async def _answer_calls(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(json.dumps([3, json.loads(message)[1], CALL_RESULT]))
    except Exception:  # noqa: BLE001, S110 -- the client went away
        pass


async def main(argv: list[str]) -> None:
    kind, *rest = argv
    server: Any
    if kind == "http":
        server = await asyncio.get_running_loop().create_server(_Answer, "127.0.0.1", 0)
    else:
        cert, key, passphrase = rest
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key, password=passphrase)
        server = await serve(
            _answer_calls,
            "127.0.0.1",
            0,
            ssl=context,
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            compression=None,
        )
    print(next(iter(server.sockets)).getsockname()[1], flush=True)
    await asyncio.Future()


async def start(*argv: str) -> tuple[asyncio.subprocess.Process, int]:
    """``python -m bench.floor ARGV...`` as a subprocess: (process, port)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.floor", *argv, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"bench.floor {argv[0]} said {line!r}")
    return process, int(line)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
