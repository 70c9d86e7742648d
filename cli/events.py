"""`pkictl events …`: what stations did that a security team must see: refused
connections, sessions ended for a security reason (a revoked certificate), reported
security events, certificates seen for the first time."""

from __future__ import annotations

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso
from csms.app import App
from csms.services.gate import OBSERVED_ACTION, REFUSED_ACTION, THROTTLED_ACTION
from csms.services.handshake_failures import TLS_REFUSED_ACTION
from csms.services.security_events import SECURITY_EVENT_ACTION
from csms.services.sessions import CLOSED_ACTION
from pki.audit import AuditEntry

EVENT_ACTIONS = (
    REFUSED_ACTION,
    TLS_REFUSED_ACTION,
    THROTTLED_ACTION,
    CLOSED_ACTION,
    SECURITY_EVENT_ACTION,
    OBSERVED_ACTION,
)
EVENT_COLUMNS = ("seq", "at", "station", "event", "what", "critical", "remote")


def event_view(entry: AuditEntry) -> dict[str, object]:
    detail = dict(entry.event.detail)
    target = entry.event.target or ""
    station = target.removeprefix("station:") if target.startswith("station:") else None
    what = detail.get("reason") or detail.get("type") or detail.get("subject")
    return {
        "seq": entry.seq,
        "at": iso(entry.at),
        "station": station,
        "event": entry.event.action,
        "what": what,
        "critical": bool(detail.get("critical", False)),
        "remote": detail.get("remote"),
        "detail": detail,
    }


@click.group()
def events() -> None:
    """Station security events and refused connections."""


@events.command("list")
@click.option("--station", "station_id", help="Only this station's events.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True,
    help="Show the last N events.",
)  # fmt: skip
@json_option
@click.pass_obj
def events_list(ctx: Context, station_id: str | None, limit: int, as_json: bool) -> None:
    """Refused connections (with the reason), failed TLS handshakes (tls.refused: no
    station yet, the peer and OpenSSL's reason), password lockouts (a station id or an
    address), sessions closed because their certificate was revoked,
    SecurityEventNotifications (critical ones flagged) and certificates stations
    presented for the first time, oldest first."""

    async def action(app: App) -> list[AuditEntry]:
        target = f"station:{station_id}" if station_id is not None else None
        return await app.store.audit_entries(limit, actions=EVENT_ACTIONS, target=target)

    rows = [event_view(e) for e in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, EVENT_COLUMNS)
