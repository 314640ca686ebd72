"""In-process run queue with the same semantics as the Redis Streams backend.

Used when REDIS_URL is unset (a single apiserver process). Several `MemoryQueue`
handles can share one `MemoryStream` (see `sibling()`): each handle is a consumer of
the stream's single consumer group, so tests can exercise work sharing and redelivery
exactly as with Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from server.queue.base import Message, QueueUnavailable, RunQueue


@dataclass
class _Pending:
    consumer: str
    delivered_at: float


class MemoryStream:
    """Entries, the not-yet-delivered backlog and the pending entries list of one group."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}  # message id -> run id
        self.backlog: OrderedDict[str, None] = OrderedDict()  # ids never delivered, in order
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self._ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None

    def next_id(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._ids)}"

    @property
    def changed(self) -> asyncio.Condition:
        # created lazily so the stream binds to the loop that first uses it
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed


class MemoryQueue(RunQueue):
    def __init__(self, stream: MemoryStream | None = None, consumer: str | None = None) -> None:
        self.stream = stream if stream is not None else MemoryStream()
        self.consumer = consumer or f"memory-{uuid.uuid4().hex[:8]}"
        self._closed = False

    def sibling(self) -> MemoryQueue:
        """Another consumer of the same stream (as a second scheduler replica would be)."""
        return MemoryQueue(self.stream)

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise QueueUnavailable("the in-process queue is closed")

    async def publish(self, run_ids: list[str]) -> None:
        self._check_open()
        if not run_ids:
            return
        stream = self.stream
        for run_id in run_ids:
            message_id = stream.next_id()
            stream.entries[message_id] = run_id
            stream.backlog[message_id] = None
        async with stream.changed:
            stream.changed.notify_all()

    async def consume(self, count: int, block: float) -> list[Message]:
        self._check_open()
        stream = self.stream
        if not stream.backlog and block > 0:
            async with stream.changed:
                try:
                    await asyncio.wait_for(stream.changed.wait_for(lambda: bool(stream.backlog)), block)
                except TimeoutError:
                    return []
        now = time.monotonic()
        taken: list[Message] = []
        while stream.backlog and len(taken) < count:
            message_id, _ = stream.backlog.popitem(last=False)
            stream.pending[message_id] = _Pending(self.consumer, now)
            taken.append(Message(id=message_id, run_id=stream.entries[message_id]))
        return taken

    async def ack(self, message_ids: list[str]) -> None:
        self._check_open()
        for message_id in message_ids:
            if self.stream.pending.pop(message_id, None) is not None:
                self.stream.entries.pop(message_id, None)

    async def reclaim(self, min_idle: float, count: int) -> list[Message]:
        self._check_open()
        now = time.monotonic()
        claimed: list[Message] = []
        for message_id, entry in self.stream.pending.items():
            if len(claimed) >= count:
                break
            if now - entry.delivered_at >= min_idle:
                entry.consumer = self.consumer
                entry.delivered_at = now
                claimed.append(Message(message_id, self.stream.entries[message_id]))
        return claimed

    async def ping(self) -> bool:
        return not self._closed

    async def pending_count(self) -> int:
        self._check_open()
        return len(self.stream.pending)
