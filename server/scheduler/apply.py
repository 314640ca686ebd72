"""Apply placement decisions to the database with conditional updates (the caller commits).

A decision made on a snapshot may be stale by the time it is written: another replica
may have filled the node, a run may have been cancelled or assigned already. So every
write re-checks its precondition in SQL and the batch is settled from what the
statements report back:

- nodes: `running = running + k WHERE running + k <= max_concurrent AND NOT draining AND
  fresh heartbeat` (k = runs given to that node in this batch), one statement for all nodes;
  a node that no longer fits sends its runs back for the next pass;
- runs: `status = 'scheduled' ... WHERE status = 'queued'`, one statement; a run that moved
  meanwhile gives its slot back (node counter decremented again);
- unschedulable runs get `message = reason` and an `unschedulable` event only when the
  reason differs from the stored one, so a parked run does not collect identical events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, false, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from server.repositories.events import RUNS, event_row, insert_event_rows
from server.scheduler.placement import Assign, Decision, Unschedulable

NODES = SQLModel.metadata.tables["nodes"]
MESSAGE_MAX = 2000


@dataclass
class ApplyResult:
    assigned: list[tuple[str, str]] = field(default_factory=list)  # (run id, node id), in decision order
    retry: list[str] = field(default_factory=list)  # node no longer fits: place again soon
    unschedulable: list[str] = field(default_factory=list)  # still queued, fits nowhere
    gone: list[str] = field(default_factory=list)  # no longer queued (cancelled, assigned elsewhere)


async def apply_decisions(
    session: AsyncSession, decisions: Sequence[Decision], *, now: datetime, offline_after: float
) -> ApplyResult:
    result = ApplyResult()
    assigns = [d for d in decisions if isinstance(d, Assign)]
    unschedulable = [d for d in decisions if isinstance(d, Unschedulable)]
    if assigns:
        await _apply_assignments(session, assigns, now, now - timedelta(seconds=offline_after), result)
    if unschedulable:
        await _record_unschedulable(session, unschedulable, now)
        result.unschedulable.extend(d.run_id for d in unschedulable)
    return result


def _by_id(column: Any, mapping: dict[str, Any]) -> ColumnElement[Any]:
    return case(mapping, value=column)


async def _apply_assignments(
    session: AsyncSession, assigns: list[Assign], now: datetime, cutoff: datetime, result: ApplyResult
) -> None:
    wanted = Counter(a.node_id for a in assigns)
    increment = _by_id(NODES.c.id, dict(wanted))
    taken = await session.execute(
        update(NODES)
        .where(
            NODES.c.id.in_(list(wanted)),
            NODES.c.running + increment <= NODES.c.max_concurrent,
            NODES.c.draining == false(),
            NODES.c.last_heartbeat_at > cutoff,
        )
        .values(running=NODES.c.running + increment)
        .returning(NODES.c.id)
    )
    granted = set(taken.scalars())
    result.retry.extend(a.run_id for a in assigns if a.node_id not in granted)
    placing = [a for a in assigns if a.node_id in granted]
    if not placing:
        return

    node_of = {a.run_id: a.node_id for a in placing}
    moved = await session.execute(
        update(RUNS)
        .where(RUNS.c.id.in_(list(node_of)), RUNS.c.status == "queued")
        .values(
            status="scheduled",
            node_id=_by_id(RUNS.c.id, node_of),
            scheduled_at=now,
            updated_at=now,
            message=None,
            attempts=RUNS.c.attempts + 1,
            last_event_seq=RUNS.c.last_event_seq + 1,
        )
        .returning(RUNS.c.id, RUNS.c.last_event_seq)
    )
    seq_of = {run_id: int(seq) for run_id, seq in moved.all()}
    await insert_event_rows(
        session,
        [event_row(rid, seq, "scheduled", {"node_id": node_of[rid]}, now) for rid, seq in seq_of.items()],
    )
    for assign in placing:
        if assign.run_id in seq_of:
            result.assigned.append((assign.run_id, assign.node_id))
        else:
            result.gone.append(assign.run_id)
    unused = Counter(node_of[run_id] for run_id in node_of if run_id not in seq_of)
    if unused:
        decrement = _by_id(NODES.c.id, dict(unused))
        await session.execute(
            update(NODES).where(NODES.c.id.in_(list(unused))).values(running=NODES.c.running - decrement)
        )


async def _record_unschedulable(session: AsyncSession, decisions: list[Unschedulable], now: datetime) -> None:
    reason_of = {d.run_id: d.reason[:MESSAGE_MAX] for d in decisions}
    reason = _by_id(RUNS.c.id, reason_of)
    changed = await session.execute(
        update(RUNS)
        .where(
            RUNS.c.id.in_(list(reason_of)), RUNS.c.status == "queued", RUNS.c.message.is_distinct_from(reason)
        )
        .values(message=reason, updated_at=now, last_event_seq=RUNS.c.last_event_seq + 1)
        .returning(RUNS.c.id, RUNS.c.last_event_seq)
    )
    await insert_event_rows(
        session,
        [
            event_row(rid, int(seq), "unschedulable", {"reason": reason_of[rid]}, now)
            for rid, seq in changed.all()
        ],
    )
