"""`pkictl outbox …`: calls the CSMS has made or will make to stations."""

from __future__ import annotations

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso
from csms.app import App
from csms.services.outbox import OutboxItem

OUTBOX_COLUMNS = ("id", "station", "action", "state", "attempts", "created_at", "finished_at")


def outbox_view(item: OutboxItem) -> dict[str, object]:
    return {
        "id": item.id,
        "station": item.station_id,
        "action": item.action,
        "state": item.state.value,
        "attempts": item.attempts,
        "created_at": iso(item.created_at),
        "sent_at": iso(item.sent_at),
        "finished_at": iso(item.finished_at),
        "payload": item.payload,
        "response": item.response,
        "error": item.error,
    }


@click.group()
def outbox() -> None:
    """Calls to stations: queued until the station is connected, kept with the answer."""


@outbox.command("list")
@click.option("--station", "station_id", help="Only calls to this station.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_obj
def outbox_list(ctx: Context, station_id: str | None, limit: int, as_json: bool) -> None:
    """The most recent calls, oldest first: queued, sent, answered, failed, timed_out."""

    async def action(app: App) -> list[OutboxItem]:
        return await app.outbox.list(station_id, limit)

    rows = [outbox_view(i) for i in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, OUTBOX_COLUMNS)
