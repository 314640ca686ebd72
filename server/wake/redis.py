"""Wake-ups between replicas over one Redis pub/sub channel.

`publish` only queues: a sender task gathers what was queued since it last ran into one message
(`origin` then one `topic<TAB>key` a line), so a burst of a thousand wake-ups costs one PUBLISH,
and a wake-up leaves within a loop iteration. A listener task delivers what other replicas sent
(its own messages come back too and are skipped). Pub/sub keeps nothing for a replica that is
not listening: after a reconnect every local waiter is woken once, to re-read the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.background import run_forever
from server.queue.redis import unique_consumer_name
from server.wake.base import WakeBus

log = logging.getLogger("server.wake")

DEFAULT_CHANNEL = "agentnodes:wake"
MAX_ITEMS_PER_MESSAGE = 1000


class RedisWakeBus(WakeBus):
    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, origin: str | None = None) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self.origin = origin or unique_consumer_name()
        self._pending: dict[tuple[str, str], None] = {}  # insertion-ordered set
        self._queued: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Redis | None = None
        self._listened_before = False
        self.subscribed = asyncio.Event()  # set while the listener is subscribed

    @property
    def shared(self) -> bool:
        return True

    def publish(self, topic: str, key: str) -> None:
        if self._queued is None:
            return  # not started (or closed): nobody else to tell
        self._pending[(topic, key)] = None
        self._queued.set()

    async def start(self) -> None:
        if self._tasks:
            return
        self._queued = asyncio.Event()
        self._redis = Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=None,  # see server.queue.redis: a read timeout would swallow cancellation
            socket_keepalive=True,
        )
        self._tasks = [
            asyncio.create_task(run_forever("wake bus sender", self._send_once, 0.0), name="wake-send"),
            asyncio.create_task(run_forever("wake bus listener", self._listen, 0.0), name="wake-listen"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        self._queued = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            redis, self._redis = self._redis, None
            with contextlib.suppress(RedisError, OSError):
                await redis.aclose()

    async def _send_once(self) -> None:
        queued = self._queued
        assert queued is not None
        assert self._redis is not None
        await queued.wait()
        queued.clear()
        items, self._pending = list(self._pending), {}
        for start in range(0, len(items), MAX_ITEMS_PER_MESSAGE):
            chunk = items[start : start + MAX_ITEMS_PER_MESSAGE]
            payload = "\n".join([self.origin, *(f"{topic}\t{key}" for topic, key in chunk)])
            try:
                await self._redis.publish(self.channel, payload)
            except (RedisError, OSError) as exc:
                # best effort: the other replicas' waiters fall back to re-reading the database
                log.warning("wake bus: %d wake-up(s) not sent: %s", len(items) - start, exc)
                return

    async def _listen(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self.subscribed.set()
            if self._listened_before:
                log.info("wake bus: listening again; waking every local waiter to re-read")
                for callback in self._on_reconnect:
                    callback()
            self._listened_before = True
            async for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, str):
                    self._receive(data)
        finally:
            self.subscribed.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, data: str) -> None:
        origin, _, body = data.partition("\n")
        if origin == self.origin or not body:
            return
        for line in body.split("\n"):
            topic, _, key = line.partition("\t")
            self.deliver(topic, key)
