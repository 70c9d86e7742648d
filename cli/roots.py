"""`pkictl station certs` and `pkictl roots …`: certificates installed on stations
(M03-M05), through the outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from cli.context import Context, json_option, run_with_app
from cli.errors import ExitCode
from cli.output import emit_json, emit_table, iso, note
from csms.app import App
from csms.domain.outbox import FINAL
from csms.services.inventory import ROOT_TYPES, InstalledCertificate
from csms.services.outbox import OutboxItem

POLL_S = 0.25
INVENTORY_COLUMNS = ("type", "serial", "known_as", "hash_algorithm", "children", "refreshed_at")


def installed_view(entry: InstalledCertificate, known_as: str | None) -> dict[str, object]:
    return {
        "type": entry.certificate_type,
        "serial": entry.hash_data.serial_number,
        "known_as": known_as,
        "hash_algorithm": entry.hash_data.hash_algorithm,
        "issuer_name_hash": entry.hash_data.issuer_name_hash,
        "issuer_key_hash": entry.hash_data.issuer_key_hash,
        "children": len(entry.children),
        "refreshed_at": iso(entry.refreshed_at),
    }


async def wait_for_call(app: App, item_id: int, wait_s: float) -> OutboxItem | None:
    """The call once it ended (answered, failed, timed out); None if still pending."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [i for i in await app.outbox.list(None, 500) if i.id == item_id]
        if found and found[0].state in FINAL:
            return found[0]
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_S)


@click.command("certs")
@click.argument("station_id")
@click.option("--refresh", is_flag=True, help="Ask the station (GetInstalledCertificateIds).")
@click.option(
    "--wait", "wait_s", type=click.IntRange(min=1), default=30, show_default=True,
    metavar="SECONDS", help="With --refresh: how long to wait for the answer.",
)  # fmt: skip
@json_option
@click.pass_obj
def station_certs(ctx: Context, station_id: str, refresh: bool, wait_s: int, as_json: bool) -> None:
    """What STATION has installed (its own client certificate is not listed by OCPP: see
    `station show`), with the name of each of our CAs or trust anchors it matches.
    With --refresh, exit 9 if the station has not answered within --wait."""

    async def action(app: App) -> tuple[list[dict[str, object]], bool]:
        await app.stations.get(station_id)
        answered = True
        if refresh:
            item_id = await app.inventory.refresh(station_id)
            ended = await wait_for_call(app, item_id, wait_s)
            answered = ended is not None and ended.state.value == "answered"
            if not answered:
                state = ended.state.value if ended else "queued (is the station connected?)"
                note(f"GetInstalledCertificateIds #{item_id}: {state}")
        named = await app.inventory.named(await app.inventory.inventory(station_id))
        return [installed_view(e, name) for e, name in named], answered

    rows, answered = run_with_app(ctx, action)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, INVENTORY_COLUMNS)
    if not answered:
        raise click.exceptions.Exit(ExitCode.INCOMPLETE)


station_choice = click.option(
    "--station", "station_ids", multiple=True, metavar="ID", help="A station (repeatable)."
)
all_option = click.option("--all", "all_stations", is_flag=True, help="Every registered station.")


async def targets(app: App, station_ids: tuple[str, ...], all_stations: bool) -> list[str]:
    if bool(station_ids) == all_stations:
        raise click.UsageError("give --station ID (repeatable) or --all")
    if all_stations:
        return [s.id for s in await app.stations.list()]
    for station_id in station_ids:
        await app.stations.get(station_id)  # all exist, or nothing is queued
    return list(station_ids)


@click.group()
def roots() -> None:
    """Root certificates on stations: install (InstallCertificate), delete
    (DeleteCertificate). Calls are queued; `pkictl outbox list` shows the answers."""


@roots.command("install")
@click.option("--type", "certificate_type", type=click.Choice(ROOT_TYPES), required=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@station_choice
@all_option
@json_option
@click.pass_obj
def roots_install(
    ctx: Context, certificate_type: str, file: Path, station_ids: tuple[str, ...],
    all_stations: bool, as_json: bool,
) -> None:  # fmt: skip
    """Install the self-signed root in FILE (PEM) on the stations."""
    pem = file.read_text(encoding="utf-8", errors="replace")

    async def action(app: App) -> list[int]:
        stations = await targets(app, station_ids, all_stations)
        return await app.inventory.install_root(stations, certificate_type, pem)

    queued = run_with_app(ctx, action)
    if as_json:
        emit_json({"outbox_ids": queued})
    else:
        note(
            f"InstallCertificate queued for {len(queued)} station(s): "
            f"outbox {', '.join(f'#{i}' for i in queued) or '(none)'}"
        )


@roots.command("delete")
@click.argument("fingerprint", metavar="[HASH]", required=False)
@click.option("--serial", help="Serial (hex) as `station certs` lists it.")
@station_choice
@all_option
@json_option
@click.pass_obj
def roots_delete(
    ctx: Context, fingerprint: str | None, serial: str | None, station_ids: tuple[str, ...],
    all_stations: bool, as_json: bool,
) -> None:  # fmt: skip
    """Delete a certificate from the stations -- one of our CAs or trust anchors by its
    SHA-256 fingerprint HASH, or any by --serial -- with the hash data each station
    reported. Refused (exit 5) if it is a station's only CSMSRootCertificate."""
    if (fingerprint is None) == (serial is None):
        raise click.UsageError("give a HASH (SHA-256 fingerprint) or --serial, not both")

    async def action(app: App) -> list[int]:
        stations = await targets(app, station_ids, all_stations)
        chosen = serial if serial is not None else await app.inventory.serial_of(str(fingerprint))
        return await app.inventory.delete(stations, chosen)

    queued = run_with_app(ctx, action)
    if as_json:
        emit_json({"outbox_ids": queued})
    else:
        note(f"DeleteCertificate queued: outbox {', '.join(f'#{i}' for i in queued) or '(none)'}")
