"""The run queue: one interface, an in-process and a Redis Streams implementation.

Semantics shared by every backend (and checked by one test suite against all):
- `publish(run_id)` appends a message; publishing the same run twice is allowed and
  must be harmless (the scheduler's conditional update ignores a run no longer queued).
- `consume(count, block)` hands out up to `count` messages not yet delivered to anyone
  in this consumer group; a message stays *pending* until `ack`ed.
- Messages of a consumer that died unacked are handed out again: `reclaim(min_idle)`
  returns pending messages idle longer than `min_idle` seconds (XAUTOCLAIM on Redis).
- Errors of the underlying store are raised as `QueueUnavailable`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


class QueueError(Exception):
    """Base of queue errors."""


class QueueUnavailable(QueueError):
    """The queue backend cannot be reached; callers retry later."""


@dataclass(frozen=True)
class Message:
    id: str  # backend message id (Redis stream entry id)
    run_id: str


class RunQueue(abc.ABC):
    """Abstract run queue shared by several scheduler replicas (one consumer group)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and create the stream / consumer group if needed."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, run_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def consume(self, count: int, block: float) -> list[Message]:
        """Up to `count` new messages, waiting at most `block` seconds for the first."""

    @abc.abstractmethod
    async def ack(self, message_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def reclaim(self, min_idle: float, count: int) -> list[Message]:
        """Pending messages idle for at least `min_idle` seconds, now owned by this consumer."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""

    @abc.abstractmethod
    async def pending_count(self) -> int: ...
