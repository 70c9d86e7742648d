"""`pkictl audit …`: read and verify the hash-chained audit log."""

from __future__ import annotations

import click

from cli.context import Context, json_option, run_with_app
from cli.errors import ExitCode
from cli.output import emit_json, emit_table, iso, note
from csms.app import App
from pki.audit import (
    AuditEntry,
    AuditHead,
    format_head,
    parse_head,
    verify_anchor,
    verify_chain,
)


@click.group()
def audit() -> None:
    """Read and verify the audit log."""


@audit.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show the last N entries.",
)
@json_option
@click.pass_obj
def audit_list(ctx: Context, limit: int, as_json: bool) -> None:
    """Show the most recent audit entries."""

    async def action(app: App) -> list[AuditEntry]:
        return await app.store.audit_entries(limit=limit)

    entries = run_with_app(ctx, action)
    rows = [{**e.as_dict(), "at": iso(e.at)} for e in entries]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ("seq", "at", "action", "actor", "target", "outcome"))


def _anchor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> AuditHead | None:
    if value is None:
        return None
    try:
        return parse_head(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@audit.command("verify")
@click.option(
    "--head",
    "anchor",
    metavar="SEQ:HASH",
    callback=_anchor,
    help="A head recorded elsewhere (printed here earlier, or published by `pkictl serve`): "
    "the log must still hold entry SEQ with hash HASH, else exit 7.",
)
@json_option
@click.pass_obj
def audit_verify(ctx: Context, anchor: AuditHead | None, as_json: bool) -> None:
    """Check the whole chain; exit code 7 if any entry was edited or deleted.
    Record the printed head elsewhere (`pkictl serve` publishes it) and give it with
    --head later: a log emptied or cut short, its head rewound, fails that check."""

    async def action(app: App) -> dict[str, object]:
        entries = await app.store.audit_entries()
        head = await app.store.audit_head()
        problems = verify_chain(entries, head)
        if anchor is not None:
            problems += verify_anchor(entries, anchor)
        report: dict[str, object] = {
            "entries": len(entries),
            "head": {"seq": head.seq, "hash": head.hash} if head else None,
        }
        if anchor is not None:  # (the key only with --head: the report stays as it was)
            report["anchor"] = format_head(anchor)
        return report | {"problems": problems}

    report = run_with_app(ctx, action)
    report["intact"] = not report["problems"]
    if as_json:
        emit_json(report)
    else:
        for problem in report["problems"]:  # type: ignore[attr-defined]
            note(f"problem: {problem}")
        head = report["head"]
        shown = f"{head['seq']}:{head['hash']}" if isinstance(head, dict) else "(none)"
        checked = f", checked against {anchor.seq}:{anchor.hash[:12]}…" if anchor else ""
        note(
            f"{report['entries']} entries, head {shown}{checked}: "
            f"{'intact' if report['intact'] else 'TAMPERED'}"
        )
    if not report["intact"]:
        raise click.exceptions.Exit(int(ExitCode.INTEGRITY))
