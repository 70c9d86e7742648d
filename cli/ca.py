"""`pkictl init` and `pkictl ca …`: the CA hierarchy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from cli.context import Context, authority_view, json_option, run_with_app
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
from csms.app import App, actor, default_policy_text, initialize_home
from csms.home import HomeConfig, validate_identity
from pki.errors import InputError, NotFoundError
from pki.keys import describe_public_key
from pki.records import Authority
from pki.serials import serial_hex

AUTHORITY_COLUMNS = ("name", "role", "issuer", "subject", "not_after")


@click.command()
@click.option("--org", required=True, help="CSO organization name (the O of every certificate).")
@click.option("--country", required=True, help="Two-letter country code (C).")
@click.option(
    "--csms-host",
    "hosts",
    multiple=True,
    required=True,
    help="Host name or IP of the CSMS; repeat for several (SANs of the server cert).",
)
@click.option("--base-url", help="Public base URL for OCSP and CRLs [default: http://HOST:8080].")
@click.option("--no-v2g", is_flag=True, help="Create only the CSO hierarchy, no ISO 15118 V2G PKI.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Issuance policy to adopt [default: policies/default.toml].",
)
@click.option(
    "--database-url",
    help="Database URL, recorded in pkictl.toml [default: the global --database-url, "
    "else PKICTL_DATABASE_URL, else SQLite in HOME].",
)
@json_option
@click.pass_obj
def init(
    ctx: Context,
    org: str,
    country: str,
    hosts: tuple[str, ...],
    base_url: str | None,
    no_v2g: bool,
    policy_file: Path | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Create the CA hierarchy in a new home, in one audited step.

    CSO: cso-root -> cso-station-ca, CSMS server certificates (ECDSA P-256 and RSA-3072).
    V2G (unless --no-v2g): v2g-root -> cpo-sub-ca-1 -> cpo-sub-ca-2. One OCSP signer
    per CA. Refuses to run over an existing home.
    """
    organization, country, hosts, base_url = validate_identity(org, country, hosts, base_url)
    if database_url and ctx.database and database_url != ctx.database:
        raise InputError(
            "--database-url: given twice with different URLs (before and after `init`)"
        )
    config = HomeConfig(
        organization=organization,
        country=country,
        csms_hosts=hosts,
        base_url=base_url,
        hierarchies=frozenset({"cso"} if no_v2g else {"cso", "v2g"}),
        database_url=database_url or ctx.database,
    )
    if policy_file is not None:
        policy_text, source = policy_file.read_text(encoding="utf-8"), str(policy_file)
    else:
        policy_text, source = default_policy_text(), "policies/default.toml"
    result = asyncio.run(
        initialize_home(
            ctx.home,
            config,
            policy_text=policy_text,
            policy_source=source,
            passphrase_file=ctx.passphrase_file,
        )
    )
    if as_json:
        emit_json(
            {
                "home": str(ctx.home),
                "authorities": result.authorities,
                "generated_passphrase": str(result.generated_passphrase)
                if result.generated_passphrase
                else None,
            }
        )
    else:
        emit_table(result.authorities, ("name", "role", "subject"))
    note(f"Initialized the pkictl home {ctx.home} ({len(result.authorities)} certificates).")
    if result.generated_passphrase:
        note(
            f"Generated a CA key passphrase in {result.generated_passphrase} (mode 0600). "
            "Keep a copy apart from the keys: with both, anyone can issue certificates."
        )


@click.group()
def ca() -> None:
    """Inspect and export the CA hierarchy."""


@ca.command("list")
@json_option
@click.pass_obj
def ca_list(ctx: Context, as_json: bool) -> None:
    """List CAs, OCSP signers and CSMS server certificates."""

    async def action(app: App) -> list[dict[str, object]]:
        return [authority_view(a) for a in await app.store.list_authorities()]

    rows = run_with_app(ctx, action)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, AUTHORITY_COLUMNS)


async def _authority(app: App, name: str) -> tuple[dict[str, object], bytes, bytes]:
    authority = await app.store.get_authority(name)
    if authority is None:
        known = ", ".join(a.name for a in await app.store.list_authorities())
        raise NotFoundError(f"no CA or service certificate named {name!r} (known: {known})")
    certificate = authority.certificate()
    view = authority_view(authority)
    view["key"] = describe_public_key(certificate.public_key())
    view["fingerprint_sha256"] = certificate.fingerprint(hashes.SHA256()).hex()
    issuers = await app.ca.chain(authority.issuer) if authority.issuer else []
    chain = b"".join(c.public_bytes(Encoding.PEM) for c in issuers)
    return view, certificate.public_bytes(Encoding.PEM), chain


@ca.command("show")
@click.argument("name")
@json_option
@click.pass_obj
def ca_show(ctx: Context, name: str, as_json: bool) -> None:
    """Show one CA or service certificate."""
    view, _, _ = run_with_app(ctx, lambda app: _authority(app, name))
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)


@ca.command("export")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
@force_option
@click.option("--chain", is_flag=True, help="Append the issuing CAs (without the root).")
@click.pass_obj
def ca_export(ctx: Context, name: str, out: Path | None, force: bool, chain: bool) -> None:
    """Export a certificate as PEM (e.g. cso-root for stations' CSMSRootCertificate)."""
    refuse_existing(out, force)
    _, pem, issuers = run_with_app(ctx, lambda app: _authority(app, name))
    data = pem + (issuers if chain else b"")
    if out is None:
        click.echo(data.decode(), nl=False)
    else:
        write_out(out, data, force)
        note(f"wrote {out}")


@ca.command("renew-server")
@click.argument("names", metavar="[NAME...]", nargs=-1)
@json_option
@click.pass_obj
def ca_renew_server(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Renew the CSMS server certificates now (all, or those NAMEd), each with a new key.
    `pkictl serve` renews them by itself before expiry; a running one serves the new
    certificate to new connections within seconds."""

    async def action(app: App) -> list[Authority]:
        return await app.renew_server_certificates(actor(), names=names or None, force=True)

    rows = [
        {
            "name": a.name,
            "serial": serial_hex(a.certificate().serial_number),
            "not_after": iso(a.certificate().not_valid_after_utc),
        }
        for a in run_with_app(ctx, action)
    ]
    if as_json:
        emit_json(rows)
    else:
        for row in rows:
            note(f"{row['name']}: new certificate {row['serial']} until {row['not_after']}")
