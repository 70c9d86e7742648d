"""`pkictl policy …`: validate and show issuance policies."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, json_option
from cli.output import emit_json, emit_table, note
from csms.app import default_policy_text
from csms.home import CONFIG_FILE, POLICY_FILE
from pki.policy import Policy, load_policy, parse_policy

PROFILE_COLUMNS = ("name", "kind", "issuer", "validity_days", "keys", "renewal")


def _in_force(ctx: Context, file: Path | None) -> Policy:
    if file is not None:
        return load_policy(file)
    if (ctx.home / CONFIG_FILE).exists():
        return load_policy(ctx.home / POLICY_FILE)
    return parse_policy(default_policy_text(), source="policies/default.toml")


def _profile_rows(policy: Policy) -> list[dict[str, object]]:
    rows = []
    for profile in policy.profiles.values():
        if profile.kind == "csr":
            keys = profile.allowed_keys.describe()
        else:
            keys = ", ".join(
                str(k) for k in ([profile.key] if profile.key else profile.server_keys)
            )
        rows.append(
            {
                "name": profile.name,
                "kind": profile.kind,
                "issuer": profile.issuer or ("(self)" if profile.kind == "ca" else "(each CA)"),
                "validity_days": profile.validity_days,
                "max_validity_days": profile.max_validity_days,
                "keys": keys,
                "key_usage": list(profile.key_usage),
                "extended_key_usage": list(profile.extended_key_usage),
                "subject": {t.attribute: t.template for t in profile.subject},
                "iso15118": profile.iso15118,
                "renewal": profile.renewal.describe(),
            }
        )
    return rows


@click.group()
def policy() -> None:
    """Validate and inspect issuance policies."""


@policy.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def policy_check(ctx: Context, file: Path | None, as_json: bool) -> None:
    """Validate FILE (default: the policy in force in the home, or the shipped default).
    Errors name the file, the key and the reason; exit code 6 when invalid."""
    checked = _in_force(ctx, file)
    if as_json:
        emit_json(
            {
                "valid": True,
                "source": checked.source,
                "digest": checked.digest,
                "profiles": sorted(checked.profiles),
            }
        )
    else:
        note(
            f"{checked.source}: valid ({len(checked.profiles)} profiles, "
            f"TLS minimum {checked.tls_min_version})"
        )


@policy.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def policy_show(ctx: Context, file: Path | None, as_json: bool) -> None:
    """Show the profiles of the policy in force (or of FILE)."""
    shown = _in_force(ctx, file)
    rows = _profile_rows(shown)
    if as_json:
        emit_json(
            {
                "source": shown.source,
                "digest": shown.digest,
                "tls_min_version": shown.tls_min_version,
                "profiles": rows,
            }
        )
    else:
        emit_table(rows, PROFILE_COLUMNS)
