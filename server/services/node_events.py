"""What nodes report about their runs: stored as run events, and moving the run's status.

Nodes post the events of many runs in one request (POST /nodes/{id}/events), applied in one
transaction: the runs are read (locked) in one statement, their changes written with one
executemany per kind of change and their events inserted in one. Each run's part is judged as
a batch of its own would be, and answered on its own (one run's refusal does not refuse the
others). POST /runs/{id}/node-events, one run's batch, goes the same way.

A run's batch is applied guarded by the run's `status`, `last_node_seq` and `last_event_seq`:
events at or below `last_node_seq` were stored before (a retried batch) and are skipped,
and a terminal transition frees the node's slot exactly once, because only the request
whose conditional UPDATE moved the run out of its active status does it.

Events that arrive after the run already finished (a late report after it was cancelled
or declared lost) are still stored, so the record shows what the node did, but they never
change the status again: `log` lines as they are, other types with `data.ignored` saying why.

An empty batch stores nothing: a restarted node probes its runs with it, and the ack then
carries `last_log_ts`, the runtime timestamp of the last stored output line, so the node
resumes the output right after it.

Limits (each refuses the whole batch, which stores nothing):
- one event's `data`, JSON-encoded, above MAX_EVENT_DATA_BYTES: 413 (nodes cut long log lines
  into events below it);
- a node_seq more than MAX_NODE_SEQ_JUMP past the run's last stored one, or an exit code outside
  a 32-bit integer: 400.

A run that failed before it started through its node's fault (`failed` with `data.cause` "node":
the workspace could not be made, the engine refused, a network is missing) is queued again, unless
it was placed RUN_MAX_ATTEMPTS times: it then avoids that node for START_FAILURE_COOLDOWN, and the
node counts the failure; QUARANTINE_AFTER of them in a row quarantine it (no new runs) for
QUARANTINE_BACKOFF, doubling each time up to QUARANTINE_MAX. A run that starts clears the count.
So a broken node, which fails every run fast and so looks the least loaded, does not eat the queue.

A run's log output is capped at RUN_MAX_LOG_BYTES bytes of `text`: once a log event would pass
it, that and every later log event of the run are acknowledged (last_node_seq moves past them,
so the node never resends them) but not stored, and one `log_truncated` event records where
the cut fell. Every other event (started, exited, failed, cancelled) is always stored: the
node is never told to drop its final event, and the run still ends as it did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi.models import TERMINAL_RUN_STATUSES
from server.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unavailable
from server.repositories import nodes as node_repo
from server.repositories import runs as repo
from server.repositories.events import EventSpec, event_row, insert_event_rows
from server.scheduler.placement import avoid_time
from server.services.context import ServiceContext
from server.services.event_rules import LogBudget, RunState, check_batch, check_seq_jump
from server.services.mappers import utc

log = logging.getLogger("server.node_events")

MAX_ATTEMPTS = 5


class _Changed(Exception):
    """A run changed between the read and the write: roll the batch back and read again."""


@dataclass
class _Plan:
    """What one run's events do: the ack, and the row's change (None: nothing to write)."""

    run_id: str
    ack: m.NodeEventAck
    expect: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] | None = None
    stored: list[EventSpec] = field(default_factory=list)
    first_seq: int = 0
    freed: bool = False
    requeued: bool = False
    started: bool = False
    probe: bool = False


Outcome = m.NodeEventAck | DomainError


class NodeEventService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def ingest(self, run_id: str, batch: m.NodeEventBatch, caller_node: str | None) -> m.NodeEventAck:
        """`caller_node`: the node whose credential posted the batch (None in protected mode,
        where the batch's `node_id` is taken at its word)."""
        node_id = caller_node if caller_node is not None else batch.node_id
        [outcome] = await self.ingest_many(node_id, [m.RunEvents(run_id, batch.events, batch.attempt)])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    async def ingest_results(self, node_id: str, batch: m.NodeEventsBatch) -> m.NodeEventsResults:
        """POST /nodes/{id}/events: every run's outcome as the wire has it."""
        outcomes = await self.ingest_many(node_id, batch.runs)
        return m.NodeEventsResults(
            results=[
                _result(item.run_id, outcome) for item, outcome in zip(batch.runs, outcomes, strict=True)
            ]
        )

    async def ingest_many(self, node_id: str, items: list[m.RunEvents]) -> list[Outcome]:
        """Each run's ack, or the domain error that refused its events, in the order given."""
        outcomes: list[Outcome | None] = [None] * len(items)
        seen: set[str] = set()
        todo: list[tuple[int, m.RunEvents]] = []
        for index, item in enumerate(items):
            try:
                if item.run_id in seen:
                    raise InvalidInput(f"run {item.run_id} appears twice in one batch")
                seen.add(item.run_id)
                check_batch(m.NodeEventBatch(node_id=node_id, events=item.events, attempt=item.attempt))
            except DomainError as exc:
                outcomes[index] = exc
                continue
            todo.append((index, item))
        for _ in range(MAX_ATTEMPTS):
            try:
                plans = await self._apply(node_id, todo, outcomes)
            except _Changed:
                continue
            await self._after_commit(node_id, plans)
            return [outcome for outcome in outcomes if outcome is not None]
        raise Unavailable("runs of this batch are changing state concurrently; retry")

    async def _apply(
        self, node_id: str, todo: list[tuple[int, m.RunEvents]], outcomes: list[Outcome | None]
    ) -> list[_Plan]:
        now = self._ctx.clock.now()
        plans: list[_Plan] = []
        async with self._ctx.sessionmaker.begin() as session:
            rows = await repo.lock_for_events(session, [item.run_id for _, item in todo])
            for index, item in todo:
                try:
                    plan = self._plan(rows.get(item.run_id), item, node_id, now)
                except DomainError as exc:
                    outcomes[index] = exc
                    continue
                outcomes[index] = plan.ack
                plans.append(plan)
            writes = [p for p in plans if p.values is not None]
            if not await repo.update_runs_guarded(
                session, [(p.run_id, p.expect, p.values or {}) for p in writes]
            ):
                raise _Changed()
            await insert_event_rows(
                session,
                [
                    event_row(p.run_id, p.first_seq + offset, *event)
                    for p in writes
                    for offset, event in enumerate(p.stored)
                ],
            )
            await self._node_effects(session, node_id, plans, now)
            for plan in plans:
                if plan.probe:  # a restarted node's probe: where its output resumes
                    plan.ack.last_log_ts = await repo.last_log_ts(session, plan.run_id)
        return plans

    def _plan(self, row: Any, item: m.RunEvents, node_id: str, now: datetime) -> _Plan:
        run_id = item.run_id
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        if row.node_id != node_id:
            # another node's run, or one taken away from this node: its events change nothing
            raise Forbidden(f"run {run_id} is not placed on node {node_id!r}")
        if item.attempt is not None and item.attempt != row.attempts:
            # fencing: an older placement of this run must not move the current one
            raise Conflict(
                f"run {run_id} was placed again (attempt {row.attempts}); events of attempt "
                f"{item.attempt} are refused: stop that execution",
                extra={"attempt": row.attempts},
            )
        by_seq = {e.node_seq: e for e in item.events if e.node_seq > row.last_node_seq}
        fresh = [by_seq[seq] for seq in sorted(by_seq)]
        if fresh:
            check_seq_jump(fresh, row.last_node_seq)
        ack = m.NodeEventAck(
            run_id=run_id,
            status=row.status,
            last_node_seq=row.last_node_seq,
            accepted=0,
            cancel_requested=row.cancel_requested,
        )
        plan = _Plan(run_id, ack)
        if not fresh:
            if not item.events:
                plan.probe = True
                ack.started_at = utc(row.started_at)
                ack.deadline_seconds = row.deadline_seconds
            return plan
        settings = self._ctx.settings
        state = RunState(
            status=row.status,
            claimed=row.claimed_at is not None,
            may_retry=row.attempts < settings.run_max_attempts and not row.cancel_requested,
            deadline_seconds=row.deadline_seconds,
        )
        logs = LogBudget(row.log_bytes, row.log_truncated, settings.run_max_log_bytes)
        stored = plan.stored
        for event in fresh:
            at = now  # the server's clock orders and times everything; the node's is kept beside it
            data = dict(event.data)
            if event.type == "log":
                keep, instead = logs.admit(data, event.node_seq, at)
                stored.extend(instead)
                if not keep:
                    continue
            ignored = state.apply(event.type, data, at)
            if ignored:
                data["ignored"] = ignored
            node_at = utc(event.at)
            if node_at is not None and event.type != "log":  # a log line has its own `ts`
                data["node_at"] = node_at.isoformat()
            stored.append((event.type, data, at))
            if event.type == "failed" and state.requeued is not None and not ignored:
                stored.append(("requeued", {"reason": state.values["message"], "node_id": node_id}, at))
        values = {**state.values, "last_node_seq": fresh[-1].node_seq, "updated_at": now}
        values["last_event_seq"] = row.last_event_seq + len(stored)
        if state.requeued is not None:
            values["avoid_nodes"] = self._avoid(row.avoid_nodes, node_id, now)
        if logs.changed:
            values.update(log_bytes=logs.used, log_truncated=logs.truncated)
        plan.expect = {
            "status": row.status,
            "last_node_seq": row.last_node_seq,
            "last_event_seq": row.last_event_seq,
        }
        plan.values = values
        plan.first_seq = row.last_event_seq + 1
        plan.requeued = state.requeued is not None
        plan.freed = plan.requeued or (
            row.status not in TERMINAL_RUN_STATUSES and state.status in TERMINAL_RUN_STATUSES
        )
        plan.started = "started_at" in state.values
        ack.status = state.status  # type: ignore[assignment]
        ack.last_node_seq = fresh[-1].node_seq
        ack.accepted = len(stored)
        return plan

    async def _node_effects(
        self, session: AsyncSession, node_id: str, plans: list[_Plan], now: datetime
    ) -> None:
        """The node's load once for the whole batch, its start-failure count, its start record."""
        if any(plan.freed for plan in plans):
            await repo.recount_running(session, node_id)
        for plan in plans:
            if plan.requeued:
                await self._count_start_failure(session, node_id, now)
        if any(plan.started and not plan.requeued for plan in plans):
            await node_repo.record_start(session, node_id)

    async def _after_commit(self, node_id: str, plans: list[_Plan]) -> None:
        for plan in plans:
            if plan.ack.accepted:
                self._ctx.run_updates.notify(plan.run_id)
        requeued = [plan.run_id for plan in plans if plan.ack.status == "queued" and plan.values is not None]
        if requeued:
            await self._ctx.publish(requeued)
        if any(plan.freed for plan in plans):
            self._ctx.wake_scheduler()
            self._ctx.node_feed.changed(node_id)  # its load

    def _avoid(self, avoid_nodes: dict[str, str] | None, node_id: str, now: datetime) -> dict[str, str]:
        """The run's avoided nodes with this one added, those past the cooldown dropped."""
        since = avoid_time(now - timedelta(seconds=self._ctx.settings.start_failure_cooldown))
        kept = {node: at for node, at in (avoid_nodes or {}).items() if at > since}
        return {**kept, node_id: avoid_time(now)}

    async def _count_start_failure(self, session: AsyncSession, node_id: str, now: datetime) -> None:
        settings = self._ctx.settings
        until = await node_repo.record_start_failure(
            session,
            node_id,
            now,
            threshold=settings.quarantine_after,
            backoff=settings.quarantine_backoff,
            max_backoff=settings.quarantine_max,
        )
        if until is not None:
            log.warning(
                "node %s quarantined until %s: %d start(s) in a row failed through its fault",
                node_id,
                until.isoformat(),
                settings.quarantine_after,
            )


def _result(run_id: str, outcome: Outcome) -> m.RunEventsResult:
    if isinstance(outcome, DomainError):
        extra = outcome.extra if isinstance(outcome.extra, dict) else None
        return m.RunEventsResult(
            run_id=run_id, status_code=outcome.status_code, detail=outcome.detail, extra=extra
        )
    return m.RunEventsResult(run_id=run_id, ack=outcome)
