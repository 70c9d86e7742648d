"""Shared state of one `pkictl` invocation and the helpers commands use to reach the app."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.output import iso
from csms.app import App, open_app
from pki.records import Authority, CertificateRecord, Station

T = TypeVar("T")


@dataclass
class Context:
    home: Path
    passphrase_file: Path | None
    json: bool = False
    database: str | None = None
    """--database-url: overrides PKICTL_DATABASE_URL and the home's configuration."""


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Remember --json on the shared context so errors are reported as JSON too."""
    shared = ctx.find_object(Context)
    if shared is not None:
        shared.json = value
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=_set_json,
    expose_value=True,
    help="Print machine-readable JSON on stdout.",
)


def run_with_app(ctx: Context, action: Callable[[App], Awaitable[T]]) -> T:
    async def _run() -> T:
        async with open_app(ctx.home, ctx.passphrase_file, database=ctx.database) as app:
            return await action(app)

    return asyncio.run(_run())


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until notAfter, rounded down (0 on its last day, negative once expired)."""
    return math.floor((not_after - now).total_seconds() / 86400)


def certificate_view(record: CertificateRecord, now: datetime) -> dict[str, Any]:
    return {
        "serial": record.serial_hex,
        "subject": record.subject_dn,
        "issuer": record.issuer_dn,
        "issuer_ca": record.issuer_ca,
        "profile": record.profile,
        "station": record.station_id,
        "not_before": iso(record.not_before),
        "not_after": iso(record.not_after),
        "days_left": days_left(record.not_after, now),
        "renew_after": iso(record.renew_after),
        "status": record.effective_status(now).value,
        "source": record.source.value,
        "revoked_at": iso(record.revoked_at),
        "revocation_reason": record.revocation_reason,
        "first_seen": iso(record.first_seen),
        "last_seen": iso(record.last_seen),
        "fingerprint_sha256": record.fingerprint_sha256,
    }


def authority_view(authority: Authority) -> dict[str, Any]:
    certificate = authority.certificate()
    return {
        "name": authority.name,
        "role": authority.role.value,
        "profile": authority.profile,
        "issuer": authority.issuer,
        "subject": certificate.subject.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "not_before": iso(certificate.not_valid_before_utc),
        "not_after": iso(certificate.not_valid_after_utc),
    }


def station_view(station: Station) -> dict[str, Any]:
    return {
        "id": station.id,
        "serial_number": station.serial_number,
        "secc_id": station.secc_id,
        "security_profile": station.security_profile,
        "has_password": station.password_hash is not None,
        "allow_expired": station.allow_expired,
        "created_at": iso(station.created_at),
    }
