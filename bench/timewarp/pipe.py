"""An in-memory stand-in for a websocket connection: what the `ocpp` library and a
`Node` use of one (send, recv, close, remote_address), with no socket and no timer.

Every message is counted from its send until its reader comes back for the next one
(the message fully handled): with no message counted and no task running, the
simulation may move its clock on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed


class Traffic:
    """Messages sent and not yet handled, over all pipes."""

    def __init__(self) -> None:
        self.in_flight = 0


class PipeEnd:
    def __init__(self, traffic: Traffic, remote: tuple[str, int]) -> None:
        self.remote_address = remote
        self.peer: PipeEnd | None = None
        self.on_close: Callable[[], None] | None = None
        self._traffic = traffic
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._holding = False
        self.closed = False

    async def send(self, message: str) -> None:
        if self.closed or self.peer is None or self.peer.closed:
            raise ConnectionClosed(None, None)
        self._traffic.in_flight += 1
        self.peer._inbox.put_nowait(message)

    async def recv(self) -> str:
        self._done_with_last()
        if self.closed:
            raise ConnectionClosed(None, None)
        message = await self._inbox.get()
        if message is None:
            raise ConnectionClosed(None, None)
        self._holding = True
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        for end in (self, self.peer):
            if end is not None and not end.closed:
                end._shut()

    def _shut(self) -> None:
        self.closed = True
        while not self._inbox.empty():  # never to be read
            if self._inbox.get_nowait() is not None:
                self._traffic.in_flight -= 1
        self._done_with_last()
        self._inbox.put_nowait(None)  # wakes a waiting reader
        if self.on_close is not None:
            self.on_close()

    def _done_with_last(self) -> None:
        if self._holding:
            self._holding = False
            self._traffic.in_flight -= 1


def pipe(traffic: Traffic, index: int) -> tuple[PipeEnd, PipeEnd]:
    """(station end, CSMS end) of a new connection of station ``index``."""
    station = PipeEnd(traffic, ("csms", 8443))
    csms = PipeEnd(traffic, (f"sim-{index}", 40000 + index % 20000))
    station.peer, csms.peer = csms, station
    return station, csms
