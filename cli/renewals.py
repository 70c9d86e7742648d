"""`pkictl renew …` and `pkictl renewals …`: certificate renewal over OCPP (A02)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import click
from rich.console import Console
from rich.progress import Progress

from cli.context import Context, json_option, run_with_app
from cli.errors import ExitCode
from cli.output import emit_json, emit_table, iso, note
from csms.app import App, actor
from csms.domain.renewal import ENDED, CertificateKind, RenewalState
from csms.services.expiry import ExpiryWindow, Upcoming
from csms.services.renewal_ports import Renewal
from pki.errors import NotFoundError

RENEWAL_COLUMNS = ("id", "station", "kind", "state", "old_serial", "new_serial", "updated_at")
UPCOMING_COLUMNS = ("station", "kind", "serial", "starts_at", "not_after", "status", "renewal")
KIND_NAMES = {"station": CertificateKind.STATION, "v2g": CertificateKind.V2G}
POLL_S = 0.5
WITHIN_DAYS = 7


def renewal_line(row: dict[str, object]) -> str:
    """One renewal for `renew` (and `renew --wait`): a failed one with its reason."""
    why = f" ({row['reason']})" if row.get("reason") and row["state"] == "failed" else ""
    return f"renewal #{row['id']} of {row['station']}: {row['state']}{why}"


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


def upcoming_view(upcoming: Upcoming, now: datetime) -> dict[str, object]:
    """A certificate whose renewal starts within the days asked: `due` (the next scan
    starts it), `waiting` (deferred by its jitter until starts_at) or `open`."""
    renewal = upcoming.renewal
    status = "open" if renewal is not None else "due" if upcoming.starts_at <= now else "waiting"
    return {
        "station": upcoming.station_id,
        "kind": upcoming.kind.value,
        "serial": upcoming.serial_hex,
        "starts_at": iso(upcoming.starts_at),
        "not_after": iso(upcoming.not_after),
        "status": status,
        "renewal": None if renewal is None else f"#{renewal.id} {renewal.state.value}",
    }


def window_note(window: ExpiryWindow) -> str:
    return (
        f"{window.in_use} certificates in use expire within {window.days} days: "
        f"{window.renewing} renewing, {window.starts_later} starting later, "
        f"{window.not_progressing} not progressing"
    )


@click.command("renew")
@click.argument("station_ids", metavar="[STATION...]", nargs=-1)
@click.option("--due", "all_due", is_flag=True, help="Every station whose certificate is due.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --due: list what starts within --within days (starts_at), start nothing.",
)
@click.option(
    "--within", "within_days", type=click.IntRange(min=0), metavar="DAYS",
    help=f"With --dry-run: renewals starting within DAYS (0: due now) [default: {WITHIN_DAYS}].",
)  # fmt: skip
@click.option(
    "--type", "kind", type=click.Choice(sorted(KIND_NAMES)), default="station",
    show_default=True, help="For STATION...: station = TLS client certificate, v2g = SECC.",
)  # fmt: skip
@click.option(
    "--wait", "wait_s", type=click.IntRange(min=1), metavar="SECONDS",
    help="Follow the renewals (progress on stderr) until each is confirmed or failed.",
)  # fmt: skip
@json_option
@click.pass_obj
def renew(
    ctx: Context, station_ids: tuple[str, ...], all_due: bool, dry_run: bool,
    within_days: int | None,
    kind: str, wait_s: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Renew certificates over OCPP: each station gets a TriggerMessage asking for a CSR,
    at once if connected, else when it reconnects. A station with a renewal open keeps
    it. `--due` renews what the daemon's next scan would (thresholds from the policy);
    `--due --dry-run` lists what starts within --within days and counts the expiry
    window. With --wait, exit 9 unless every renewal ended confirmed in time."""
    if bool(station_ids) == all_due:
        raise click.UsageError("name stations, or give --due (not both)")
    if dry_run and not all_due:
        raise click.UsageError("--dry-run goes with --due")
    if within_days is not None and not dry_run:
        raise click.UsageError("--within goes with --dry-run")
    if dry_run:
        _dry_run(ctx, WITHIN_DAYS if within_days is None else within_days, as_json)
        return

    async def action(app: App) -> list[Renewal]:
        if all_due:
            return await app.renewals.scan()
        registered = {station.id for station in await app.stations.list()}
        if unknown := [s for s in station_ids if s not in registered]:  # all, or nothing
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise NotFoundError(f"no station {', '.join(map(repr, unknown[:10]))}{more}")
        return await app.renewals.request_all(
            [(s, KIND_NAMES[kind], None) for s in station_ids], requested_by=actor()
        )

    started = run_with_app(ctx, action)
    if wait_s is not None and started:
        started = run_with_app(ctx, lambda app: follow(app, started, wait_s))
    rows = [renewal_view(r) for r in started]
    if as_json:
        emit_json(rows)
    else:
        for row in rows:
            note(renewal_line(row))
        if not rows:
            note("nothing to renew")
    if wait_s is not None and any(r.state is not RenewalState.CONFIRMED for r in started):
        raise click.exceptions.Exit(ExitCode.INCOMPLETE)


def _dry_run(ctx: Context, within_days: int, as_json: bool) -> None:
    async def action(app: App) -> tuple[list[dict[str, object]], ExpiryWindow]:
        expiry = app.renewals.expiry()
        upcoming = await expiry.upcoming(timedelta(days=within_days))
        now = app.clock.now()
        return [upcoming_view(u, now) for u in upcoming], await expiry.window()

    rows, window = run_with_app(ctx, action)
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, UPCOMING_COLUMNS)
    note(window_note(window))


async def follow(app: App, renewals: list[Renewal], wait_s: int) -> list[Renewal]:
    """Poll the renewals until each ended or ``wait_s`` passed; a progress bar meanwhile."""
    deadline = time.monotonic() + wait_s
    current = renewals
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task("renewals confirmed", total=len(renewals))
        while True:
            current = [await app.renewals.get(r.id) for r in renewals]
            ended = [r for r in current if r.state in ENDED]
            progress.update(bar, completed=len(ended))
            if len(ended) == len(current) or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(POLL_S)


@click.group()
def renewals() -> None:
    """Renewals: due, triggered, csr-received, signed, delivered, confirmed, failed."""


@renewals.command("list")
@click.option("--station", "station_id", help="Only this station's renewals.")
@click.option("--history", is_flag=True, help="Every renewal, not only each station's last.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def renewals_list(
    ctx: Context, station_id: str | None, history: bool, limit: int, as_json: bool
) -> None:
    """Where each station's renewal stands (its last one per certificate type), or with
    --history every renewal; oldest first, with the reason of each failure."""

    async def action(app: App) -> list[Renewal]:
        return await app.renewals.list(station_id, limit, latest_only=not history)

    rows = [renewal_view(r) for r in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, (*RENEWAL_COLUMNS, "reason"))


@click.group()
def alerts() -> None:
    """What needs an operator: failed renewals, renewals no longer tried automatically."""


@alerts.command("list")
@click.option("--station", "station_id", help="Only this station's alerts.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def alerts_list(ctx: Context, station_id: str | None, limit: int, as_json: bool) -> None:
    """The most recent alerts, oldest first."""
    rows = [
        {
            "id": a.id, "code": a.code, "station": a.station_id, "raised_at": iso(a.raised_at),
            "message": a.message,
        }
        for a in run_with_app(ctx, lambda app: app.alerts.list(station_id, limit))
    ]  # fmt: skip
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ("id", "code", "station", "raised_at", "message"))
