"""`/health` of `pkictl serve` while the database cannot be written (#22 item 21): a
database locked by another process, a full disk. `degraded` with the reason and HTTP
503 while it lasts, `ok` again after; the log says so in one line each way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from integration_support import initialized_home, passphrase_file

from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from csms.services.health import StorageHealth

WAIT_S = 60.0  # generous: the machine may be busy


async def get_health(port: int) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 30)
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1])
    parsed: dict[str, Any] = json.loads(body)
    return status, parsed


async def health_until(
    port: int, condition: Callable[[int, dict[str, Any]], bool]
) -> tuple[int, dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        status, body = await get_health(port)
        if condition(status, body):
            return status, body
        assert asyncio.get_running_loop().time() < deadline, (status, body)
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(home: Path, directory: Path) -> AsyncIterator[Listening]:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(home, passphrase_file(directory)) as app:
        options = ServeOptions("127.0.0.1", 0, 0, health_interval=0.2)
        task = asyncio.create_task(serve(app, options, stop, ready.set_result))
        try:
            yield await asyncio.wait_for(ready, 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def is_ok(status: int, body: dict[str, Any]) -> bool:
    return status == 200 and body["status"] == "ok"


@pytest.mark.slow
async def test_health_is_degraded_while_another_process_locks_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = await initialized_home(tmp_path, {})
    caplog.set_level(logging.INFO, logger="pkictl.health")
    async with serving(home.path, home.directory) as ports:
        _, body = await health_until(ports.http_port, is_ok)
        assert "reason" not in body
        # another connection takes the write lock, off the event loop: waiting for it on
        # the loop would stall the server under test (its writes need the loop to finish)
        holder = sqlite3.connect(
            home.path / "pkictl.db", isolation_level=None, timeout=30, check_same_thread=False
        )
        try:
            await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
            _, body = await health_until(ports.http_port, lambda s, _: s == 503)
            assert body["status"] == "degraded"
            assert "database" in body["reason"]
            # first "no answer within 5 s", then SQLite's own word for it
            _, body = await health_until(
                ports.http_port, lambda s, b: s == 503 and "locked by another" in b["reason"]
            )
            # /health is public (the HTTP port serves OCSP and CRLs): no URL or path
            assert body["reason"] == (
                "database: locked by another connection or process (SQLITE_BUSY)"
            )
        finally:
            holder.close()
        _status, body = await health_until(ports.http_port, is_ok)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pkictl.health"]
    assert any(m.startswith("health degraded: database") for m in warnings), warnings
    assert any(str(home.path / "pkictl.db") in m for m in warnings), warnings  # the log has it
    assert any(m.startswith("health ok again") for m in warnings), warnings
    ours = [r for r in caplog.records if r.name == "pkictl.health"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in ours)


async def test_health_is_degraded_while_the_disk_is_full(tmp_path: Path, small_disk: Path) -> None:
    built = await initialized_home(tmp_path / "built", {})
    home = small_disk / "ca"
    shutil.copytree(built.path, home)
    async with serving(home, built.directory) as ports:
        await health_until(ports.http_port, is_ok)
        with (small_disk / "filler").open("wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        _status, body = await health_until(ports.http_port, lambda s, _: s == 503)
        assert body["status"] == "degraded"
        assert body["reason"] == "disk full", body
        (small_disk / "filler").unlink()
        await health_until(ports.http_port, is_ok)


class FailingProbe:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    async def probe(self) -> None:
        if self.error is not None:
            raise self.error


async def test_storage_health_reports_the_cause_and_recovers() -> None:
    probe = FailingProbe(sqlite3.OperationalError("attempt to write a readonly database"))
    health = StorageHealth(probe, lambda e: ("public", f"detail: {e}"), timeout_s=30)
    await health.check()
    assert health.reason == "public"
    probe.error = None
    await health.check()
    assert health.ok
