"""One admitted station cannot grow the server's memory without bound (#22): answers to
calls never sent are dropped, not queued; pongs to a client that never reads stop
being written once the connection's write buffer is full (the server stops reading).

The server is a real `pkictl serve` process; its resident memory is read from
/proc/PID/status before and after each flood. The floods are a few times the bound
the test allows, so that the memory they used to keep would show."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from integration_support import Home, Identity, initialized_home, passphrase_file
from websockets.asyncio.client import ClientConnection

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads /proc/PID/status"
)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Fleet:
    home: Home
    station: Identity


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    async def build() -> Fleet:
        home = await initialized_home(
            tmp_path_factory.mktemp("floods"), {"CS001": ("SN-0001", 3, False)}
        )
        return Fleet(home, await home.issue("station", station="CS001", serial="SN-0001"))

    return asyncio.run(build())


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    log: Path

    def rss(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@pytest.fixture
async def server(fleet: Fleet, tmp_path: Path) -> AsyncIterator[Server]:
    pkictl = Path(sys.executable).parent / "pkictl"
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(pkictl), "--home", str(fleet.home.path),
            "--passphrase-file", str(passphrase_file(fleet.home.directory)),
            "serve", "--host", "127.0.0.1", "--ocpp-port", "0", "--http-port", "0",
            stderr=stderr,
        )  # fmt: skip
    try:
        for _ in range(600):
            if found := re.search(r"wss://127\.0\.0\.1:(\d+)/", log.read_text()):
                break
            assert process.returncode is None, log.read_text()
            await asyncio.sleep(0.1)
        else:
            pytest.fail("pkictl serve did not start listening within 60 s")
        yield Server(process.pid, int(found.group(1)), log)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def connect(fleet: Fleet, server: Server) -> ClientConnection:
    return await websockets.connect(
        f"wss://127.0.0.1:{server.port}/ocpp/CS001",
        ssl=fleet.home.client_context(fleet.station),
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        open_timeout=30,
        ping_interval=None,
        max_size=None,
    )


async def heartbeat(connection: ClientConnection, message_id: str) -> None:
    """A call answered: every frame sent before it has been handled."""
    await connection.send(json.dumps([2, message_id, "Heartbeat", {}]))
    while True:
        answer = json.loads(await asyncio.wait_for(connection.recv(), 60))
        if answer[1] == message_id:
            assert answer[0] == 3, answer
            return


async def answers_to_calls_never_sent(connection: ClientConnection, count: int, tag: str) -> None:
    filler = "a" * 60_000
    for number in range(count):
        await connection.send(f'[3,"{tag}-{number}",{{"data":"{filler}"}}]')
    await heartbeat(connection, f"{tag}-done")


async def test_answers_to_calls_never_sent_are_dropped_not_queued(
    fleet: Fleet, server: Server
) -> None:
    """4,000 such frames of 60 KB used to keep +231 MB until the connection closed."""
    async with await connect(fleet, server) as connection:
        await answers_to_calls_never_sent(connection, 200, "warm-up")
        before = server.rss()
        await answers_to_calls_never_sent(connection, 2_000, "flood")  # 120 MB
        grown = server.rss() - before
        assert grown < 40 * MIB, f"the server grew {grown / MIB:.0f} MiB"
        await heartbeat(connection, "still-served")
    log = server.log.read_text()
    assert "answers to calls never sent" in log
    assert log.count("never sent") < 20  # logged, not once per frame


PING = b"\x89\xfd" + bytes(4) + b"p" * 125  # FIN+ping, masked (key 0), 125 bytes


async def test_pings_from_a_client_that_never_reads_do_not_pile_up_pongs(
    fleet: Fleet, server: Server
) -> None:
    """A client that sends pings and reads nothing used to make the server buffer
    every pong (+220 MB); now the server stops reading it once its writes back up."""
    async with await connect(fleet, server) as connection:
        await heartbeat(connection, "before")
        before = server.rss()
        transport = connection.transport
        transport.pause_reading()  # never reads again: not its pongs, not anything
        burst = PING * 2_000  # 262 KB
        sent = 0
        while sent < 400_000:  # 52 MB of pings, as many bytes of pongs
            transport.write(burst)
            sent += 2_000
            for _ in range(50):  # the server reads them, or stops reading: 5 s
                if transport.get_write_buffer_size() < 4 * MIB:
                    break
                await asyncio.sleep(0.1)
            else:
                break  # backpressure: the server no longer reads this client
        await asyncio.sleep(2)  # what the server has read it has answered by now
        grown = server.rss() - before
        assert grown < 20 * MIB, f"the server grew {grown / MIB:.0f} MiB after {sent} pings"
        assert sent < 400_000  # it stopped reading: the pings wait in the socket buffers
        transport.abort()
    async with await connect(fleet, server) as other:  # the server is fine
        await heartbeat(other, "after")
