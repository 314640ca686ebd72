"""Options shared by many commands, and the helper commands use to reach their Session."""

from __future__ import annotations

from typing import Annotated

import typer

from nodectl.bulk import MAX_PARALLEL
from nodectl.output import Format
from nodectl.session import Session

OutputOpt = Annotated[
    Format,
    typer.Option("--output", "-o", help="table, wide (more columns), json or yaml.", case_sensitive=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print ids only, one a line.")]
NoHeadersOpt = Annotated[bool, typer.Option("--no-headers", help="Omit the table header row.")]
WatchOpt = Annotated[
    bool, typer.Option("--watch", "-w", help="Redraw every --interval seconds until Ctrl-C.")
]
IntervalOpt = Annotated[
    float, typer.Option("--interval", min=0.2, help="Seconds between polls with --watch.")
]
WatchTimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Stop watching after this many seconds.")
]
NodeIdArg = Annotated[str, typer.Argument(help="Node id.", show_default=False)]

# the fleet-wide forms: a node id, or -l to act on every matching node (nodectl/bulk.py)
NodeIdOrSelectorArg = Annotated[
    str | None, typer.Argument(help="Node id; or leave it out and select nodes with -l.", show_default=False)
]
SelectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--selector",
        "-l",
        help="Act on every node with this label (k=v; repeatable, all must match) instead of one ID.",
        show_default=False,
    ),
]
ParallelOpt = Annotated[
    int,
    typer.Option("--parallel", min=1, max=MAX_PARALLEL, help="With -l: how many nodes to work on at once."),
]
BulkOutputOpt = Annotated[
    Format | None,
    typer.Option(
        "--output", "-o", help="With -l: table, wide, json or yaml.", case_sensitive=False, show_default=False
    ),
]
BulkYesOpt = Annotated[bool, typer.Option("--yes", "-y", help="With -l: do not ask for confirmation.")]
RunIdArg = Annotated[str, typer.Argument(help="Run id.", show_default=False)]


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    if not isinstance(obj, Session):  # a sub-app invoked on its own (tests of one command group)
        obj = Session()
        ctx.find_root().obj = obj
    return obj
