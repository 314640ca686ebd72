"""`nodes drain --wait`: follow the runs still on a node (or on every node of `-l`) until none is left."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from nodeapi import errors as api
from nodeapi.retry import is_transient
from nodectl import output
from nodectl.bulk import NodeResult, Outcome, StatusLine, failed, failure, run_parallel
from nodectl.errors import EXIT_TIMEOUT, WaitTimeout
from nodectl.watch import Deadline

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session

POLL_INTERVAL = 1.0


def active_runs(sess: Session, node_id: str) -> list[m.Run]:
    from nodeapi.client import Calls
    from nodeapi.models import ACTIVE_RUN_STATUSES
    from nodectl.session import PAGE_SIZE

    runs: dict[str, m.Run] = {}
    for status in sorted(ACTIVE_RUN_STATUSES):
        for run in sess.send(Calls.node_runs(node_id, status=status, limit=PAGE_SIZE)).items:
            if run.status in ACTIVE_RUN_STATUSES:
                runs[run.id] = run
    return sorted(runs.values(), key=lambda r: r.id)


def cancel_all(sess: Session, runs: list[m.Run]) -> None:
    from nodeapi.client import Calls

    for run in runs:
        try:
            sess.send(Calls.cancel_run(run.id))
        except (api.NotFound, api.Conflict):
            continue  # it ended on its own meanwhile
        output.info(f"run/{run.id} cancel requested (drain deadline)")


def _describe(runs: list[m.Run]) -> str:
    shown = ", ".join(f"{r.id} ({r.status})" for r in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return f"{shown}{more}"


def wait_until_drained(sess: Session, node_id: str, timeout: float | None, deadline: float | None) -> None:
    """Return once no run is scheduled or running on the node; WaitTimeout after `timeout` seconds.

    At `deadline` seconds the remaining runs are cancelled and the wait continues for them to stop."""
    clock = Deadline(timeout)
    cancelled = False
    live = _LiveProgress(node_id) if sys.stderr.isatty() else None
    last_line = ""
    try:
        while True:
            runs = active_runs(sess, node_id)
            if not runs:
                if live:
                    live.stop()
                output.info(f"node/{node_id} drained after {clock.elapsed:.0f}s")
                return
            if deadline is not None and not cancelled and clock.elapsed >= deadline:
                cancel_all(sess, runs)
                cancelled = True
            if live:
                live.show(runs, clock.elapsed)
            else:
                line = f"waiting for {len(runs)} run(s) on node/{node_id}: {_describe(runs)}"
                if line != last_line:
                    output.info(line)
                    last_line = line
            if clock.expired:
                raise WaitTimeout(
                    f"node/{node_id} still has {len(runs)} run(s) after {timeout:g}s: {_describe(runs)}"
                )
            time.sleep(_pause(clock, deadline, cancelled))
    finally:
        if live:
            live.stop()


def _pause(clock: Deadline, deadline: float | None, cancelled: bool) -> float:
    """Until the next poll: one interval, cut short by the timeout or by a cancel deadline to come."""
    pause = clock.remaining(POLL_INTERVAL)
    if deadline is not None and not cancelled:
        pause = min(pause, max(0.0, deadline - clock.elapsed)) or POLL_INTERVAL / 10
    return pause


class _LiveProgress:
    """A small live table on stderr (the terminal) of the runs the drain waits for."""

    def __init__(self, node_id: str) -> None:
        from rich.live import Live

        self.node_id = node_id
        self._live = Live(console=output.stderr_console(), auto_refresh=False, transient=True)
        self._live.start()
        self._stopped = False

    def show(self, runs: list[m.Run], elapsed: float) -> None:
        from rich.console import Group
        from rich.text import Text

        from nodectl import views

        title = Text(f"draining node/{self.node_id}: {len(runs)} run(s) left, {elapsed:.0f}s", style="bold")
        table = output.rich_table(views.RUN_HEADERS, [views.run_row(r) for r in runs])
        self._live.update(Group(title, table), refresh=True)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._live.stop()


def wait_until_all_drained(
    sess: Session, results: list[NodeResult], timeout: float | None, deadline: float | None, parallel: int
) -> list[NodeResult]:
    """`drain -l ... --wait`: follow the runs of every node that was set draining (polled in parallel)
    until none is left on any. The rows of nodes still busy at `timeout` fail with reason `timeout`
    (exit 3); at `deadline` seconds the runs left are cancelled and the wait goes on."""
    clock = Deadline(timeout)
    by_id = {r.node_id: r for r in results}
    waiting = {r.node_id for r in results if r.ok}
    runs_left: dict[str, list[m.Run]] = {}
    cancelled = False
    line = StatusLine.on_terminal()
    last_text = ""

    def poll(node_id: str) -> tuple[str, list[m.Run] | api.ApiError]:
        try:
            return node_id, active_runs(sess, node_id)
        except api.ApiError as exc:
            return node_id, exc

    def settle(node_id: str, outcome: Outcome) -> None:
        """The node's final row; its latency now covers the wait too."""
        by_id[node_id] = NodeResult(node_id, outcome, by_id[node_id].latency_ms + clock.elapsed * 1000)
        waiting.discard(node_id)

    try:
        while waiting:
            polled: list[tuple[str, list[m.Run] | api.ApiError]] = []
            run_parallel(sorted(waiting), poll, parallel, polled.append)
            for node_id, runs in polled:
                if isinstance(runs, api.ApiError):
                    if not is_transient(runs):  # a transient error is retried by the next poll
                        settle(node_id, failure(runs))
                elif not runs:
                    detail = {**by_id[node_id].outcome.detail, "running": 0}
                    settle(
                        node_id, Outcome(True, "drained", f"no run left after {clock.elapsed:.0f}s", detail)
                    )
                else:
                    runs_left[node_id] = runs
            if not waiting:
                break
            busy = sorted(waiting)
            count = sum(len(runs_left.get(n, [])) for n in busy)
            text = f"waiting for {count} run(s) on {len(busy)} of {len(results)} draining node(s)"
            if line:
                line.show(f"{text}, {clock.elapsed:.0f}s")
            elif text != last_text:
                output.info(f"{text}: {', '.join(busy[:5])}{' ...' if len(busy) > 5 else ''}")
                last_text = text
            if deadline is not None and not cancelled and clock.elapsed >= deadline:
                if line:
                    line.clear()
                for node_id in busy:
                    cancel_all(sess, runs_left.get(node_id, []))
                cancelled = True
            if clock.expired:
                for node_id in busy:
                    runs = runs_left.get(node_id, [])
                    message = f"{len(runs)} run(s) still on it after {timeout:g}s: {_describe(runs)}"
                    detail = {**by_id[node_id].outcome.detail, "running": len(runs)}
                    settle(node_id, failed("timeout", message, EXIT_TIMEOUT, **detail))
                break
            time.sleep(_pause(clock, deadline, cancelled))
    finally:
        if line:
            line.clear()
    return [by_id[r.node_id] for r in results]
