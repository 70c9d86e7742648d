"""`pkictl trust …`: CA certificates the operator trusts for a role."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso, note
from csms.app import App, actor
from pki.records import TrustAnchor, TrustRole

TRUST_COLUMNS = ("role", "subject", "not_after", "fingerprint_sha256")


def trust_view(anchor: TrustAnchor) -> dict[str, object]:
    certificate = anchor.certificate()
    return {
        "role": anchor.role.value,
        "subject": certificate.subject.rfc4514_string(),
        "not_after": iso(certificate.not_valid_after_utc),
        "fingerprint_sha256": anchor.fingerprint_sha256,
        "added_at": iso(anchor.added_at),
    }


@click.group()
def trust() -> None:
    """CA certificates trusted beyond this CA's own: factory CAs, MO and V2G roots."""


@trust.command("add")
@click.option("--role", type=click.Choice([r.value for r in TrustRole]), required=True,
              help="station-ca: admit station certificates it issued (profile 3); mo-root, "
                   "v2g-root: contract certificate chains may end at it (C07).")  # fmt: skip
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def trust_add(ctx: Context, role: str, file: Path, as_json: bool) -> None:
    """Trust the CA certificate in FILE (PEM) for ROLE. A station-ca: stations whose
    certificates it issued are admitted once `pkictl serve` is restarted -- and, as for
    every station, only with CN = their registered serial and O = your organization.
    An mo-root or v2g-root (self-signed roots only): contract certificates under it are
    accepted by Authorize (with their OCSP status and the eMAID as a token)."""
    pem = file.read_bytes()
    view = trust_view(run_with_app(ctx, lambda app: app.trust.add(TrustRole(role), pem, actor())))
    if as_json:
        emit_json(view)
    else:
        note(f"trusted {view['subject']} as {role}")


@trust.command("list")
@click.option("--role", type=click.Choice([r.value for r in TrustRole]))
@json_option
@click.pass_obj
def trust_list(ctx: Context, role: str | None, as_json: bool) -> None:
    """List the trusted CA certificates."""

    async def action(app: App) -> list[TrustAnchor]:
        return await app.trust.list(TrustRole(role) if role else None)

    rows = [trust_view(a) for a in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, TRUST_COLUMNS)
