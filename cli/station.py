"""`pkictl station …`: the registry of charging-station identities."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.context import Context, certificate_view, json_option, run_with_app, station_view
from cli.output import emit_fields, emit_json, emit_table, iso, note
from csms.app import App, actor
from csms.services.reports import Report
from csms.services.sessions import SessionRecord
from csms.services.stations import REMOVAL_REASON, Removal
from pki.records import CertificateQuery

STATION_COLUMNS = (
    "id", "serial_number", "secc_id", "security_profile", "online", "last_seen",
    "certificate_serial", "certificate_not_after",
)  # fmt: skip


def with_session(view: dict[str, object], session: SessionRecord | None) -> dict[str, object]:
    """The station's connection state as `pkictl serve` last wrote it (None: never)."""
    return {
        **view,
        "online": session.online if session else False,
        "last_seen": iso(session.last_seen) if session else None,
        "connected_at": iso(session.connected_at) if session else None,
        "remote": session.remote if session else None,
        "connected_profile": session.security_profile if session else None,
        "boot_pending": session.boot_pending if session else False,
        "certificate_serial": session.certificate_serial if session else None,
        "certificate_not_after": iso(session.certificate_not_after) if session else None,
    }


@click.group()
def station() -> None:
    """Register and inspect charging stations."""


@station.command("add")
@click.argument("station_id")
@click.option(
    "--serial",
    "serial_number",
    required=True,
    help="The station's serial number, the CN of its TLS certificate: unique among stations.",
)
@click.option("--secc-id", help="ISO 15118 SECC id: the CN of its V2G (SECC) certificate.")
@click.option(
    "--security-profile",
    type=click.IntRange(1, 3),
    default=3,
    show_default=True,
    help="OCPP security profile the station must connect with.",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with the Basic-auth password (profiles 1 and 2; 16-40 characters).",
)
@click.option(
    "--allow-expired",
    is_flag=True,
    help="Admit it with an expired certificate so it can renew (Boot answered Pending).",
)
@json_option
@click.pass_obj
def station_add(
    ctx: Context,
    station_id: str,
    serial_number: str,
    secc_id: str | None,
    security_profile: int,
    password_file: Path | None,
    allow_expired: bool,
    as_json: bool,
) -> None:
    """Register STATION_ID (the last segment of its OCPP URL)."""
    password = password_file.read_text(encoding="utf-8").strip() if password_file else None

    async def action(app: App) -> dict[str, object]:
        registered = await app.stations.register(
            station_id,
            serial_number=serial_number,
            secc_id=secc_id,
            security_profile=security_profile,
            password=password,
            actor=actor(),
            allow_expired=allow_expired,
        )
        return station_view(registered)

    view = run_with_app(ctx, action)
    if as_json:
        emit_json(view)
    else:
        note(f"registered station {station_id} (serial {serial_number})")


@station.command("list")
@json_option
@click.pass_obj
def station_list(ctx: Context, as_json: bool) -> None:
    """List registered stations, online or not, with the certificate each presented."""

    async def action(app: App) -> list[dict[str, object]]:
        sessions = {s.station_id: s for s in await app.session_store.list()}
        return [
            with_session(station_view(s), sessions.get(s.id)) for s in await app.stations.list()
        ]

    rows = run_with_app(ctx, action)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, STATION_COLUMNS)


@station.command("show")
@click.argument("station_id")
@json_option
@click.pass_obj
def station_show(ctx: Context, station_id: str, as_json: bool) -> None:
    """Show a station and the certificates it holds."""

    async def action(app: App) -> dict[str, object]:
        sessions = {s.station_id: s for s in await app.session_store.list()}
        view = with_session(
            station_view(await app.stations.get(station_id)), sessions.get(station_id)
        )
        records = await app.store.find_certificates(CertificateQuery(station_id=station_id))
        now = app.clock.now()
        view["certificates"] = [certificate_view(r, now) for r in records]
        return view

    view = run_with_app(ctx, action)
    if as_json:
        emit_json(view)
        return
    certificates = view.pop("certificates")
    emit_fields(view)
    click.echo("")
    emit_table(certificates, ("serial", "profile", "status", "not_after"))  # type: ignore[arg-type]


@station.command("remove")
@click.argument("station_id")
@click.option(
    "--keep-certificates",
    is_flag=True,
    help="Leave the certificates issued to it valid (default: revoke them, "
    "cessationOfOperation, and publish the CRLs).",
)
@json_option
@click.pass_obj
def station_remove(ctx: Context, station_id: str, keep_certificates: bool, as_json: bool) -> None:
    """Deregister a station and revoke the certificates this CA issued to it
    (cessationOfOperation), publishing each CA's next CRL; with --keep-certificates they
    stay valid. The handshake refuses its id from then on, and a certificate this CA
    issued admits only the station it was issued to, so kept certificates admit no
    other station. Both are audited (station.removed lists the serials)."""

    async def action(app: App) -> Removal:
        return await app.stations.remove(station_id, actor(), keep_certificates=keep_certificates)

    removal = run_with_app(ctx, action)
    if as_json:
        emit_json(
            {
                "station": removal.station_id,
                "revoked": [r.serial_hex for r in removal.revoked],
                "kept": [r.serial_hex for r in removal.kept],
                "crls": [{"ca": ca, "published": published} for ca, published in removal.crls],
                "withdrawn": removal.withdrawn,
            }
        )
        return
    note(f"removed station {station_id}")
    if removal.revoked:
        note(
            f"revoked {len(removal.revoked)} certificate(s) ({REMOVAL_REASON}): "
            + ", ".join(r.serial_hex for r in removal.revoked)
        )
    for ca, published in removal.crls:
        if published:
            note(f"published the CRL of {ca}")
        else:
            note(f"warning: CRL of {ca} not regenerated (no CA key); run `pkictl crl {ca}`")
    if removal.kept:
        note(
            f"kept {len(removal.kept)} valid certificate(s): "
            + ", ".join(r.serial_hex for r in removal.kept)
        )
    ended = [f"{count} {kind.replace('_', ' ')}" for kind, count in removal.withdrawn.items()]
    if any(removal.withdrawn.values()):
        note("withdrawn: " + ", ".join(ended))


@station.command("reports")
@click.argument("station_id")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_obj
def station_reports(ctx: Context, station_id: str, limit: int, as_json: bool) -> None:
    """What the station reported (StatusNotification, NotifyEvent, NotifyReport,
    FirmwareStatusNotification, LogStatusNotification), oldest first."""

    async def action(app: App) -> list[Report]:
        await app.stations.get(station_id)  # NotFound (exit 3) for an unknown id
        return await app.reports.list(station_id, limit)

    rows = [
        {"at": iso(r.received_at), "action": r.action, "payload": json.loads(r.payload)}
        for r in run_with_app(ctx, action)
    ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            [{**r, "payload": json.dumps(r["payload"], sort_keys=True)} for r in rows],
            ("at", "action", "payload"),
        )
