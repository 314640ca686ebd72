"""Wake-ups between apiserver replicas; `make_wake_bus` picks a backend from the configuration."""

from __future__ import annotations

from server.wake.base import BusNotifier, WakeBus
from server.wake.memory import MemoryWakeBus

__all__ = ["BusNotifier", "MemoryWakeBus", "WakeBus", "make_wake_bus"]


def make_wake_bus(redis_url: str | None, channel: str | None = None) -> WakeBus:
    """Redis pub/sub when `redis_url` is set (REDIS_URL): replicas wake each other; else one process."""
    if not redis_url:
        return MemoryWakeBus()
    from server.wake.redis import DEFAULT_CHANNEL, RedisWakeBus

    return RedisWakeBus(redis_url, channel or DEFAULT_CHANNEL)
