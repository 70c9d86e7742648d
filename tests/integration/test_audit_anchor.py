"""An emptied audit log with its head rewound is detected (#22 item 23, ADR 3):
`pkictl serve` publishes the head (log line, [audit] head_file) and `pkictl audit
verify --head SEQ:HASH` fails (exit 7) on a log that no longer holds that entry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from integration_support import Home, initialized_home, passphrase_file

from cli.main import cli
from csms.app import open_app
from csms.serve_options import Listening, ServeOptions
from csms.service import serve
from pki.audit import GENESIS_HASH

WAIT_S = 60.0


def pkictl(home: Home, *args: str) -> Result:
    runner = CliRunner(env={"PKICTL_PASSPHRASE": None, "PKICTL_DATABASE_URL": None})
    return runner.invoke(cli, ["--home", str(home.path), *args], catch_exceptions=False)


@contextlib.asynccontextmanager
async def serving(home: Home) -> AsyncIterator[Listening]:
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    async with open_app(home.path, passphrase_file(home.directory)) as app:
        task = asyncio.create_task(
            serve(app, ServeOptions("127.0.0.1", 0, 0), stop, ready.set_result)
        )
        try:
            yield await asyncio.wait_for(ready, 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def holds(path: Path, wanted: str) -> bool:
    return path.exists() and path.read_text() == wanted


async def file_holding(path: Path, wanted: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not holds(path, wanted):
        assert asyncio.get_running_loop().time() < deadline, f"{path} never held {wanted}"
        await asyncio.sleep(0.1)


def configure_anchor(home: Home) -> None:
    config = home.path / "pkictl.toml"
    text = config.read_text()
    assert "\n[audit]\n" in text  # rendered by init, its keys commented out
    config.write_text(
        text.replace(
            "\n[audit]\n", '\n[audit]\nhead_file = "anchor/audit-head"\nhead_interval_s = 1\n'
        )
    )


async def test_serve_publishes_the_head_and_verify_head_catches_an_emptied_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = await initialized_home(tmp_path, {})
    configure_anchor(home)
    caplog.set_level(logging.INFO, logger="pkictl.audit")
    anchor = home.path / "anchor" / "audit-head"

    async with serving(home):
        first = json.loads((await asyncio.to_thread(pkictl, home, "audit", "verify", "--json"))
                           .stdout)["head"]  # fmt: skip
        await file_holding(anchor, f"{first['seq']}:{first['hash']}\n")
        added = await asyncio.to_thread(
            pkictl, home, "station", "add", "CS001", "--serial", "SN-0001"
        )  # an audited write: the head moves, and is published again
        assert added.exit_code == 0, added.output
        moved = json.loads((await asyncio.to_thread(pkictl, home, "audit", "verify", "--json"))
                           .stdout)["head"]  # fmt: skip
        assert moved["seq"] > first["seq"]
        await file_holding(anchor, f"{moved['seq']}:{moved['hash']}\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "pkictl.audit"]
    assert f"audit head {first['seq']}:{first['hash']}" in lines
    assert f"audit head {moved['seq']}:{moved['hash']}" in lines
    recorded = anchor.read_text().strip()

    ok = await asyncio.to_thread(pkictl, home, "audit", "verify", "--head", recorded)
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.stderr

    # whoever holds the database empties the log and rewinds its head
    with contextlib.closing(sqlite3.connect(home.path / "pkictl.db")) as db, db:
        db.execute("DELETE FROM audit_log")
        db.execute("UPDATE audit_head SET seq = 0, hash = ?", [GENESIS_HASH])
    unanchored = await asyncio.to_thread(pkictl, home, "audit", "verify")
    assert unanchored.exit_code == 0  # the hole ADR 3 describes
    caught = await asyncio.to_thread(pkictl, home, "audit", "verify", "--head", recorded, "--json")
    assert caught.exit_code == 7, caught.output
    report = json.loads(caught.stdout)
    assert report["intact"] is False
    assert report["anchor"] == recorded
    assert any("entries were deleted" in p for p in report["problems"]), report


def test_verify_head_catches_a_rewritten_entry_and_a_bad_argument(tmp_path: Path) -> None:
    home = asyncio.run(initialized_home(tmp_path, {}))
    head = json.loads(pkictl(home, "audit", "verify", "--json").stdout)["head"]
    other = "f" * 64
    rewritten = pkictl(home, "audit", "verify", "--head", f"{head['seq']}:{other}")
    assert rewritten.exit_code == 7
    assert f"entry {head['seq']} has hash {head['hash']}" in rewritten.stderr
    beyond = pkictl(home, "audit", "verify", "--head", f"{head['seq'] + 5}:{other}")
    assert beyond.exit_code == 7
    assert "truncated" in beyond.stderr
    bad = pkictl(home, "audit", "verify", "--head", "12:nothex")
    assert bad.exit_code == 2
    assert "SEQ:HASH" in bad.output
