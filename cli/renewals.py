"""`pkictl renew …` and `pkictl renewals …`: certificate renewal over OCPP (A02)."""

from __future__ import annotations

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso, note
from csms.app import App, actor
from csms.domain.renewal import CertificateKind
from csms.services.renewals import Renewal

RENEWAL_COLUMNS = ("id", "station", "kind", "state", "old_serial", "new_serial", "updated_at")
KIND_NAMES = {"station": CertificateKind.STATION, "v2g": CertificateKind.V2G}


def renewal_view(renewal: Renewal) -> dict[str, object]:
    return {
        "id": renewal.id,
        "station": renewal.station_id,
        "kind": renewal.kind.value,
        "state": renewal.state.value,
        "old_serial": renewal.old_serial,
        "new_serial": renewal.new_serial,
        "requested_by": renewal.requested_by,
        "created_at": iso(renewal.created_at),
        "updated_at": iso(renewal.updated_at),
        "reason": renewal.reason,
    }


@click.command("renew")
@click.argument("station_ids", metavar="STATION...", nargs=-1, required=True)
@click.option(
    "--type", "kind", type=click.Choice(sorted(KIND_NAMES)), default="station",
    show_default=True, help="station: the TLS client certificate; v2g: the SECC certificate.",
)  # fmt: skip
@json_option
@click.pass_obj
def renew(ctx: Context, station_ids: tuple[str, ...], kind: str, as_json: bool) -> None:
    """Renew the stations' certificates: each gets a TriggerMessage asking for a CSR, at
    once if connected, else when it reconnects. A station with a renewal open keeps it.
    `pkictl renewals list` follows them."""

    async def action(app: App) -> list[Renewal]:
        for station_id in station_ids:
            await app.stations.get(station_id)  # all exist, or nothing is asked
        return [
            await app.renewals.request(s, KIND_NAMES[kind], requested_by=actor())
            for s in station_ids
        ]

    rows = [renewal_view(r) for r in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        note(f"renewal #{row['id']} of {row['station']}: {row['state']}")


@click.group()
def renewals() -> None:
    """Renewals: due, triggered, csr-received, signed, delivered, confirmed, failed."""


@renewals.command("list")
@click.option("--station", "station_id", help="Only this station's renewals.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def renewals_list(ctx: Context, station_id: str | None, limit: int, as_json: bool) -> None:
    """The most recent renewals, oldest first, with the reason of each failure."""
    rows = [
        renewal_view(r) for r in run_with_app(ctx, lambda app: app.renewals.list(station_id, limit))
    ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, (*RENEWAL_COLUMNS, "reason"))
