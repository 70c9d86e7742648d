"""`pkictl db status|upgrade`: the database's schema revision (Alembic)."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from sqlalchemy.engine import make_url

from cli.context import Context, json_option
from cli.errors import ExitCode
from cli.output import emit_fields, emit_json
from csms.home import CONFIG_FILE, database_url, load_config
from pki.store.sql import open_store, schema_status


def _url(ctx: Context) -> str:
    """--database-url, PKICTL_DATABASE_URL, the home's configuration, or its SQLite file
    (a home is not needed when the URL is given)."""
    config = load_config(ctx.home) if (ctx.home / CONFIG_FILE).exists() else None
    return database_url(ctx.home, config, ctx.database)


def _view(url: str, current: str | None, head: str | None) -> dict[str, Any]:
    return {
        "database": make_url(url).render_as_string(hide_password=True),
        "revision": current,
        "head": head,
        "up_to_date": current == head,
    }


@click.group("db")
def db() -> None:
    """The database's schema: Alembic migrations, shared by every node."""


@db.command("status")
@json_option
@click.pass_obj
def db_status(ctx: Context, as_json: bool) -> None:
    """Show the schema revision and whether migrations are pending (exit 6 if so).
    Changes nothing."""
    url = _url(ctx)
    view = _view(url, *asyncio.run(schema_status(url)))
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)
    if not view["up_to_date"]:
        raise click.exceptions.Exit(int(ExitCode.CONFIG))


@db.command("upgrade")
@json_option
@click.pass_obj
def db_upgrade(ctx: Context, as_json: bool) -> None:
    """Apply pending migrations (`pkictl serve` does too when it starts; nodes starting
    together take turns)."""
    url = _url(ctx)

    async def upgrade() -> dict[str, Any]:
        before, _ = await schema_status(url)
        store = await open_store(url)
        await store.close()
        view = _view(url, *await schema_status(url))
        return {**view, "from": before}

    view = asyncio.run(upgrade())
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)
