"""Output for people (tables) and for programs (--json): one helper for both."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table


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
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(width=200 if not sys.stdout.isatty() else None, soft_wrap=False).print(table)


def emit_fields(data: Mapping[str, Any]) -> None:
    width = max(len(k) for k in data) + 1
    for key, value in data.items():
        shown = value
        if isinstance(value, list | tuple):
            shown = ", ".join(str(v) for v in value) if value else "-"
        click.echo(f"{key.replace('_', ' '):<{width}} {'-' if shown is None else shown}")


def note(message: str) -> None:
    """Progress and advice: to stderr, so stdout stays clean for pipes and --json."""
    click.echo(message, err=True)
