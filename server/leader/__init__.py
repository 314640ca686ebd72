"""Which replica runs the fleet-wide checks (lost runs, deadlines, count repair): a lease."""

from __future__ import annotations

from server.leader.base import LeaderLease
from server.leader.memory import SoleLeader

__all__ = ["LeaderLease", "SoleLeader", "make_lease"]


def make_lease(redis_url: str | None, ttl: float, key: str | None = None) -> LeaderLease:
    """A Redis lease when `redis_url` is set (replicas share one Redis); else this process leads."""
    if not redis_url:
        return SoleLeader()
    from server.leader.redis import DEFAULT_KEY, RedisLease

    return RedisLease(redis_url, ttl=ttl, key=key or DEFAULT_KEY)
