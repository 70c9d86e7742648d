"""`pkictl tx …`: charging transactions as stations reported them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, force_option, iso, note, refuse_existing, write_out
from csms.app import App
from csms.services.transactions import TransactionSummary

TX_FIELDS = (
    "station_id", "transaction_id", "id_token", "evse_id", "connector_id", "started_at",
    "ended_at", "stopped_reason", "meter_start_wh", "meter_stop_wh", "energy_wh", "events",
)  # fmt: skip
TX_COLUMNS = ("station_id", "transaction_id", "id_token", "started_at", "ended_at", "energy_wh")


def _finite(value: float | None) -> float | None:
    """A reading stored before non-finite values were refused (issue 22) shows as null:
    JSON has no Infinity or NaN, and neither is an amount of energy."""
    return value if value is None or math.isfinite(value) else None


def tx_view(summary: TransactionSummary) -> dict[str, object]:
    return {
        "station_id": summary.station_id,
        "transaction_id": summary.transaction_id,
        "id_token": summary.id_token,
        "evse_id": summary.evse_id,
        "connector_id": summary.connector_id,
        "started_at": iso(summary.started_at),
        "ended_at": iso(summary.ended_at),
        "stopped_reason": summary.stopped_reason,
        "meter_start_wh": _finite(summary.meter_start_wh),
        "meter_stop_wh": _finite(summary.meter_stop_wh),
        "energy_wh": _finite(summary.energy_wh),
        "events": summary.events,
    }


def _rows(ctx: Context, station_id: str | None) -> list[dict[str, object]]:
    async def action(app: App) -> list[TransactionSummary]:
        return await app.transactions.list(station_id)

    return [tx_view(s) for s in run_with_app(ctx, action)]


@click.group()
def tx() -> None:
    """Charging transactions (TransactionEvent), energy per transaction."""


@tx.command("list")
@click.option("--station", "station_id", help="Only this station's transactions.")
@json_option
@click.pass_obj
def tx_list(ctx: Context, station_id: str | None, as_json: bool) -> None:
    """List transactions, oldest first."""
    rows = _rows(ctx, station_id)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, TX_COLUMNS)


@tx.command("export")
@click.option("--format", "format_", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)  # fmt: skip
@click.option("--station", "station_id", help="Only this station's transactions.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout.")  # fmt: skip
@force_option
@click.pass_obj
def tx_export(
    ctx: Context, format_: str, station_id: str | None, out: Path | None, force: bool
) -> None:
    """Export every transaction with its energy (Wh), for billing and reconciliation."""
    refuse_existing(out, force)
    rows = _rows(ctx, station_id)
    buffer = io.StringIO()
    if format_ == "json":
        buffer.write(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    else:
        writer = csv.DictWriter(buffer, fieldnames=TX_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if out is None:
        click.echo(buffer.getvalue(), nl=False)
    else:
        write_out(out, buffer.getvalue().encode("utf-8"), force)
        note(f"wrote {len(rows)} transactions to {out}")
