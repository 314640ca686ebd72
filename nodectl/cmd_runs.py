"""`nodectl runs ...`: submit runs, list and inspect them, read their events and logs, cancel them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from nodectl import output, views
from nodectl.args import parse_env_pairs, parse_selector_pairs
from nodectl.errors import EXIT_FAILED, CliError, UsageError
from nodectl.options import NoHeadersOpt, OutputOpt, QuietOpt, RunIdArg, session
from nodectl.output import Format

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session

app = typer.Typer(help="Runs: one execution of an agent container.", no_args_is_help=True)

RUN_STATUSES = ("queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lost")
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Give up waiting after S seconds (exit 3).")
]


def _status_line(event: m.RunEvent) -> None:
    if event.type == "log":
        return
    detail = views.event_summary(event)
    output.info(f"[{event.at:%H:%M:%S}] {event.type}" + ("" if detail == "-" else f" {detail}"))


@app.command("submit")
def submit(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Container image.", show_default=False)],
    command: Annotated[list[str] | None, typer.Argument(help="Command and its arguments, after --.")] = None,
    selector: Annotated[
        list[str] | None, typer.Option("--selector", "-s", help="Node label the run needs (k=v); repeatable.")
    ] = None,
    expr: Annotated[
        list[str] | None,
        typer.Option("--expr", help="Set-based selector, e.g. 'zone in (a,b)', '!spot'; repeatable."),
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=value; repeatable.")] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(
            "--secret-env", help="NAME=value reaching only the container (shown as ***); repeatable."
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="Longest the run may run once started: 90s, 30m, 1h30m (default: the server's).",
        ),
    ] = None,
    cpus: Annotated[
        float | None, typer.Option("--cpus", help="CPUs it requests and is limited to, e.g. 0.5.")
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Memory it requests and is limited to: 512M, 2G (binary units)."),
    ] = None,
    read_only_rootfs: Annotated[
        bool,
        typer.Option(
            "--read-only-rootfs", help="Root file system read-only (workspace and /tmp stay writable)."
        ),
    ] = False,
    no_network: Annotated[
        bool, typer.Option("--no-network", help="No network at all, not even the node's.")
    ] = False,
    pids_limit: Annotated[
        int | None, typer.Option("--pids-limit", help="Most processes the run may have at once.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to finish; exit 0 only if it succeeded.")
    ] = False,
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Like --wait, and stream the run's output.")
    ] = False,
    timeout: TimeoutOpt = None,
) -> None:
    """Create a run: `nodectl runs submit busybox --selector gpu=true --wait -- sh -c 'echo hi'`.

    Prints the run id on stdout."""
    from nodeapi import models as m
    from nodeapi.client import Calls
    from nodeapi.masking import looks_secret
    from nodeapi.validation import validate_env, validate_env_total

    run_env = parse_env_pairs(env or [])
    run_secret_env = parse_env_pairs(secret_env or [], "--secret-env")
    try:
        validate_env(run_env)
        validate_env(run_secret_env, "--secret-env")
        validate_env_total(run_env, run_secret_env)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for name in sorted(run_env):
        if looks_secret(name):
            output.warn(f"{name} looks like a secret: --secret-env {name}=... keeps it masked everywhere")
    request = m.RunCreate(
        image=image,
        command=list(command or []),
        env=run_env,
        secret_env=run_secret_env,
        node_selector=parse_selector_pairs(selector or []),
        selector_expressions=[e.strip() for e in expr or [] if e.strip()],
        **_limits(deadline, cpus, memory, (read_only_rootfs, no_network, pids_limit)),
    )
    sess = session(ctx)
    run = _create(sess, request)
    output.print_ids([run.id])
    if not (wait or follow_logs):
        return
    from nodectl.follow import follow, write_log

    def on_event(event: m.RunEvent) -> None:
        if event.type == "log":
            if follow_logs:
                write_log(event)
        else:
            _status_line(event)

    status = follow(sess, run.id, on_event, timeout)
    _exit_for(sess.send(Calls.get_run(run.id)) if status != "succeeded" else None, run.id, status)


def _limits(
    deadline: str | None,
    cpus: float | None,
    memory: str | None,
    sandbox: tuple[bool, bool, int | None],
) -> dict[str, Any]:
    """The create body's limit fields from the flags; those not given are left to the server."""
    from nodeapi import models as m
    from nodeapi.units import parse_duration, parse_memory_mb

    fields: dict[str, Any] = {}
    memory_mb = None
    for flag, text, parse in (
        ("--deadline", deadline, parse_duration),
        ("--memory", memory, parse_memory_mb),
    ):
        if text is None:
            continue
        try:
            value = parse(text)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from exc
        if flag == "--deadline":
            fields["deadline_seconds"] = value
        else:
            memory_mb = value
    if cpus is not None and not cpus > 0:
        raise UsageError(f"--cpus: must be above 0, got {cpus:g}")
    if cpus is not None or memory_mb is not None:
        fields["resources"] = m.Resources(cpus=cpus, memory_mb=memory_mb)
    read_only_rootfs, no_network, pids_limit = sandbox
    if read_only_rootfs or no_network or pids_limit is not None:
        fields["sandbox"] = m.Sandbox(
            read_only_rootfs=read_only_rootfs, network="none" if no_network else "node", pids_limit=pids_limit
        )
    return fields


SUBMIT_ATTEMPTS = 5
SUBMIT_RETRY_CEILING = 5.0


def _create(sess: Session, request: m.RunCreate) -> m.Run:
    """Create the run, retrying a timeout, a reset connection or a busy server with the same
    Idempotency-Key: if the first try was committed but its answer lost, the retry gets that run
    instead of starting the agent twice."""
    import uuid

    import stamina
    import stamina.instrumentation

    from nodeapi.client import Calls
    from nodeapi.retry import retry_delay

    stamina.instrumentation.set_on_retry_hooks([])  # our own line below says it, not a log record
    key = f"nodectl-{uuid.uuid4()}"
    for attempt in stamina.retry_context(
        on=retry_delay,
        attempts=SUBMIT_ATTEMPTS,
        timeout=None,
        wait_initial=0.5,
        wait_max=SUBMIT_RETRY_CEILING,
    ):
        with attempt:
            if attempt.num > 1:
                output.warn(
                    f"retrying the submission (try {attempt.num} of {SUBMIT_ATTEMPTS}, same idempotency key)"
                )
            return sess.send(Calls.create_run(request, idempotency_key=key))
    raise AssertionError("unreachable: stamina re-raises the last error")


def _exit_for(run: m.Run | None, run_id: str, status: str) -> None:
    if status == "succeeded":
        output.info(f"run/{run_id} succeeded")
        return
    exit_code = "" if run is None or run.exit_code is None else f" (exit code {run.exit_code})"
    reason = "" if run is None or not run.message else f": {run.message}"
    raise CliError(f"run/{run_id} {status}{exit_code}{reason}", EXIT_FAILED)


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only runs in this status.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only runs placed on this node.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most N runs; 0 for all.")] = 1000,
    fmt: OutputOpt = Format.table,
    quiet: QuietOpt = False,
    no_headers: NoHeadersOpt = False,
) -> None:
    """List runs."""
    from nodeapi.client import Calls

    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"--status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    sess = session(ctx)
    if limit:
        page = sess.send(Calls.list_runs(status=status, node_id=node, limit=limit))
        runs, total = page.items, page.total
    else:
        runs, total = sess.fetch_all(
            lambda lim, off: Calls.list_runs(status=status, node_id=node, limit=lim, offset=off)
        )
    if total > len(runs):
        output.warn(f"showing {len(runs)} of {total} runs; --limit 0 shows all")
    if quiet:
        output.print_ids(r.id for r in runs)
    elif not output.print_data({"items": runs, "total": total}, fmt):
        wide = fmt is Format.wide
        headers = views.RUN_WIDE_HEADERS if wide else views.RUN_HEADERS
        output.print_table(headers, [views.run_row(r, wide) for r in runs], no_headers)


@app.command("get")
def get_run(ctx: typer.Context, run_id: RunIdArg, fmt: OutputOpt = Format.table) -> None:
    """Show one run."""
    from nodeapi.client import Calls

    run = session(ctx).send(Calls.get_run(run_id))
    if not output.print_data(run, fmt):
        output.print_fields(views.run_fields(run))


@app.command("events")
def events(
    ctx: typer.Context,
    run_id: RunIdArg,
    type: Annotated[str | None, typer.Option("--type", help="Only events of this type (e.g. log).")] = None,
    fmt: OutputOpt = Format.table,
    no_headers: NoHeadersOpt = False,
) -> None:
    """A run's events in order: scheduling decisions, start, log lines, exit."""
    from nodectl.follow import all_events

    items = list(all_events(session(ctx), run_id, type))
    if not output.print_data({"run_id": run_id, "items": items}, fmt):
        output.print_table(views.EVENT_HEADERS, [views.event_row(e) for e in items], no_headers)


@app.command("logs")
def logs(
    ctx: typer.Context,
    run_id: RunIdArg,
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    timeout: TimeoutOpt = None,
) -> None:
    """A run's output: stdout lines to stdout, stderr lines to stderr."""
    from nodectl.follow import all_events, follow, write_log

    sess = session(ctx)
    if follow_logs:
        follow(sess, run_id, write_log, timeout, type="log")
        return
    for event in all_events(sess, run_id, type="log"):
        write_log(event)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Run id(s).", show_default=False)],
) -> None:
    """Cancel runs: a queued run at once, a running one is stopped by its node."""
    from nodeapi.client import Calls

    sess = session(ctx)
    for run_id in run_ids:
        run = sess.send(Calls.cancel_run(run_id))
        state = run.status if run.status == "cancelled" else f"{run.status}, cancel requested"
        output.info(f"run/{run.id} {state}")
