"""Station-controlled strings cannot forge log lines or reach a terminal raw (#22 item
9): a SecurityEventNotification whose type holds "\\n" and whose techInfo holds an ESC
sequence, sent by a real station (the `ocpp` library's ChargePoint, over mutual TLS) to
a real `pkictl serve` process, is one escaped log line; `pkictl events list` shows it
without ESC, and `--json` keeps the exact strings."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import websockets
from click.testing import CliRunner
from integration_support import initialized_home, passphrase_file
from ocpp.v201 import ChargePoint, call

from cli.logs import EscapingFormatter
from cli.main import cli
from cli.output import human, printable

FORGED = "2026-01-01 00:00:00,000 WARNING pkictl.gate: CS999 admitted"
EVENT_TYPE = f"\x1b[2JX\n{FORGED}"[:50]  # type: string, at most 50 characters
TECH_INFO = "lid \x1b[2J\x1b[31mopen\r\x07\x7f\x9b\u2028end"


async def test_a_reported_event_is_one_escaped_log_line_and_events_list_has_no_esc(
    tmp_path: Path,
) -> None:
    home = await initialized_home(tmp_path, {"CS001": ("SN-0001", 3, False)})
    identity = await home.issue("good", station="CS001", serial="SN-0001")
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pkictl"), "--home", str(home.path),
        "--passphrase-file", str(passphrase_file(home.directory)),
        "serve", "--host", "127.0.0.1", "--ocpp-port", "0", "--http-port", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        banner = b""
        while b"pkictl serve: OCPP on" not in banner:
            banner = await asyncio.wait_for(process.stderr.readline(), 60)
            assert banner, "pkictl serve exited before listening"
        port = int(re.search(rb"wss://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
        async with websockets.connect(
            f"wss://127.0.0.1:{port}/ocpp/CS001",
            ssl=home.client_context(identity),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        ) as connection:
            station = ChargePoint("CS001", connection)
            listener = asyncio.create_task(station.start())
            try:
                await station.call(
                    call.SecurityEventNotification(
                        type=EVENT_TYPE, timestamp="2026-11-26T12:00:00Z", tech_info=TECH_INFO
                    )
                )
            finally:
                listener.cancel()
        process.send_signal(signal.SIGTERM)
        stderr = (await asyncio.wait_for(process.stderr.read(), 60)).decode()
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    lines = stderr.splitlines()
    reported = [line for line in lines if "pkictl.security: station CS001 reports" in line]
    assert reported == [
        reported[0].split(" INFO ")[0]
        + " INFO pkictl.security: station CS001 reports \\x1b[2JX\\n"
        + FORGED[: 50 - 6]
    ], reported
    assert not any(line.startswith(FORGED[:10]) and "CS999" in line for line in lines)
    assert "\x1b" not in stderr

    runner = CliRunner(env={"PKICTL_PASSPHRASE": None, "PKICTL_DATABASE_URL": None})
    shown = await asyncio.to_thread(
        runner.invoke, cli, ["--home", str(home.path), "events", "list", "--station", "CS001"],
        catch_exceptions=False,
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert "\\x1b[2JX\\n2026-01-01" in shown.stdout  # the type, escaped, on one line
    assert not any(line.startswith(FORGED[:10]) for line in shown.stdout.splitlines())

    exact = await asyncio.to_thread(
        runner.invoke, cli,
        ["--home", str(home.path), "events", "list", "--station", "CS001", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    (event,) = [e for e in json.loads(exact.stdout) if e["event"] == "security.event"]
    assert event["what"] == EVENT_TYPE
    assert event["detail"]["tech_info"] == TECH_INFO


def test_the_formatter_escapes_message_and_arguments_and_indents_tracebacks() -> None:
    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "pkictl.test", logging.WARNING, __file__, 1, "a\nb %s", ("c\r\nd\x1b[2J",), None
    )
    assert formatter.format(record) == "WARNING pkictl.test: a\\nb c\\r\\nd\\x1b[2J"
    assert record.msg == "a\nb %s"  # the record is left as it was, for other handlers
    try:
        raise ValueError("bad\n" + FORGED)
    except ValueError:
        record = logging.LogRecord(
            "pkictl.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = formatter.format(record)
    first, *rest = text.splitlines()
    assert first == "ERROR pkictl.test: failed"
    assert rest
    assert all(line.startswith("    ") for line in rest)  # none passes for a record
    assert rest[-2:] == ["    ValueError: bad", f"    {FORGED}"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "yes"), (False, "no"), (None, "-"), ([7, 8], "7, 8"), ([], "-"),
        ({"seq": 18, "hash": "ab"}, "seq=18, hash=ab"), ("a\tb\u202ec", "a\\tb\\u202ec"),
        ("\x00\x1f\x7f\x85\x9f", "\\x00\\x1f\\x7f\\x85\\x9f"), ("plain é ü", "plain é ü"),
    ],
)  # fmt: skip
def test_human_output_has_no_reprs_and_no_control_characters(value: object, shown: str) -> None:
    assert human(value) == shown
    assert printable("ok") == "ok"


def test_a_database_fault_is_logged_as_its_cause_in_one_line() -> None:
    """#22 item 21: a heartbeat that failed on a locked database is one line, not a
    traceback, in the serve log."""
    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise sqlite3.OperationalError("database is locked")
    except sqlite3.OperationalError:
        record = logging.LogRecord(
            "pkictl.nodes", logging.ERROR, __file__, 1, "node %s: heartbeat failed", ("n1",),
            sys.exc_info(),
        )  # fmt: skip
    assert formatter.format(record) == (
        "ERROR pkictl.nodes: node n1: heartbeat failed "
        "(database: locked by another connection or process (SQLITE_BUSY))"
    )
    assert record.exc_info is not None  # left for other handlers
