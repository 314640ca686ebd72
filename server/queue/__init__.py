"""Run queue backends; `make_queue` picks one from the configuration."""

from __future__ import annotations

from server.queue.base import Message, QueueError, QueueUnavailable, RunQueue
from server.queue.memory import MemoryQueue

__all__ = ["MemoryQueue", "Message", "QueueError", "QueueUnavailable", "RunQueue", "make_queue"]


def make_queue(redis_url: str | None, stream_key: str | None = None) -> RunQueue:
    """Redis Streams when `redis_url` is set (REDIS_URL), else the embedded in-process queue."""
    if not redis_url:
        return MemoryQueue()
    from server.queue.redis import DEFAULT_STREAM_KEY, RedisStreamsQueue

    return RedisStreamsQueue(redis_url, stream_key or DEFAULT_STREAM_KEY)
