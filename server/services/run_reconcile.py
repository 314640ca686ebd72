"""Heartbeat reconciliation: which of the runs a node reports it should stop."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi.models import TERMINAL_RUN_STATUSES
from server.repositories import runs as run_repo

MAX_REPORTED = 10_000


async def runs_to_stop(session: AsyncSession, node_id: str, active_runs: list[str]) -> list[str]:
    """Reported runs the server does not want on this node: unknown, finished (cancelled,
    lost, ...) or placed on another node.

    A node drops a run named here without reporting anything more, so a run waiting to be
    cancelled is not listed: it goes through the work channel's `cancel_runs`, after which
    the node reports `cancelled` and the run gets its final status."""
    reported = sorted(set(active_runs))[:MAX_REPORTED]
    known = {row.id: row for row in await run_repo.get_runs(session, reported)}
    stop = []
    for run_id in reported:
        row = known.get(run_id)
        if row is None or row.status in TERMINAL_RUN_STATUSES or row.node_id != node_id:
            stop.append(run_id)
    return stop
