"""Which nodes changed, in order: what the console's live node view is fed from.

Code that changes a node's status, load, schedulability, labels or capacity calls
`NodeFeed.changed(node_id)`. The feed numbers each change (`seq`) and keeps the last
`capacity` of them in one ring shared by every stream, and carries the id over the wake bus
(topic `node_changes`) so that every replica's streams hear of changes made on any replica.

A stream (`NodeFeed.follow`) holds only a cursor into the ring, never a queue of its own: a
stream that falls more than `capacity` changes behind (a slow client) is told to resync and is
ended, and memory stays bounded however slow its client reads. A stream id is
`<epoch>:<seq>`; a client that reconnects with `Last-Event-ID` picks up where it left off when
that is still in the ring of the same process epoch, and is told to resync otherwise (another
replica, a restart, or too long away).

A node turning offline changes nothing in the database (status is derived from the last
heartbeat), nor does a quarantine ending, so `TimeSweep` finds the nodes whose last heartbeat
just passed NODE_OFFLINE_AFTER or whose quarantine just ended, once a second on each replica
while a stream is open there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from server.background import Periodic

if TYPE_CHECKING:
    from server.wake.base import WakeBus

log = logging.getLogger("server.node_feed")

TOPIC = "node_changes"
DEFAULT_CAPACITY = 4096
KEEPALIVE_SECONDS = 15.0
MAX_BATCH = 500  # node ids read per database round trip of a stream

FeedKind = Literal["hello", "node", "deleted", "resync", "ping"]


@dataclass(frozen=True)
class FeedEvent:
    """One message of a stream: `node_id` for node and deleted, `event_id` resumes after it."""

    kind: FeedKind
    node_id: str | None = None
    event_id: str | None = None
    data: object = None  # for `node`: what `read` answered for it


class NodeFeed:
    def __init__(self, bus: WakeBus | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.epoch = uuid.uuid4().hex[:12]
        self._seq = 0
        self._ring: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.streams = 0  # open streams in this process
        self._bus = bus
        if bus is not None:
            bus.attach(TOPIC, self.changed_here)

    @property
    def cursor(self) -> int:
        return self._seq

    @property
    def position(self) -> str:
        """Where the feed is now, as a stream event id: a stream resumed from it gets every later change."""
        return f"{self.epoch}:{self._seq}"

    @property
    def closed(self) -> bool:
        return self._closed

    def changed(self, node_id: str | None) -> None:
        """The node changed: tell this process's streams and the other replicas'."""
        if not node_id:
            return
        self.changed_here(node_id)
        if self._bus is not None:
            self._bus.publish(TOPIC, node_id)

    def changed_each(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            self.changed(node_id)

    def changed_here(self, node_id: str) -> None:
        self._seq += 1
        self._ring.append((self._seq, node_id))
        self._wake()

    def reset(self) -> None:
        """Changes may have been missed (the wake bus reconnected): every stream resyncs."""
        self.epoch = uuid.uuid4().hex[:12]
        self._ring.clear()
        self._wake()

    def close(self) -> None:
        """The server is stopping: every stream ends now."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def since(self, cursor: int) -> list[tuple[int, str]] | None:
        """(seq, node id) of each node changed after `cursor`, once per node at its last change,
        in seq order; None when the ring no longer reaches back to `cursor`."""
        if cursor >= self._seq:
            return []
        if not self._ring or self._ring[0][0] > cursor + 1:
            return None
        last: dict[str, int] = {}
        for seq, node_id in reversed(self._ring):
            if seq <= cursor:
                break
            last.setdefault(node_id, seq)
        return sorted(((seq, node_id) for node_id, seq in last.items()))

    async def _wait(self, cursor: int, seconds: float) -> None:
        wakeup = self._wakeup
        if self._seq != cursor or self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wakeup.wait()

    def _resume_point(self, last_event_id: str | None) -> int | None:
        if not last_event_id:
            return None
        epoch, _, seq = last_event_id.partition(":")
        if epoch != self.epoch or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
            return None
        cursor = int(seq)
        if cursor > self._seq or self.since(cursor) is None:
            return None
        return cursor

    async def follow(
        self,
        read: Callable[[list[str]], Awaitable[dict[str, object]]],
        last_event_id: str | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> AsyncIterator[FeedEvent]:
        """The events of one stream. `read(ids)` answers what to send of each of `ids` that still
        exists; the others are `deleted`."""
        self.streams += 1
        try:
            resumed = self._resume_point(last_event_id)
            cursor = self._seq if resumed is None else resumed
            epoch = self.epoch
            yield FeedEvent("hello", event_id=f"{epoch}:{cursor}")
            if last_event_id and resumed is None:
                yield FeedEvent("resync", event_id=f"{epoch}:{cursor}")
            while not self._closed:
                changes = self.since(cursor) if epoch == self.epoch else None
                if changes is None:
                    # too far behind, or the feed was reset: the client reloads what it shows,
                    # and reconnects (EventSource does by itself) with nothing queued here
                    yield FeedEvent("resync", event_id=f"{self.epoch}:{self._seq}")
                    return
                if not changes:
                    before = self._seq
                    await self._wait(cursor, keepalive)
                    if self._seq == before and not self._closed and epoch == self.epoch:
                        yield FeedEvent("ping")
                    continue
                batch = changes[:MAX_BATCH]
                found = await read([node_id for _, node_id in batch])
                for seq, node_id in batch:
                    event_id = f"{epoch}:{seq}"
                    if node_id in found:
                        yield FeedEvent("node", node_id, event_id, found[node_id])
                    else:
                        yield FeedEvent("deleted", node_id, event_id)
                cursor = batch[-1][0]
        finally:
            self.streams -= 1


class TimeSweep:
    """Tells the feed of nodes that time changed since the last sweep: nothing in the database
    changes when a node's last heartbeat passes NODE_OFFLINE_AFTER (it turns offline) or its
    quarantine ends (it may take runs again), so `turned_between(start, end)` reads those whose
    moment fell in [start, end)."""

    def __init__(
        self,
        feed: NodeFeed,
        turned_between: Callable[[datetime, datetime], Awaitable[Sequence[str]]],
        now: Callable[[], datetime],
        interval: float = 1.0,
    ) -> None:
        self._feed = feed
        self._turned_between = turned_between
        self._now = now
        self._swept_to: datetime | None = None
        self._loop = Periodic("time sweep", self._run, interval)

    async def sweep_once(self) -> Sequence[str]:
        now = self._now()
        start, self._swept_to = self._swept_to, now
        if start is None or self._feed.streams == 0 or now <= start:
            return []
        node_ids = await self._turned_between(start, now)
        for node_id in node_ids:
            self._feed.changed_here(node_id)  # every replica sweeps for its own streams
        return node_ids

    async def _run(self) -> None:
        await self.sweep_once()

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
