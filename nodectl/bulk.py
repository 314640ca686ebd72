"""The fleet-wide forms (`-l k=v` instead of a node id) of drain, undrain, env set and env test-proxy.

Select the nodes, confirm a change, work on them in parallel with a bound (a progress line on a
terminal's stderr), then print one row per node and exit 1 when any node failed.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from nodeapi import errors as api
from nodectl import output
from nodectl.args import parse_selector_pairs
from nodectl.errors import EXIT_AUTH, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, CliError, UsageError
from nodectl.output import Cell, Format

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_PARALLEL = 8
MAX_PARALLEL = 64  # below httpx's default pool of 100 connections, which the workers share

RESULT_HEADERS = ["NODE", "RESULT", "REASON", "LATENCY"]
RESULT_WIDE_HEADERS = [*RESULT_HEADERS, "MESSAGE"]


@dataclass
class Outcome:
    """What one node's operation came to. `detail` adds operation-specific fields to its JSON row."""

    ok: bool
    reason: str
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    exit_code: int = EXIT_OK  # for a failure: the exit code it alone would give


@dataclass
class NodeResult:
    node_id: str
    outcome: Outcome
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def to_data(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "ok": self.outcome.ok,
            "reason": self.outcome.reason,
            "message": self.outcome.message,
            "latency_ms": round(self.latency_ms, 1),
            **self.outcome.detail,
        }


def failed(reason: str, message: str, exit_code: int = EXIT_FAILED, **detail: Any) -> Outcome:
    return Outcome(False, reason, message, detail, exit_code)


def failure(exc: api.ApiError) -> Outcome:
    """An API error of one node's call as a short reason and a message."""
    if isinstance(exc, api.RequestTimeout):
        return failed("timeout", str(exc))
    if isinstance(exc, api.TransportError):
        return failed("unreachable", str(exc))
    if isinstance(exc, api.Unauthorized):
        return failed("unauthorized" if exc.status_code == 401 else "forbidden", exc.detail, EXIT_AUTH)
    if isinstance(exc, api.NotFound):
        return failed("not found", exc.detail)
    if isinstance(exc, api.Conflict):
        return failed("conflict", exc.detail)
    if isinstance(exc, api.GatewayTimeout):
        return failed("timeout", exc.detail)
    if isinstance(exc, api.HTTPStatusError):
        return failed(f"http {exc.status_code}", exc.detail)
    return failed("error", str(exc))


# --------------------------------------------------------------------------- selecting nodes


def selector_of(
    node_id: str | None, selector: list[str] | None, fleet_output: Format | None = None
) -> dict[str, str] | None:
    """The parsed `-l` selector for the fleet-wide form, None for the single-node form; exactly one.

    `fleet_output` is the -o of a command whose single-node form prints no data: refused there."""
    if node_id is not None and selector:
        raise UsageError("give either a node ID or -l k=v, not both")
    if node_id is None and not selector:
        raise UsageError("give a node ID, or -l k=v to act on every node with that label")
    if node_id is not None:
        if fleet_output is not None:
            raise UsageError("-o/--output goes with -l; for one node this command prints only a message")
        return None
    parsed = parse_selector_pairs(selector or [], "--selector")
    if not parsed:
        raise UsageError("-l needs at least one k=v")
    return parsed


def fetch_nodes(sess: Session, status: str | None, selector: dict[str, str]) -> list[m.Node]:
    """Every node (all pages) with this status (None: any) and all of these labels."""
    from nodeapi.client import Calls

    items, _ = sess.fetch_all(
        lambda limit, offset: Calls.list_nodes(
            status=status, selector=selector or None, limit=limit, offset=offset
        )
    )
    return items


def select(sess: Session, selector: dict[str, str], fmt: Format) -> list[str]:
    """The matching node ids, sorted. None matching is not an error (as kubectl): a note on stderr
    and, for -o json/yaml, an empty list on stdout; the caller then has nothing to do."""
    ids = sorted(node.id for node in fetch_nodes(sess, None, selector))
    if not ids:
        output.info(f"No nodes match {output.labels_text(selector)}.")
        output.print_data([], fmt)
    return ids


def refuse_without_terminal(action: str, selector: dict[str, str], yes: bool) -> None:
    """A change to many nodes needs --yes without a terminal; checked before asking the server anything."""
    if not yes and not sys.stdin.isatty():
        raise UsageError(
            f"refusing to {action.lower()} nodes matching {output.labels_text(selector)} "
            "without a terminal to confirm; pass --yes"
        )


def confirm(action: str, node_ids: Sequence[str], selector: dict[str, str], yes: bool) -> None:
    """Ask "Drain 12 nodes matching zone=a? [y/N]" on a terminal; declining exits 3."""
    refuse_without_terminal(action, selector, yes)
    if yes:
        return
    count = len(node_ids)
    what = f"{count} node{'' if count == 1 else 's'} matching {output.labels_text(selector)}"
    if not typer.confirm(f"{action} {what}?", default=False, err=True):
        raise CliError("declined; nothing changed", EXIT_TIMEOUT)


def for_each_node(
    sess: Session,
    selector: dict[str, str],
    work: Callable[[str], Outcome],
    fmt: Format,
    parallel: int,
    confirm_action: str | None = None,
    yes: bool = False,
    then: Callable[[list[NodeResult]], list[NodeResult]] | None = None,
) -> None:
    """The whole fleet-wide form: select, confirm (when `confirm_action` names a change), work on
    each node, `then` (e.g. wait for the nodes to drain), report."""
    if confirm_action:
        refuse_without_terminal(confirm_action, selector, yes)
    node_ids = select(sess, selector, fmt)
    if not node_ids:
        return
    if confirm_action:
        confirm(confirm_action, node_ids, selector, yes)
    results = run_on_nodes(node_ids, work, parallel)
    report(then(results) if then else results, fmt)


# --------------------------------------------------------------------------- working in parallel


@dataclass
class _Raised:
    error: BaseException


_EXITED = object()  # a worker found nothing left to do


def run_parallel(
    items: Sequence[T], work: Callable[[T], R], parallel: int, on_result: Callable[[R], None]
) -> None:
    """`work` on every item, at most `parallel` at once; `on_result` in the calling thread as each
    ends. If `work` raises, no further item starts and the error is raised here.

    Daemon threads rather than a ThreadPoolExecutor, whose workers the interpreter joins at exit:
    Ctrl-C must not wait for a slow node's answer."""
    todo: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    done: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        try:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                done.put(work(item))
        except BaseException as exc:
            done.put(_Raised(exc))
        finally:
            done.put(_EXITED)

    alive = min(parallel, len(items))
    for _ in range(alive):
        threading.Thread(target=worker, name="nodectl-bulk", daemon=True).start()
    raised: BaseException | None = None
    while alive:
        answer = done.get()
        if answer is _EXITED:
            alive -= 1
        elif isinstance(answer, _Raised):
            stop.set()
            raised = raised or answer.error
        elif raised is None:
            on_result(answer)
    if raised is not None:
        raise raised


def run_on_nodes(node_ids: Sequence[str], work: Callable[[str], Outcome], parallel: int) -> list[NodeResult]:
    """`work` on every node in parallel, with a progress line on a terminal; results sorted by node id."""
    results: list[NodeResult] = []
    line = StatusLine.on_terminal()

    def timed(node_id: str) -> NodeResult:
        started = time.monotonic()
        try:
            outcome = work(node_id)
        except api.ApiError as exc:
            outcome = failure(exc)
        except Exception as exc:  # one node's surprise is its row, not the end of the other nodes' work
            outcome = failed("error", f"{type(exc).__name__}: {exc}")
        return NodeResult(node_id, outcome, (time.monotonic() - started) * 1000)

    def record(result: NodeResult) -> None:
        results.append(result)
        if line:
            failures = sum(not r.ok for r in results)
            line.show(f"{len(results)}/{len(node_ids)} nodes done, {failures} failed")

    if line:
        line.show(f"0/{len(node_ids)} nodes done, 0 failed")
    try:
        run_parallel(node_ids, timed, parallel, record)
    finally:
        if line:
            line.clear()
    return sorted(results, key=lambda r: r.node_id)


class StatusLine:
    """One line on stderr, redrawn in place; only on a terminal."""

    @staticmethod
    def on_terminal() -> StatusLine | None:
        return StatusLine() if sys.stderr.isatty() and os.environ.get("TERM") != "dumb" else None

    def show(self, text: str) -> None:
        sys.stderr.write(f"\r\x1b[2K{text}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


# --------------------------------------------------------------------------- the report


def latency_text(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def result_row(result: NodeResult, wide: bool) -> list[Cell]:
    row: list[Cell] = [
        result.node_id,
        ("OK", "green") if result.ok else ("FAILED", "bold red"),
        result.outcome.reason,
        latency_text(result.latency_ms),
    ]
    if wide:
        row.append(result.outcome.message or "-")
    return row


def report(results: list[NodeResult], fmt: Format) -> None:
    """Print one row per node, then fail (exit 4 if a node refused our credentials; 3 if every
    failure is a wait that timed out; else 1) when any node failed."""
    if not output.print_data([r.to_data() for r in results], fmt):
        wide = fmt is Format.wide
        headers = RESULT_WIDE_HEADERS if wide else RESULT_HEADERS
        output.print_table(headers, [result_row(r, wide) for r in results])
    failures = [r for r in results if not r.ok]
    if not failures:
        return
    codes = {r.outcome.exit_code for r in failures}
    code = EXIT_AUTH if EXIT_AUTH in codes else EXIT_TIMEOUT if codes == {EXIT_TIMEOUT} else EXIT_FAILED
    shown = ", ".join(f"{r.node_id} ({r.outcome.reason})" for r in failures[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    raise CliError(f"{len(failures)} of {len(results)} nodes failed: {shown}{more}", code)
