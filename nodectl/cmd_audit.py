"""`nodectl audit list`: who changed what (labels, drains, env config, deletions)."""

from __future__ import annotations

from typing import Annotated

import typer

from nodectl import output, views
from nodectl.options import NoHeadersOpt, OutputOpt, QuietOpt, session
from nodectl.output import Format

app = typer.Typer(help="The audit log of admin changes.", no_args_is_help=True)


@app.command("list")
def list_audit(
    ctx: typer.Context,
    target: Annotated[
        str | None, typer.Option("--target", help="Only entries about this node or run id.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N entries.")] = 100,
    fmt: OutputOpt = Format.table,
    quiet: QuietOpt = False,
    no_headers: NoHeadersOpt = False,
) -> None:
    """Recent audit entries."""
    from nodeapi.client import Calls

    page = session(ctx).send(Calls.audit(limit=limit, target_id=target))
    if quiet:
        output.print_ids(str(e.id) for e in page.items)
    elif not output.print_data({"items": page.items, "total": page.total}, fmt):
        output.print_table(views.AUDIT_HEADERS, [views.audit_row(e) for e in page.items], no_headers)
