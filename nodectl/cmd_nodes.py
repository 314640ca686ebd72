"""`nodectl nodes ...`: list, inspect, drain, label, edit and delete execution nodes."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nodectl import edit as editing
from nodectl import output, views
from nodectl.args import parse_label_changes, parse_selector_pairs
from nodectl.bulk import DEFAULT_PARALLEL, NodeResult, Outcome, fetch_nodes, for_each_node, selector_of
from nodectl.errors import EXIT_CONFLICT, EXIT_TIMEOUT, CliError, UsageError
from nodectl.options import (
    BulkOutputOpt,
    BulkYesOpt,
    IntervalOpt,
    NodeIdArg,
    NodeIdOrSelectorArg,
    NoHeadersOpt,
    OutputOpt,
    ParallelOpt,
    QuietOpt,
    SelectorOpt,
    WatchOpt,
    WatchTimeoutOpt,
    session,
)
from nodectl.output import Format

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session
    from nodectl.watch import Snapshot

app = typer.Typer(help="Execution nodes: list, inspect, drain, label, edit, delete.", no_args_is_help=True)

NODE_STATUSES = ("online", "offline", "draining")


def _node_snapshot(nodes: list[m.Node], wide: bool) -> Snapshot:
    from nodectl.watch import Snapshot

    now = datetime.now(UTC)
    headers = views.NODE_WIDE_HEADERS if wide else views.NODE_HEADERS
    keys: list[tuple[str, object]] = [
        (n.id, (n.status, n.running, n.capacity.max_concurrent, sorted(n.labels.items()))) for n in nodes
    ]
    return Snapshot(headers, [views.node_row(n, wide, now) for n in nodes], keys)


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    fmt: OutputOpt = Format.table,
    quiet: QuietOpt = False,
    no_headers: NoHeadersOpt = False,
    status: Annotated[str | None, typer.Option("--status", help="online, offline or draining.")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Only nodes with this label (k=v); repeatable.")
    ] = None,
    watch: WatchOpt = False,
    interval: IntervalOpt = 2.0,
    timeout: WatchTimeoutOpt = None,
) -> None:
    """List nodes (every page), e.g. `nodectl nodes list -l gpu=true --status online`."""
    if status is not None and status not in NODE_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(NODE_STATUSES)}, not {status!r}")
    selector = parse_selector_pairs(label or [], "--label")
    sess = session(ctx)
    if watch:
        if fmt in (Format.json, Format.yaml) or quiet:
            raise UsageError("--watch draws a table; it cannot be combined with -o json/yaml or -q")
        from nodectl.watch import watch_table

        wide = fmt is Format.wide
        watch_table(
            lambda: _node_snapshot(fetch_nodes(sess, status, selector), wide), interval, timeout, no_headers
        )
        return
    nodes = fetch_nodes(sess, status, selector)
    if quiet:
        output.print_ids(n.id for n in nodes)
    elif not output.print_data({"items": nodes, "total": len(nodes)}, fmt):
        view = _node_snapshot(nodes, fmt is Format.wide)
        output.print_table(view.headers, view.rows, no_headers)


@app.command("get")
def get_node(ctx: typer.Context, node_id: NodeIdArg, fmt: OutputOpt = Format.table) -> None:
    """Show one node."""
    from nodeapi.client import Calls

    node = session(ctx).send(Calls.get_node(node_id))
    if not output.print_data(node, fmt):
        output.print_fields(views.node_fields(node))


def _set_draining(sess: Session, node_id: str, draining: bool) -> m.Node:
    from nodeapi import models as m
    from nodeapi.client import Calls

    return sess.send(Calls.patch_node(node_id, m.NodePatch(status="draining" if draining else "online")))


@app.command("drain")
def drain(
    ctx: typer.Context,
    node_id: NodeIdOrSelectorArg = None,
    selector: SelectorOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until no run is left on the node(s).")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="With --wait: give up after S seconds (exit 3).")
    ] = None,
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline", min=0, help="Cancel the runs still on the node after S seconds (implies --wait)."
        ),
    ] = None,
    yes: BulkYesOpt = False,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
    fmt: BulkOutputOpt = None,
) -> None:
    """Stop scheduling new runs on a node, or on every node matching -l (asks first); running runs
    continue (or are cancelled at --deadline)."""
    labels = selector_of(node_id, selector, fmt)
    sess = session(ctx)
    if labels is not None:
        _drain_fleet(sess, labels, wait or deadline is not None, timeout, deadline, yes, parallel, fmt)
        return
    assert node_id is not None
    node = _set_draining(sess, node_id, True)
    output.info(f"node/{node.id} draining ({node.running} run(s) still on it)")
    if wait or deadline is not None:
        from nodectl.drain import wait_until_drained

        wait_until_drained(sess, node.id, timeout, deadline)


def _drain_fleet(
    sess: Session,
    selector: dict[str, str],
    wait: bool,
    timeout: float | None,
    deadline: float | None,
    yes: bool,
    parallel: int,
    fmt: Format | None,
) -> None:
    def drain_one(node_id: str) -> Outcome:
        node = _set_draining(sess, node_id, True)
        detail = {"status": node.status, "running": node.running}
        return Outcome(True, "draining", f"{node.running} run(s) still on it", detail)

    def wait_for_all(results: list[NodeResult]) -> list[NodeResult]:
        from nodectl.drain import wait_until_all_drained

        return wait_until_all_drained(sess, results, timeout, deadline, parallel)

    then = wait_for_all if wait else None
    for_each_node(sess, selector, drain_one, fmt or Format.table, parallel, "Drain", yes, then)


@app.command("undrain")
def undrain(
    ctx: typer.Context,
    node_id: NodeIdOrSelectorArg = None,
    selector: SelectorOpt = None,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
    fmt: BulkOutputOpt = None,
) -> None:
    """Let a drained node (or every node matching -l) take new runs again."""
    labels = selector_of(node_id, selector, fmt)
    sess = session(ctx)
    if labels is not None:

        def undrain_one(node_id: str) -> Outcome:
            node = _set_draining(sess, node_id, False)
            return Outcome(True, "undrained", f"status {node.status}", {"status": node.status})

        for_each_node(sess, labels, undrain_one, fmt or Format.table, parallel)
        return
    assert node_id is not None
    node = _set_draining(sess, node_id, False)
    output.info(f"node/{node.id} undrained (status {node.status})")


@app.command("label")
def label(
    ctx: typer.Context,
    node_id: NodeIdArg,
    changes: Annotated[list[str], typer.Argument(help="k=v to set, k- to remove.", show_default=False)],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow changing the value of a label that is already set.")
    ] = False,
) -> None:
    """Set or remove labels, kubectl style: `nodectl nodes label n1 gpu=true zone- --overwrite`."""
    from nodeapi import models as m
    from nodeapi.client import Calls

    to_set, to_remove = parse_label_changes(changes)
    sess = session(ctx)
    node = sess.send(Calls.get_node(node_id))
    for key, value in to_set.items():
        if key in node.labels and node.labels[key] != value and not overwrite:
            raise CliError(
                f"label {key!r} already has the value {node.labels[key]!r}; pass --overwrite to change it",
                EXIT_CONFLICT,
            )
    patch: dict[str, str | None] = {k: v for k, v in to_set.items() if node.labels.get(k) != v}
    for key in to_remove:
        if key in node.labels:
            patch[key] = None
        else:
            output.warn(f"label {key!r} not found on node/{node.id}")
    if not patch:
        output.info(f"node/{node.id} not labeled (no changes)")
        return
    # resource_version: a concurrent change between our read and this write answers 409, not a lost update
    sess.send(Calls.patch_node(node.id, m.NodePatch(labels=patch, resource_version=node.resource_version)))
    output.info(f"node/{node.id} labeled")


NODE_EDIT_HELP = """Editing node {id} (current status: {status}). Lines starting with '#' are ignored.
Editable: labels, status (online or draining), max_concurrent.
Save and quit to apply; quit without saving (or empty the file) to cancel."""


@app.command("edit")
def edit(ctx: typer.Context, node_id: NodeIdArg) -> None:
    """Edit a node's labels, status and max_concurrent in $VISUAL / $EDITOR (YAML)."""
    from nodeapi.client import Calls
    from nodeapi.errors import Conflict

    sess = session(ctx)
    node = sess.send(Calls.get_node(node_id))
    document: dict[str, Any] = {
        "labels": dict(sorted(node.labels.items())),
        "status": "draining" if node.draining else "online",
        "max_concurrent": node.capacity.max_concurrent,
    }
    original = editing.dump(document, NODE_EDIT_HELP.format(id=node.id, status=node.status))
    try:
        edited = editing.load_document(editing.run_editor(original, node.id), original)
    except editing.Unchanged:
        output.info(editing.CANCELLED)
        return
    patch = _node_patch(node, edited)
    if patch is None:
        output.info(editing.CANCELLED)
        return
    patch.resource_version = node.resource_version
    try:
        sess.send(Calls.patch_node(node.id, patch))
    except Conflict as exc:
        raise editing.stale_edit("node", node.id, exc.detail) from exc
    output.info(f"node/{node.id} edited")


def _node_patch(node: m.Node, edited: dict[str, Any]) -> m.NodePatch | None:
    from nodeapi import models as m
    from nodeapi.validation import validate_capacity, validate_labels

    unknown = set(edited) - {"labels", "status", "max_concurrent"}
    if unknown:
        raise UsageError(f"cannot edit {', '.join(sorted(unknown))}: only labels, status and max_concurrent")
    labels = editing.string_map(edited.get("labels"), "labels")
    status = edited.get("status", "draining" if node.draining else "online")
    if status not in ("online", "draining"):
        raise UsageError(f"status must be online or draining, not {status!r}")
    max_concurrent = edited.get("max_concurrent", node.capacity.max_concurrent)
    try:
        validate_labels(labels)
        validate_capacity(max_concurrent if isinstance(max_concurrent, int) else -1)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    patch = m.NodePatch()
    label_patch: dict[str, str | None] = {k: v for k, v in labels.items() if node.labels.get(k) != v}
    label_patch.update({k: None for k in node.labels if k not in labels})
    if label_patch:
        patch.labels = label_patch
    if status != ("draining" if node.draining else "online"):
        patch.status = status
    if max_concurrent != node.capacity.max_concurrent:
        patch.max_concurrent = max_concurrent
    changed = patch.labels is not None or patch.status is not None or patch.max_concurrent is not None
    return patch if changed else None


@app.command("delete")
def delete(
    ctx: typer.Context,
    node_id: NodeIdArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a node record (refused with exit 6 while runs are scheduled or running on it)."""
    from nodeapi.client import Calls

    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete node {node_id} without a terminal to confirm; pass --yes")
        if not typer.confirm(f"Delete node {node_id}?", default=False, err=True):
            raise CliError("deletion declined; nothing deleted", EXIT_TIMEOUT)
    session(ctx).send(Calls.delete_node(node_id))
    output.info(f"node/{node_id} deleted")


@app.command("reset-credential")
def reset_credential(
    ctx: typer.Context,
    node_id: NodeIdArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Void a node's credential (e.g. after it lost its state directory): its next heartbeat with
    the join token registers it again and gets a new one. Until then the old token is refused."""
    from nodeapi.client import Calls

    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to reset the credential of node {node_id} without a terminal to confirm; "
                "pass --yes"
            )
        if not typer.confirm(f"Void the credential of node {node_id}?", default=False, err=True):
            raise CliError("reset declined; nothing changed", EXIT_TIMEOUT)
    session(ctx).send(Calls.reset_credential(node_id))
    output.info(f"node/{node_id} credential voided; it registers again with the join token")


@app.command("runs")
def node_runs(
    ctx: typer.Context,
    node_id: NodeIdArg,
    status: Annotated[str | None, typer.Option("--status", help="Only runs in this status.")] = None,
    fmt: OutputOpt = Format.table,
    quiet: QuietOpt = False,
    no_headers: NoHeadersOpt = False,
) -> None:
    """Runs placed on a node."""
    from nodeapi.client import Calls
    from nodectl.session import PAGE_SIZE

    page = session(ctx).send(Calls.node_runs(node_id, status=status, limit=PAGE_SIZE))
    if page.total > len(page.items):
        output.warn(f"showing {len(page.items)} of {page.total} runs")
    if quiet:
        output.print_ids(r.id for r in page.items)
    elif not output.print_data({"items": page.items, "total": page.total}, fmt):
        wide = fmt is Format.wide
        headers = views.RUN_WIDE_HEADERS if wide else views.RUN_HEADERS
        output.print_table(headers, [views.run_row(r, wide) for r in page.items], no_headers)
