"""SQL of the scheduler: what it reads (queued runs, the node snapshot, the outbox) and how it
applies placement decisions with conditional updates (the caller commits).

A decision made on a snapshot may be stale by the time it is written: another replica
may have filled the node, a run may have been cancelled or assigned already. So every
write re-checks its precondition in SQL and the batch is settled from what the
statements report back:

- nodes: `running = running + k WHERE running + k <= max_concurrent AND schedulable`, and the
  same for the summed CPU and memory requests against the allocatable ones (k = runs given to
  that node in this batch) reserves the slots, one statement per distinct (k, cpus, memory)
  (nearly always a few); a node that no longer fits sends its runs back for the next pass;
- runs: `status = 'scheduled' ... WHERE status = 'queued'`, one statement, then each moved
  run's `node_id` in one executemany; then the granted nodes' `running` is set from their run
  rows (a run that moved meanwhile gives its reserved slot back that way);
- unschedulable runs get `message = reason` and an `unschedulable` event only when the
  reason differs from the stored one, so a parked run does not collect identical events;
  one statement per distinct reason. A run that merely waits for a slot (every node it could
  use is at capacity) gets the message but no event: under load most runs wait, and an event
  each would be most of the writes.

Statements take plain IN lists and bound values, never a per-row CASE: their compiled form
is cached, and building a CASE of a few hundred branches cost more than running it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, cast, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import NODES, RUNS
from server.node_status import StatusRule
from server.repositories.events import event_row, insert_event_rows
from server.repositories.runs import node_load
from server.scheduler.placement import Assign, Decision, Unschedulable

MESSAGE_MAX = 2000


@dataclass
class ApplyResult:
    assigned: list[tuple[str, str]] = field(default_factory=list)  # (run id, node id), in decision order
    retry: list[str] = field(default_factory=list)  # node no longer fits: place again soon
    unschedulable: list[str] = field(default_factory=list)  # still queued, fits nowhere
    gone: list[str] = field(default_factory=list)  # no longer queued (cancelled, assigned elsewhere)
    reasons_recorded: list[str] = field(default_factory=list)  # got an `unschedulable` event


async def apply_decisions(
    session: AsyncSession, decisions: Sequence[Decision], *, now: datetime, rule: StatusRule
) -> ApplyResult:
    result = ApplyResult()
    assigns = [d for d in decisions if isinstance(d, Assign)]
    unschedulable = [d for d in decisions if isinstance(d, Unschedulable)]
    if assigns:
        await _apply_assignments(session, assigns, now, rule, result)
    if unschedulable:
        result.reasons_recorded = await _record_unschedulable(session, unschedulable, now)
        result.unschedulable.extend(d.run_id for d in unschedulable)
    return result


def _grouped(pairs: Iterable[tuple[str, Any]]) -> dict[Any, list[str]]:
    """(key, value) pairs -> {value: [keys]}: one statement per distinct value instead of a CASE."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for key, value in pairs:
        groups[value].append(key)
    return groups


async def _apply_assignments(
    session: AsyncSession, assigns: list[Assign], now: datetime, rule: StatusRule, result: ApplyResult
) -> None:
    granted: set[str] = set()
    load: dict[str, tuple[int, int, int]] = {}
    for a in assigns:
        count, cpu, memory = load.get(a.node_id, (0, 0, 0))
        load[a.node_id] = (count + 1, cpu + a.cpu_millis, memory + a.memory_mb)
    nodes = NODES.c
    for (count, cpu, memory), node_ids in _grouped(load.items()).items():
        taken = await session.execute(
            update(NODES)
            .where(
                nodes.id.in_(node_ids),
                nodes.running + count <= nodes.max_concurrent,
                or_(nodes.cpu_millis.is_(None), nodes.requested_cpu_millis + cpu <= nodes.cpu_millis),
                or_(nodes.memory_mb.is_(None), nodes.requested_memory_mb + memory <= nodes.memory_mb),
                rule.sql_schedulable(nodes, now),
            )
            .values(
                running=nodes.running + count,
                requested_cpu_millis=nodes.requested_cpu_millis + cpu,
                requested_memory_mb=nodes.requested_memory_mb + memory,
            )
            .returning(nodes.id)
        )
        granted.update(taken.scalars())
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
            scheduled_at=now,
            updated_at=now,
            message=None,
            attempts=RUNS.c.attempts + 1,
            last_event_seq=RUNS.c.last_event_seq + 1,
        )
        .returning(RUNS.c.id, RUNS.c.last_event_seq)
    )
    seq_of = {run_id: int(seq) for run_id, seq in moved.all()}
    if seq_of:
        # same transaction: nobody sees a scheduled run without its node
        await session.execute(
            update(RUNS).where(RUNS.c.id == bindparam("b_run")).values(node_id=bindparam("b_node")),
            [{"b_run": run_id, "b_node": node_of[run_id]} for run_id in seq_of],
        )
    await insert_event_rows(
        session,
        [event_row(rid, seq, "scheduled", {"node_id": node_of[rid]}, now) for rid, seq in seq_of.items()],
    )
    for assign in placing:
        if assign.run_id in seq_of:
            result.assigned.append((assign.run_id, assign.node_id))
        else:
            result.gone.append(assign.run_id)
    # the guard above reserved the slots; now that the runs moved, each node's count is set from
    # its run rows, which also gives back the slots of runs that moved meanwhile
    await session.execute(update(NODES).where(NODES.c.id.in_(list(granted))).values(**node_load(NODES.c.id)))


async def _record_unschedulable(
    session: AsyncSession, decisions: list[Unschedulable], now: datetime
) -> list[str]:
    """Store each reason that changed, with an `unschedulable` event; the runs that got one."""
    reason_of = {d.run_id: d.reason[:MESSAGE_MAX] for d in decisions}
    waiting = {d.run_id for d in decisions if d.waiting}
    changed: list[tuple[str, int]] = []
    for (reason, waits), run_ids in _grouped((r, (reason_of[r], r in waiting)) for r in reason_of).items():
        statement = update(RUNS).where(
            RUNS.c.id.in_(run_ids), RUNS.c.status == "queued", RUNS.c.message.is_distinct_from(reason)
        )
        if waits:
            await session.execute(statement.values(message=reason, updated_at=now))
            continue
        rows = await session.execute(
            statement.values(
                message=reason, updated_at=now, last_event_seq=RUNS.c.last_event_seq + 1
            ).returning(RUNS.c.id, RUNS.c.last_event_seq)
        )
        changed.extend((run_id, int(seq)) for run_id, seq in rows.all())
    await insert_event_rows(
        session,
        [event_row(rid, seq, "unschedulable", {"reason": reason_of[rid]}, now) for rid, seq in changed],
    )
    return [run_id for run_id, _ in changed]


# ---------------------------------------------------------------------------- reads


async def pending_runs(session: AsyncSession, run_ids: Sequence[str]) -> list[Any]:
    """Of those runs still queued, oldest first: id, node_selector, selector_expressions,
    avoid_nodes, cpu_millis, memory_mb, message."""
    rows = await session.execute(
        select(
            RUNS.c.id,
            RUNS.c.node_selector,
            RUNS.c.selector_expressions,
            RUNS.c.avoid_nodes,
            RUNS.c.cpu_millis,
            RUNS.c.memory_mb,
            RUNS.c.message,
        )
        .where(RUNS.c.id.in_(list(run_ids)), RUNS.c.status == "queued")
        .order_by(RUNS.c.created_at, RUNS.c.id)
    )
    return list(rows.all())


async def node_snapshot(session: AsyncSession, rule: StatusRule, now: datetime) -> list[Any]:
    """(id, labels as JSON text, running, max_concurrent, status, cpu_millis, memory_mb,
    requested_cpu_millis, requested_memory_mb) of every node.

    Labels come as JSON text, so the caller decodes each distinct label set once (most nodes
    share theirs with others); the status is computed in SQL, so no timestamp is parsed per node.
    """
    rows = await session.execute(
        select(
            NODES.c.id,
            cast(NODES.c.labels, String),
            NODES.c.running,
            NODES.c.max_concurrent,
            rule.sql_state(NODES.c, now, placing=True),
            NODES.c.cpu_millis,
            NODES.c.memory_mb,
            NODES.c.requested_cpu_millis,
            NODES.c.requested_memory_mb,
        )
    )
    return list(rows.all())


async def queued_run_ids(session: AsyncSession, limit: int) -> list[str]:
    rows = await session.execute(
        select(RUNS.c.id).where(RUNS.c.status == "queued").order_by(RUNS.c.created_at, RUNS.c.id).limit(limit)
    )
    return list(rows.scalars())


async def unpublished_run_ids(session: AsyncSession, created_before: datetime, limit: int) -> list[str]:
    """Queued runs committed while the queue was unreachable (the outbox)."""
    rows = await session.execute(
        select(RUNS.c.id)
        .where(RUNS.c.enqueued.is_(False), RUNS.c.status == "queued", RUNS.c.created_at <= created_before)
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(limit)
    )
    return list(rows.scalars())
