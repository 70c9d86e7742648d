"""Output for people (tables) and for programs (--json): one helper for both.

Human output shows every value through `human`: station-supplied strings (reported
fields, certificate subjects, security events) have their control characters escaped
(`printable`), so a station cannot move the cursor, clear the screen or forge lines on
an operator's terminal; booleans read yes/no, lists and mappings without Python reprs.
--json output stays exact JSON (json.dumps escapes control characters itself).
"""

from __future__ import annotations

import errno
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from csms.domain.text import printable
from pki.errors import ConflictError
from pki.keys.file import atomic_write


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


SHORT_SERIAL = 12
"""Hex digits a table shows of a certificate serial (more when needed to tell the rows
apart): 32 hex digits wrapped tables at 80-120 columns. --json has the whole serial;
`cert show` and `cert revoke` accept any unique prefix."""
_HEX = re.compile("^[0-9a-f]+$")


def short_serials(values: Sequence[Any]) -> dict[str, str]:
    """Each hex serial among ``values`` -> its shortest prefix of at least SHORT_SERIAL
    digits that no other of them shares."""
    serials = {v for v in values if isinstance(v, str) and _HEX.match(v)}
    shown: dict[str, str] = {}
    for serial in serials:
        length = min(SHORT_SERIAL, len(serial))
        while length < len(serial) and any(
            other != serial and other.startswith(serial[:length]) for other in serials
        ):
            length += 1
        shown[serial] = serial[:length]
    return shown


def _is_serial_column(name: str) -> bool:
    return name == "serial" or name.endswith("_serial")


def emit_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "), overflow="fold")
    shortened = short_serials([row.get(c) for row in rows for c in columns if _is_serial_column(c)])
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if _is_serial_column(column) and isinstance(value, str):
                value = shortened.get(value, value)
            # Text, not str: rich reads a str as markup ("[bold]..." from a station)
            cells.append(Text("" if value is None else human(value)))
        table.add_row(*cells)
    Console(width=200 if not sys.stdout.isatty() else None, soft_wrap=False).print(table)


def emit_fields(data: Mapping[str, Any]) -> None:
    width = max(len(k) for k in data) + 1
    for key, value in data.items():
        click.echo(f"{printable(key.replace('_', ' ')):<{width}} {human(value)}")


def note(message: str) -> None:
    """Progress and advice: to stderr, so stdout stays clean for pipes and --json."""
    click.echo(printable(message), err=True)


def refuse_existing(out: Path | None, force: bool) -> None:
    """--out names a file that exists: refused (exit 5) unless --force, before anything
    is done. (A device or pipe, /dev/stdout say, is written to, not replaced.)"""
    if out is not None and not force and out.is_file():
        raise ConflictError(f"--out: {out} exists; give --force to overwrite it")


def write_out(out: Path, data: bytes, force: bool) -> None:
    """Write --out whole (never half a file); without --force never over a file that
    appeared meanwhile (exit 5). A device or pipe is written to in place."""
    if out.exists() and not out.is_file() and not out.is_dir():
        with out.open("wb") as handle:
            handle.write(data)
        return
    if not out.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "its directory does not exist", str(out))
    atomic_write(out, data, 0o644, exclusive=not force)


force_option = click.option(
    "--force", is_flag=True, help="Overwrite the --out file if it exists (else refused, exit 5)."
)
