"""Two-way reconciliation on every heartbeat: the runs a node holds against the runs placed on it.

- A run the node holds that the server does not want there (unknown, finished, placed on another
  node, or an older placement of it: a stale attempt) is named in `stop_runs`; the node stops it
  without reporting anything more.
- A run placed on the node that the node does not hold gets a grace period (a few heartbeats:
  it may just be on its way through the work channel). Past it, a run the node never claimed is
  queued again for any node; one it claimed or ran is `lost` (the node no longer has it, and it
  may have run), or `cancelled` when a cancel was pending. So the server never keeps a run
  `scheduled` or `running` on a node that stopped reporting it.

A run waiting to be cancelled is not named in `stop_runs`: it goes through the work channel's
`cancel_runs`, after which the node reports `cancelled` and the run gets its final status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi.models import TERMINAL_RUN_STATUSES
from server.repositories import runs as run_repo
from server.repositories.events import record_events
from server.services.mappers import utc

MAX_REPORTED = 10_000


@dataclass
class Reconciliation:
    stop_runs: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    unreported: list[str] = field(default_factory=list)  # placed on the node, not listed by it

    @property
    def changed(self) -> bool:
        return bool(self.requeued or self.ended)

    @property
    def agreed(self) -> bool:
        """The node holds exactly the runs the server placed on it: nothing to reconcile."""
        return not (self.stop_runs or self.unreported)


async def reconcile(
    session: AsyncSession,
    node_id: str,
    reported: list[str],
    attempts: dict[str, int],
    now: datetime,
    grace: float,
    max_attempts: int,
) -> Reconciliation:
    held = sorted(set(reported))[:MAX_REPORTED]
    outcome = Reconciliation()
    known = {row.id: row for row in await run_repo.get_runs(session, held)}
    for run_id in held:
        row = known.get(run_id)
        stale = run_id in attempts and row is not None and attempts[run_id] != row.attempts
        if row is None or row.status in TERMINAL_RUN_STATUSES or row.node_id != node_id or stale:
            outcome.stop_runs.append(run_id)
    held_set = set(held)
    await run_repo.mark_reported(session, node_id, held)
    for row in await run_repo.unreported_runs(session, node_id, held_set):
        outcome.unreported.append(row.id)
        since = utc(row.unreported_since)
        if since is None:
            await run_repo.update_run(session, row.id, {"status": row.status}, {"unreported_since": now})
        elif now - since > timedelta(seconds=grace):
            await _settle(session, row, node_id, now, (grace, max_attempts), outcome)
    if outcome.changed:
        await run_repo.recount_running(session, node_id)
    return outcome


async def _settle(
    session: AsyncSession,
    row: Any,
    node_id: str,
    now: datetime,
    limits: tuple[float, int],
    outcome: Reconciliation,
) -> None:
    """A run its node has not listed for longer than the grace period."""
    grace, max_attempts = limits
    why = f"node {node_id} has not listed the run in its heartbeats for more than {grace:g}s"
    values: dict[str, Any] = {"updated_at": now, "unreported_since": None}
    never_claimed = row.claimed_at is None and row.status == "scheduled" and not row.cancel_requested
    if never_claimed and row.attempts < max_attempts:
        message = f"{why}; it never claimed it, so it is queued again"
        values.update(
            status="queued", node_id=None, scheduled_at=None, claimed_at=None, enqueued=False, message=message
        )
        kind, status = "requeued", "queued"
    else:
        status = "cancelled" if row.cancel_requested else "lost"
        if row.cancel_requested:
            message = f"{why}; cancelled without its confirmation"
        elif never_claimed:
            message = f"{why}; it never claimed it, and the run was placed {row.attempts} time(s): giving up"
        else:
            message = f"{why}; it may have run"
        reason = "cancelled" if row.cancel_requested else "node_lost"
        values.update(status=status, finished_at=now, message=message, reason=reason)
        kind = status
    expect = {"status": row.status, "node_id": node_id, "unreported_since": row.unreported_since}
    if not await run_repo.update_run(session, row.id, expect, values):
        return
    await record_events(session, row.id, [(kind, {"reason": message, "node_id": node_id})], now)
    (outcome.requeued if status == "queued" else outcome.ended).append(row.id)
