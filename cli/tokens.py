"""`pkictl token …`: the local id tokens stations may charge with."""

from __future__ import annotations

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso, note
from csms.app import App, actor
from csms.services.tokens import ID_TOKEN_TYPES, IdToken

TOKEN_COLUMNS = ("id_token", "type", "status", "created_at")
type_option = click.option(
    "--type", "type_", type=click.Choice(ID_TOKEN_TYPES), default="ISO14443",
    show_default=True, help="OCPP IdTokenType.type.",
)  # fmt: skip


def token_view(token: IdToken) -> dict[str, object]:
    return {
        "id_token": token.id_token,
        "type": token.type,
        "status": token.status.value,
        "created_at": iso(token.created_at),
    }


@click.group()
def token() -> None:
    """Local id tokens: Accepted when registered, Blocked once blocked, else Unknown."""


@token.command("add")
@click.argument("id_token")
@type_option
@json_option
@click.pass_obj
def token_add(ctx: Context, id_token: str, type_: str, as_json: bool) -> None:
    """Register ID_TOKEN (or unblock it): Authorize answers Accepted."""
    view = token_view(run_with_app(ctx, lambda app: app.tokens.add(id_token, type_, actor())))
    if as_json:
        emit_json(view)
    else:
        note(f"token {type_}:{id_token} accepted")


@token.command("block")
@click.argument("id_token")
@type_option
@json_option
@click.pass_obj
def token_block(ctx: Context, id_token: str, type_: str, as_json: bool) -> None:
    """Block ID_TOKEN: Authorize and TransactionEvent answer Blocked."""
    view = token_view(run_with_app(ctx, lambda app: app.tokens.block(id_token, type_, actor())))
    if as_json:
        emit_json(view)
    else:
        note(f"token {type_}:{id_token} blocked")


@token.command("list")
@json_option
@click.pass_obj
def token_list(ctx: Context, as_json: bool) -> None:
    """List the local id tokens."""

    async def action(app: App) -> list[IdToken]:
        return await app.tokens.list()

    rows = [token_view(t) for t in run_with_app(ctx, action)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, TOKEN_COLUMNS)
