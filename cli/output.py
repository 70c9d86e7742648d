"""Output for people (tables) and for programs (--json): one helper for both.

Human output shows every value through `human`: station-supplied strings (reported
fields, certificate subjects, security events) have their control characters escaped
(`printable`), so a station cannot move the cursor, clear the screen or forge lines on
an operator's terminal; booleans read yes/no, lists and mappings without Python reprs.
--json output stays exact JSON (json.dumps escapes control characters itself).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators and the
# bidirectional overrides and isolates ("Trojan Source"): escaped in human output and logs
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped (\\n, \\r, \\t, \\x1b, \\u2028 ...):
    one line, no terminal escape sequences."""
    return _CONTROL.sub(_escape, text)


def human(value: Any) -> str:
    """A value as a person reads it: yes/no, lists comma-separated, mappings as
    key=value, None as "-" -- never a Python repr -- and control characters escaped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(human(v) for v in value) if value else "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{human(k)}={human(v)}" for k, v in value.items()) if value else "-"
    return printable(str(value))


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, second precision: what every --json timestamp looks like."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def emit_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "), overflow="fold")
    for row in rows:
        # Text, not str: rich reads a str as markup ("[bold]..." from a station)
        table.add_row(*(Text("" if row.get(c) is None else human(row.get(c))) for c in columns))
    Console(width=200 if not sys.stdout.isatty() else None, soft_wrap=False).print(table)


def emit_fields(data: Mapping[str, Any]) -> None:
    width = max(len(k) for k in data) + 1
    for key, value in data.items():
        click.echo(f"{printable(key.replace('_', ' ')):<{width}} {human(value)}")


def note(message: str) -> None:
    """Progress and advice: to stderr, so stdout stays clean for pipes and --json."""
    click.echo(printable(message), err=True)
