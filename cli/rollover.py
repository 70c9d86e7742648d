"""`pkictl ca rollover cso-root` and `pkictl campaign status`: the CSO root rollover
(OCPP M05, ADR 9). The CLI writes; `pkictl serve` makes the calls and records the
answers, so the campaign goes on while the stations come and go."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
from cryptography.hazmat.primitives import hashes

from cli.context import Context, json_option, run_with_app
from cli.errors import ExitCode
from cli.output import emit_fields, emit_json, emit_table, iso, note
from csms.app import App, actor
from csms.services.rollover import CSO_ROOT, CampaignStatus
from pki.errors import InputError
from pki.records import Rollover, RolloverState
from pki.serials import serial_hex

POLL_S = 0.5
STATUS_COLUMNS = ("station", "state", "method", "online", "blocker")


def rollover_view(rollover: Rollover) -> dict[str, Any]:
    root, link = rollover.certificate(), rollover.link()
    return {
        "id": rollover.id,
        "authority": rollover.authority,
        "generation": rollover.generation,
        "state": rollover.state.value,
        "subject": root.subject.rfc4514_string(),
        "serial": serial_hex(root.serial_number),
        "fingerprint_sha256": root.fingerprint(hashes.SHA256()).hex(),
        "not_after": iso(root.not_valid_after_utc),
        "link_serial": serial_hex(link.serial_number),
        "link_issuer": link.issuer.rfc4514_string(),
        "started_at": iso(rollover.started_at),
        "switched_at": iso(rollover.switched_at),
    }


def status_view(status: CampaignStatus) -> dict[str, Any]:
    stations = [
        {
            "station": s.station_id, "state": s.state,
            "method": s.method.value if s.method else None, "online": s.online,
            "blocker": s.blocker,
        }
        for s in status.stations
    ]  # fmt: skip
    verified = sum(1 for s in status.stations if s.state == "verified")
    return {
        "rollover": rollover_view(status.rollover),
        "registered": len(status.stations),
        "verified": verified,
        "ready_to_switch": status.rollover.state is RolloverState.OPEN and not status.blocked,
        "stations": stations,
    }


@click.command("rollover")
@click.argument("name", metavar="NAME")
@click.option(
    "--retry",
    "mode",
    flag_value="retry",
    help="Start failed stations over, and enroll stations registered since.",
)
@click.option(
    "--switch",
    "mode",
    flag_value="switch",
    help="Put the new root in force (only once every station has it).",
)
@click.option(
    "--abandon",
    "mode",
    flag_value="abandon",
    help="Give the open rollover up; the root in force stays.",
)
@click.option(
    "--force", is_flag=True, help="With --switch: switch although some stations lack the new root."
)
@json_option
@click.pass_obj
def rollover(ctx: Context, name: str, mode: str | None, force: bool, as_json: bool) -> None:
    """Roll the CSO root (NAME: cso-root) over to a new key, without cutting a station off.

    Without an option: make the next root and its link certificate (the next root
    signed by the one in force), and queue for every registered station
    GetVariables(AdditionalRootCertificateCheck), then InstallCertificate of the new
    root -- or of the link certificate for a station that checks -- then
    GetInstalledCertificateIds to verify it. `pkictl serve` delivers the calls, to
    offline stations when they return. Follow with `pkictl campaign status`.

    --switch then re-certifies the station CA, the OCSP signer and the CSMS server
    certificates under the new root (same keys) and makes it the root in force; it
    refuses (exit 5) while any registered station is not verified, unless --force.
    """
    if name != CSO_ROOT:
        raise InputError(f"NAME: {name!r} is not a root pkictl rolls over; only {CSO_ROOT} "
                         "(the CSMSRootCertificate of stations)")  # fmt: skip
    if force and mode != "switch":
        raise InputError("--force: only with --switch")
    if mode == "switch":
        _switch(ctx, as_json=as_json, force=force)
    elif mode == "abandon":
        _abandon(ctx, as_json=as_json)
    elif mode == "retry":
        _retry(ctx, as_json=as_json)
    else:
        _start(ctx, as_json=as_json)


def _start(ctx: Context, *, as_json: bool) -> None:
    async def start(app: App) -> tuple[Rollover, int]:
        return await app.rollover.start(actor())

    started, enrolled = run_with_app(ctx, start)
    view = {**rollover_view(started), "enrolled": enrolled}
    if as_json:
        emit_json(view)
        return
    emit_fields(view)
    note(f"{enrolled} station(s) enrolled; `pkictl serve` installs the new root on each. "
         "Follow with `pkictl campaign status`; switch with "
         f"`pkictl ca rollover {CSO_ROOT} --switch` once all are verified.")  # fmt: skip


def _switch(ctx: Context, *, as_json: bool, force: bool) -> None:
    result = run_with_app(ctx, lambda app: app.switch_rollover(actor(), force=force))
    again = [a.name for a in result.changed[1:]]
    if as_json:
        emit_json({**rollover_view(result.rollover), "certified_again": again})
        return
    note(f"{CSO_ROOT} generation {result.rollover.generation} is in force; certified "
         f"again under it: {', '.join(again)}. `pkictl serve` serves the new server "
         "certificates to new connections; remove the old root from stations with "
         "`pkictl roots delete` when ready.")  # fmt: skip


def _abandon(ctx: Context, *, as_json: bool) -> None:
    abandoned = run_with_app(ctx, lambda app: app.rollover.rollovers.abandon(CSO_ROOT, actor()))
    view = rollover_view(abandoned)
    if as_json:
        emit_json(view)
    else:
        note(f"rollover {abandoned.id} of {CSO_ROOT} abandoned; the root in force stays. "
             "Stations that installed the abandoned root (verified in `pkictl campaign "
             "status`) keep it until deleted: `pkictl roots delete --serial "
             f"{view['serial']} --station ID...` ({view['link_serial']} for the link "
             "certificate).")  # fmt: skip


def _retry(ctx: Context, *, as_json: bool) -> None:
    restarted = run_with_app(ctx, lambda app: app.rollover.retry())
    if as_json:
        emit_json({"restarted": restarted})
    else:
        note(f"{restarted} station(s) started (again); follow with `pkictl campaign status`")


@click.group()
def campaign() -> None:
    """Follow the CSO root rollover campaign."""


@campaign.command("status")
@click.option(
    "--wait", "wait_s", type=click.IntRange(min=1), metavar="SECONDS",
    help="Wait until every registered station is verified; exit 9 if time runs out.",
)  # fmt: skip
@json_option
@click.pass_obj
def campaign_status(ctx: Context, wait_s: int | None, as_json: bool) -> None:
    """Each registered station's progress in the current CSO root rollover, and what
    blocks the switch: offline since ..., rejected with ..., not yet verified."""

    async def action(app: App) -> CampaignStatus:
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            status = await app.rollover.status()
            if not status.blocked or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(POLL_S)

    status = run_with_app(ctx, action)
    view = status_view(status)
    if as_json:
        emit_json(view)
    else:
        emit_table(view["stations"], STATUS_COLUMNS)
        state = status.rollover.state.value
        ready = "; ready to switch" if view["ready_to_switch"] and state == "open" else ""
        note(f"rollover {status.rollover.id} ({state}): {view['verified']} of "
             f"{view['registered']} registered stations verified{ready}")  # fmt: skip
    if wait_s is not None and status.blocked:
        raise click.exceptions.Exit(ExitCode.INCOMPLETE)
