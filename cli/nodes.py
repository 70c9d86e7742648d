"""`pkictl nodes list`: the `pkictl serve` processes sharing this database (ADR 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from cli.context import Context, json_option, run_with_app
from cli.output import emit_json, emit_table, iso
from csms.services.nodes import LEASE_S, NodeRecord

NODE_COLUMNS = ("id", "host", "pid", "state", "stations", "leases", "started_at", "heartbeat_at")


def node_state(node: NodeRecord, now: datetime) -> str:
    """live; silent (no heartbeat within the lease: about to be declared lost); stopped;
    lost."""
    if node.stop_reason is not None:
        return node.stop_reason
    return "silent" if now - node.heartbeat_at > timedelta(seconds=LEASE_S) else "live"


def node_view(node: NodeRecord, now: datetime) -> dict[str, object]:
    return {
        "id": node.id,
        "host": node.host,
        "pid": node.pid,
        "state": node_state(node, now),
        "stations": node.stations,
        "leases": ",".join(node.leases),
        "started_at": iso(node.started_at),
        "heartbeat_at": iso(node.heartbeat_at),
        "stopped_at": iso(node.stopped_at),
    }


@click.group("nodes")
def nodes() -> None:
    """The `pkictl serve` processes (nodes) that share this database."""


@nodes.command("list")
@click.option("--all", "include_stopped", is_flag=True, help="Also stopped and lost nodes.")
@json_option
@click.pass_obj
def nodes_list(ctx: Context, include_stopped: bool, as_json: bool) -> None:
    """Live nodes (heartbeat within the lease), the stations whose connection each holds,
    the leases it holds (lifecycle: it runs the renewal scan), its last heartbeat."""
    listed = run_with_app(ctx, lambda app: app.nodes.list(include_stopped=include_stopped))
    now = datetime.now(UTC)
    rows = [node_view(n, now) for n in listed]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, NODE_COLUMNS)
