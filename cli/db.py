"""`pkictl db status|upgrade`: the database's schema revision (Alembic)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cli.context import Context, json_option
from cli.errors import ExitCode
from cli.output import emit_fields, emit_json
from csms.home import database_url, load_config
from pki.store.sql import open_store, schema_status

T = TypeVar("T")


def _url(ctx: Context) -> str:
    """--database-url, PKICTL_DATABASE_URL, the home's configuration, or its SQLite file.
    Without a URL the home must be initialized: never a new, empty database file."""
    if ctx.database or os.environ.get("PKICTL_DATABASE_URL"):
        return database_url(ctx.home, None, ctx.database)
    return database_url(ctx.home, load_config(ctx.home))  # HomeError (exit 6) if not a home


def _run(url: str, work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except (SQLAlchemyError, OSError) as exc:  # unreachable, refused, not a database
        shown = make_url(url).render_as_string(hide_password=True)
        reason = exc.orig if isinstance(exc, SQLAlchemyError) and exc.orig else exc
        click.echo(f"error: cannot use the database at {shown}: {reason}", err=True)
        raise click.exceptions.Exit(int(ExitCode.ERROR)) from None


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
    view = _view(url, *_run(url, schema_status(url)))
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

    view = _run(url, upgrade())
    if as_json:
        emit_json(view)
    else:
        emit_fields(view)
