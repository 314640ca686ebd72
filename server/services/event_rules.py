"""What a node's events do to its run, without I/O: the status machine, the log cap and the
checks a batch must pass (server.services.node_events applies them in a transaction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from nodeapi import models as m
from nodeapi import validation
from nodeapi.models import TERMINAL_RUN_STATUSES, RunReason
from server.errors import InvalidInput, PayloadTooLarge

MAX_BATCH = validation.MAX_EVENT_BATCH
MAX_TYPE_LENGTH = 32
MAX_MESSAGE = 2000
LOG_TRUNCATED = "log_truncated"


@dataclass
class RunState:
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


def check_batch(batch: m.NodeEventBatch) -> None:
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


def check_seq_jump(fresh: list[m.NodeEventIn], last_node_seq: int) -> None:
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
class LogBudget:
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
