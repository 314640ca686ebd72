"""What nodes report about their runs: stored as run events, and moving the run's status.

A batch is applied in one transaction guarded by the run's `status` and `last_node_seq`:
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

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi import validation
from nodeapi.models import TERMINAL_RUN_STATUSES, RunReason
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, Unavailable
from server.repositories import nodes as node_repo
from server.repositories import runs as repo
from server.repositories.events import append_run_events
from server.scheduler.placement import avoid_time
from server.services.context import ServiceContext
from server.services.mappers import utc

log = logging.getLogger("server.node_events")

MAX_BATCH = validation.MAX_EVENT_BATCH
MAX_TYPE_LENGTH = 32
MAX_ATTEMPTS = 5
MAX_MESSAGE = 2000
LOG_TRUNCATED = "log_truncated"


@dataclass
class _RunState:
    """The run's status as the batch's events move it, and the columns that changed."""

    status: str
    claimed: bool
    may_retry: bool  # a start failure that was the node's fault queues it again
    deadline_seconds: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    requeued: str | None = None  # why it was queued again

    def apply(self, kind: str, data: dict[str, Any], at: datetime) -> str | None:
        """Apply one event; the reason it was ignored, if it was."""
        if kind == "log":
            return None
        if self.status in TERMINAL_RUN_STATUSES:
            return f"run already {self.status}"
        if self.requeued is not None:
            return "run was queued again"
        if kind == "claimed":
            self._claim(at)
        elif kind == "started":
            self._claim(at)
            container_id = data.get("container_id")
            if isinstance(container_id, str) and container_id:
                self.values["container_id"] = container_id[:128]
            if self.status == "scheduled":
                self.status = "running"
                self.values.update(status="running", started_at=at)
                if self.deadline_seconds is not None:
                    self.values["deadline_at"] = at + timedelta(seconds=self.deadline_seconds)
        elif kind == "exited":
            self._exited(data, at)
        elif kind == "failed":
            reason = str(data.get("reason") or data.get("message") or "failed on the node")[:MAX_MESSAGE]
            if data.get("cause") == "node" and self.status == "scheduled" and self.may_retry:
                self._requeue(reason)
            elif self.status == "running":  # it had started: the node lost it
                self._finish("failed", at, _exit_code(data), reason, "node_lost")
            else:
                why: RunReason = "image_missing" if data.get("cause") == "image" else "start_failed"
                self._finish("failed", at, _exit_code(data), reason, why)
        elif kind == "cancelled":
            self._finish("cancelled", at, _exit_code(data), "cancelled", "cancelled")
        return None

    def _exited(self, data: dict[str, Any], at: datetime) -> None:
        """The run's reason from what the node read of the exit: the engine's or the cgroup's
        OOM record and the node's own deadline kill are flags, never guessed from the code."""
        code = _exit_code(data)
        if data.get("deadline_exceeded") is True:
            message = f"stopped at its deadline of {self.deadline_seconds}s"
            self._finish("failed", at, code, message, "deadline_exceeded")
        elif data.get("oom_killed") is True:
            message = f"killed for using more memory than its limit (exit code {code})"
            self._finish("failed", at, code, message, "oom_killed")
        elif code == 0:
            self._finish("succeeded", at, code, None, "succeeded")
        elif code is None:
            self._finish("failed", at, None, "the node reported an exit without an exit code", "node_lost")
        else:
            self._finish("failed", at, code, f"exited with code {code}", "exit_nonzero")

    def _claim(self, at: datetime) -> None:
        if not self.claimed:
            self.claimed = True
            self.values["claimed_at"] = at

    def _requeue(self, reason: str) -> None:
        self.requeued = reason
        self.status = "queued"
        self.values.update(
            status="queued",
            node_id=None,
            scheduled_at=None,
            claimed_at=None,
            container_id=None,
            unreported_since=None,
            enqueued=False,
            message=f"could not start on its node, queued again: {reason}"[:MAX_MESSAGE],
        )

    def _finish(
        self, status: str, at: datetime, exit_code: int | None, message: str | None, reason: RunReason
    ) -> None:
        self.status = status
        self.values.update(status=status, finished_at=at, exit_code=exit_code, reason=reason)
        if message is not None:
            self.values["message"] = message


def _exit_code(data: dict[str, Any]) -> int | None:
    code = data.get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _check_batch(batch: m.NodeEventBatch) -> None:
    if len(batch.events) > MAX_BATCH:
        raise InvalidInput(f"events: at most {MAX_BATCH} per batch, got {len(batch.events)}")
    for event in batch.events:
        if not 1 <= event.node_seq <= validation.MAX_SAFE_INT:
            raise InvalidInput(f"events: node_seq must be between 1 and 2^53, got {event.node_seq}")
        if not event.type or len(event.type) > MAX_TYPE_LENGTH:
            raise InvalidInput(
                f"events: type must be 1-{MAX_TYPE_LENGTH} characters, got {event.type[:40]!r}"
            )
        size = len(msgspec.json.encode(event.data))
        if size > validation.MAX_EVENT_DATA_BYTES:
            raise PayloadTooLarge(
                f"events: the data of the {event.type!r} event with node_seq {event.node_seq} is "
                f"{size} bytes encoded; at most {validation.MAX_EVENT_DATA_BYTES} are allowed"
            )
        code = event.data.get("exit_code")
        if isinstance(code, int) and not validation.MIN_EXIT_CODE <= code <= validation.MAX_EXIT_CODE:
            raise InvalidInput(
                f"events: exit_code {code} of node_seq {event.node_seq} is outside a 32-bit integer"
            )


def _check_seq_jump(fresh: list[m.NodeEventIn], last_node_seq: int) -> None:
    highest = fresh[-1].node_seq
    if highest > last_node_seq + validation.MAX_NODE_SEQ_JUMP:
        raise InvalidInput(
            f"events: node_seq {highest} is more than {validation.MAX_NODE_SEQ_JUMP} past the run's "
            f"last stored node_seq {last_node_seq}; node_seq counts up one event at a time",
            extra={"last_node_seq": last_node_seq},
        )


def log_text_bytes(data: dict[str, Any]) -> int:
    """What a log event counts against RUN_MAX_LOG_BYTES: the UTF-8 bytes of its `text`."""
    text = data.get("text")
    if isinstance(text, str):
        return len(text.encode("utf-8", "replace"))
    return len(msgspec.json.encode(data))


@dataclass
class _LogBudget:
    """A run's stored log bytes against the limit, as the batch's log events use it up."""

    used: int
    truncated: bool
    limit: int
    changed: bool = False

    def admit(
        self, data: dict[str, Any], node_seq: int, at: datetime
    ) -> tuple[bool, list[tuple[str, dict[str, Any], datetime]]]:
        """Whether to store this log event, and the `log_truncated` event to store instead, once."""
        if self.truncated:
            return False, []
        size = log_text_bytes(data)
        if self.used + size <= self.limit:
            self.used += size
            self.changed = True
            return True, []
        self.truncated = self.changed = True
        note = {
            "limit_bytes": self.limit,
            "stored_bytes": self.used,
            "first_dropped_node_seq": node_seq,
            "message": f"log output passed RUN_MAX_LOG_BYTES ({self.limit} bytes); later output is dropped",
        }
        return False, [(LOG_TRUNCATED, note, at)]


class NodeEventService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def ingest(self, run_id: str, batch: m.NodeEventBatch, caller_node: str | None) -> m.NodeEventAck:
        """`caller_node`: the node whose credential posted the batch (None in protected mode,
        where the batch's `node_id` is taken at its word)."""
        _check_batch(batch)
        node_id = caller_node if caller_node is not None else batch.node_id
        for _ in range(MAX_ATTEMPTS):
            outcome = await self._try_ingest(run_id, batch, node_id)
            if outcome is not None:
                ack, freed = outcome
                if ack.accepted:
                    self._ctx.run_updates.notify(run_id)
                if ack.status == "queued":
                    await self._ctx.publish([run_id])
                if freed:
                    self._ctx.wake_scheduler()
                    self._ctx.node_feed.changed(node_id)  # its load
                return ack
        raise Unavailable(f"run {run_id!r} is changing state concurrently; retry")

    async def _try_ingest(
        self, run_id: str, batch: m.NodeEventBatch, node_id: str
    ) -> tuple[m.NodeEventAck, bool] | None:
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker.begin() as session:
            row = await repo.get_run(session, run_id, for_update=True)
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            if row.node_id != node_id:
                # another node's run, or one taken away from this node: its events change nothing
                raise Forbidden(f"run {run_id} is not placed on node {node_id!r}")
            if batch.attempt is not None and batch.attempt != row.attempts:
                # fencing: an older placement of this run must not move the current one
                raise Conflict(
                    f"run {run_id} was placed again (attempt {row.attempts}); events of attempt "
                    f"{batch.attempt} are refused: stop that execution",
                    extra={"attempt": row.attempts},
                )
            by_seq = {e.node_seq: e for e in batch.events if e.node_seq > row.last_node_seq}
            fresh = [by_seq[seq] for seq in sorted(by_seq)]
            if fresh:
                _check_seq_jump(fresh, row.last_node_seq)
            ack = m.NodeEventAck(
                run_id=run_id,
                status=row.status,  # type: ignore[arg-type]
                last_node_seq=row.last_node_seq,
                accepted=0,
                cancel_requested=row.cancel_requested,
            )
            if not fresh:
                if not batch.events:  # a probe (node start-up): where its output resumes
                    ack.last_log_ts = await repo.last_log_ts(session, run_id)
                    ack.started_at = utc(row.started_at)
                    ack.deadline_seconds = row.deadline_seconds
                return ack, False
            settings = self._ctx.settings
            state = _RunState(
                status=row.status,
                claimed=row.claimed_at is not None,
                may_retry=row.attempts < settings.run_max_attempts and not row.cancel_requested,
                deadline_seconds=row.deadline_seconds,
            )
            logs = _LogBudget(row.log_bytes, row.log_truncated, self._ctx.settings.run_max_log_bytes)
            stored: list[tuple[str, dict[str, Any], datetime]] = []
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
            last_seq = fresh[-1].node_seq
            values = {**state.values, "last_node_seq": last_seq, "updated_at": now}
            if state.requeued is not None:
                values["avoid_nodes"] = self._avoid(row.avoid_nodes, node_id, now)
            if logs.changed:
                values.update(log_bytes=logs.used, log_truncated=logs.truncated)
            expect = {"status": row.status, "last_node_seq": row.last_node_seq}
            if not await repo.update_run(session, run_id, expect, values):
                return None
            await append_run_events(session, run_id, stored)
            freed = state.requeued is not None or (
                row.status not in TERMINAL_RUN_STATUSES and state.status in TERMINAL_RUN_STATUSES
            )
            if freed:
                await repo.recount_running(session, row.node_id)
            if state.requeued is not None:
                await self._count_start_failure(session, node_id, now)
            elif "started_at" in state.values:
                await node_repo.record_start(session, node_id)
        ack.status = state.status  # type: ignore[assignment]
        ack.last_node_seq = last_seq
        ack.accepted = len(stored)
        return ack, freed

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
