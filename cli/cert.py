"""`pkictl cert …` and `pkictl crl`: issuing, listing, revoking certificates."""

from __future__ import annotations

import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cli.context import Context, certificate_view, json_option, run_with_app
from cli.output import (
    emit_fields,
    emit_json,
    emit_table,
    force_option,
    iso,
    note,
    refuse_existing,
    write_out,
)
from csms.app import App, actor
from pki.errors import ConflictError
from pki.records import REVOCATION_REASONS, CertificateQuery, CertificateStatus

CERT_COLUMNS = (
    "serial", "profile", "station", "subject", "not_after", "days_left", "status", "source",
)  # fmt: skip


@click.group()
def cert() -> None:
    """Issue, list, show and revoke certificates."""


@cert.command("issue")
@click.option("--profile", required=True, help="Issuance profile (charging-station, v2g-secc).")
@click.option(
    "--csr",
    "csr_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CSR file.",
)
@click.option("--station", "station_id", required=True, help="Registered station id.")
@click.option("--days", type=int, help="Validity in days [default: the profile's].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the chain (leaf first, no root) here instead of stdout.",
)
@force_option
@json_option
@click.pass_obj
def cert_issue(
    ctx: Context,
    profile: str,
    csr_file: Path,
    station_id: str,
    days: int | None,
    out: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Issue a certificate from a station's CSR through the full policy pipeline."""
    refuse_existing(out, force)  # before anything is issued
    csr_pem = csr_file.read_text(encoding="utf-8", errors="replace")
    if out is not None and not os.access(out.parent.resolve(), os.W_OK):
        raise click.BadParameter(
            f"directory {out.parent} is missing or not writable", param_hint="--out"
        )

    async def action(app: App) -> tuple[dict[str, object], bytes]:
        issued = await app.ca.issue_for_station(
            csr_pem=csr_pem,
            profile_name=profile,
            station_id=station_id,
            actor=actor(),
            days=days,
        )
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in issued.chain)
        return certificate_view(issued.record, app.clock.now()), chain

    view, chain = run_with_app(ctx, action)
    if out is not None:
        try:
            write_out(out, chain, force)
        except (OSError, ConflictError) as exc:  # issued and recorded: hand the chain out
            click.echo(chain.decode(), nl=False)
            why = exc.strerror if isinstance(exc, OSError) else "it appeared meanwhile"
            note(f"error: could not write {out} ({why}); the chain is on stdout")
            note(f"serial {view['serial']}")
            raise click.exceptions.Exit(1) from None
    if as_json:
        emit_json({**view, "chain_pem": chain.decode(), "out": str(out) if out else None})
    elif out is not None:
        click.echo(view["serial"])
    else:
        click.echo(chain.decode(), nl=False)
        note(f"serial {view['serial']}")


@cert.command("list")
@click.option(
    "--expiring-within",
    type=click.IntRange(min=0),
    metavar="DAYS",
    help="Only certificates whose notAfter is within DAYS from now.",
)
@click.option("--station", "station_id", help="Only this station's certificates.")
@click.option("--profile", help="Only this profile.")
@click.option(
    "--status", type=click.Choice([s.value for s in CertificateStatus]), help="Only this status."
)
@click.option(
    "--summary",
    is_flag=True,
    help="Only count them, by status and profile (the window at a glance).",
)
@json_option
@click.pass_obj
def cert_list(
    ctx: Context,
    expiring_within: int | None,
    station_id: str | None,
    profile: str | None,
    status: str | None,
    summary: bool,
    as_json: bool,
) -> None:
    """List certificates, soonest expiry first (`--expiring-within 90`: the expiry
    window; with --summary, how many)."""

    async def action(app: App) -> list[dict[str, object]]:
        now = app.clock.now()
        query = CertificateQuery(
            station_id=station_id,
            profile=profile,
            expiring_before=now + timedelta(days=expiring_within)
            if expiring_within is not None
            else None,
        )
        views = [certificate_view(r, now) for r in await app.store.find_certificates(query)]
        return [v for v in views if status is None or v["status"] == status]

    rows = run_with_app(ctx, action)
    if summary:
        counts = _summary(rows, expiring_within)
        if as_json:
            emit_json(counts)
        else:
            emit_table(counts["by_status_and_profile"], ("count", "status", "profile"))
            within = (
                f" expiring within {expiring_within} days" if expiring_within is not None else ""
            )
            note(f"{counts['total']} certificates{within}")
    elif as_json:
        emit_json(rows)
    else:
        emit_table(rows, CERT_COLUMNS)


def _summary(rows: list[dict[str, object]], expiring_within: int | None) -> dict[str, Any]:
    """How many certificates of ``rows``, by status, by profile and by both."""
    pairs = Counter((str(r["status"]), str(r["profile"] or "-")) for r in rows)
    return {
        "expiring_within_days": expiring_within,
        "total": len(rows),
        "by_status": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "by_profile": dict(sorted(Counter(str(r["profile"] or "-") for r in rows).items())),
        "by_status_and_profile": [
            {"status": status, "profile": profile, "count": n}
            for (status, profile), n in sorted(pairs.items())
        ],
    }


@cert.command("show")
@click.argument("serial")
@click.option("--pem", "as_pem", is_flag=True, help="Print the certificate as PEM.")
@json_option
@click.pass_obj
def cert_show(ctx: Context, serial: str, as_pem: bool, as_json: bool) -> None:
    """Show the certificate with hex serial SERIAL, or the one whose serial starts with
    SERIAL (at least 4 hex digits; an ambiguous prefix exits 2 listing the candidates)."""

    async def action(app: App) -> tuple[dict[str, object], str]:
        record = await app.ca.find_by_serial_text(serial)
        return certificate_view(record, app.clock.now()), record.pem()

    view, pem = run_with_app(ctx, action)
    if as_pem:
        click.echo(pem, nl=False)
    elif as_json:
        emit_json({**view, "pem": pem})
    else:
        emit_fields(view)


@cert.command("revoke")
@click.argument("serial")
@click.option(
    "--reason",
    required=True,
    type=click.Choice(REVOCATION_REASONS),
    help="RFC 5280 revocation reason.",
)
@json_option
@click.pass_obj
def cert_revoke(ctx: Context, serial: str, reason: str, as_json: bool) -> None:
    """Revoke a certificate this CA issued; the next CRL lists it. SERIAL: hex, or a
    unique prefix of at least 4 digits (an ambiguous one exits 2 listing the candidates)."""

    async def action(app: App) -> dict[str, object]:
        found = await app.ca.find_by_serial_text(serial)
        record, revocation_list = await app.revocations.revoke(found.serial, reason, actor())
        view = certificate_view(record, app.clock.now())
        assert record.issuer_ca is not None
        view["crl"] = None
        if revocation_list is None:  # the revocation stands; only publishing waits
            note(f"warning: CRL not regenerated (no CA key); run `pkictl crl {record.issuer_ca}`")
        else:
            path = app.home / "crl" / f"{record.issuer_ca}.crl"
            view["crl"] = _crl_view(record.issuer_ca, revocation_list, path)
        return view

    view = run_with_app(ctx, action)
    if as_json:
        emit_json(view)
    else:
        note(f"revoked {view['serial']} ({reason})")


def _crl_view(
    name: str, revocation_list: x509.CertificateRevocationList, path: Path
) -> dict[str, object]:
    number = revocation_list.extensions.get_extension_for_class(x509.CRLNumber).value
    return {
        "ca": name,
        "number": number.crl_number,
        "revoked": len(list(revocation_list)),
        "this_update": iso(revocation_list.last_update_utc),
        "next_update": iso(revocation_list.next_update_utc),
        "path": str(path),
    }


async def _publish_crl(app: App, name: str) -> tuple[dict[str, object], bytes]:
    """Issue the next CRL of CA ``name``, saved as HOME/crl/NAME.crl; (summary, DER)."""
    revocation_list, path = await app.publish_crl(name, actor())
    return _crl_view(name, revocation_list, path), revocation_list.public_bytes(Encoding.DER)


@click.command()
@click.argument("name")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the DER CRL here."
)
@force_option
@json_option
@click.pass_obj
def crl(ctx: Context, name: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Issue a fresh CRL for CA NAME (number from the database), saved as HOME/crl/NAME.crl."""
    refuse_existing(out, force)
    view, der = run_with_app(ctx, lambda app: _publish_crl(app, name))
    if out is not None:
        write_out(out, der, force)
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)
