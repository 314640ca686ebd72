"""`nodes drain --wait`: follow the runs still on a node until none is left."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from nodeapi import errors as api
from nodectl import output
from nodectl.errors import WaitTimeout
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
            pause = clock.remaining(POLL_INTERVAL)
            if deadline is not None and not cancelled:
                pause = min(pause, max(0.0, deadline - clock.elapsed)) or POLL_INTERVAL / 10
            time.sleep(pause)
    finally:
        if live:
            live.stop()


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
