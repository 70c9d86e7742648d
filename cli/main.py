"""`pkictl`: the command line of the certificate-centric CSMS.

Noun-verb commands (`pkictl cert list`, `pkictl station add`), `--json` on every command
that prints data, exit codes documented in `cli.errors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click

from cli.audit import audit
from cli.ca import ca, init
from cli.cert import cert, crl
from cli.context import Context
from cli.db import db
from cli.errors import ExitCode, error_payload, exit_code_for
from cli.events import events
from cli.nodes import nodes
from cli.ocsp import ocsp_group
from cli.outbox import outbox
from cli.policy import policy
from cli.renewals import alerts, renew, renewals
from cli.rollover import campaign, rollover
from cli.roots import roots, station_certs
from cli.serve import serve_command
from cli.station import station
from cli.tokens import token
from cli.trust import trust
from cli.tx import tx
from csms.domain.text import printable
from csms.home import database_url, load_config
from pki.errors import IssuanceRefused, PkiError, StorageError
from pki.store.faults import describe, storage_fault


class PkictlGroup(click.Group):
    """Turns the core's typed errors into one-line messages and documented exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PkiError as error:
            _fail(ctx, error)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            # a database or disk fault (locked, read-only, full, unreachable): exit code 1
            # with the cause in one line, not a traceback (#22 item 21)
            fault = storage_fault(error)
            if fault is not None:
                _fail(ctx, StorageError(describe(fault, _database_url(ctx))))
            if isinstance(error, OSError):  # exit code 1 for an I/O error, with a message
                click.echo(printable(f"error: {error}"), err=True)
                raise click.exceptions.Exit(int(ExitCode.ERROR)) from None
            raise


def _fail(ctx: click.Context, error: PkiError) -> NoReturn:
    shared = ctx.find_object(Context)
    if shared is not None and shared.json:
        click.echo(json.dumps(error_payload(error), indent=2))
    message = f"error: {error}"
    if isinstance(error, IssuanceRefused):  # exit code 4: the reason code is printed
        message += f" (reason: {error.reason.value})"
    click.echo(printable(message), err=True)  # messages may quote what a station sent
    raise click.exceptions.Exit(int(exit_code_for(error))) from None


def _database_url(ctx: click.Context) -> str | None:
    """The database this invocation uses."""
    shared = ctx.find_object(Context)
    if shared is None:
        return None
    try:
        config = load_config(shared.home)
    except PkiError:
        config = None
    return database_url(shared.home, config, shared.database)


@click.group(cls=PkictlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PKICTL_HOME",
    default=Path("ca"),
    show_default=True,
    help="Home directory of the embedded CA (env PKICTL_HOME).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the CA key passphrase "
    "(else PKICTL_PASSPHRASE, else HOME/secrets/passphrase).",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Database to use instead of the home's: sqlite+aiosqlite:///FILE or "
    "postgresql+asyncpg://USER@HOST/DB (else PKICTL_DATABASE_URL, else pkictl.toml).",
)
@click.version_option(package_name="pkictl")
@click.pass_context
def cli(
    ctx: click.Context, home: Path, passphrase_file: Path | None, database_url: str | None
) -> None:
    """pkictl: certificate lifecycle for OCPP 2.0.1 charging networks.

    Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 not found, 4 refused by
    policy, 5 conflict, 6 not initialized / bad config or policy, 7 integrity check
    failed, 8 CA key unavailable, 9 a --wait
    ended before every station answered (`renew`, `station certs --refresh`,
    `campaign status`), 10 revoked (`ocsp check`).
    """
    ctx.obj = Context(home=home, passphrase_file=passphrase_file, database=database_url)


station.add_command(station_certs)
ca.add_command(rollover)
for command in (
    init, ca, station, cert, crl, policy, audit, events, token, tx, outbox, trust,
    renew, renewals, alerts, roots, campaign, ocsp_group, serve_command, nodes, db,
):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    cli.main(prog_name="pkictl")
