"""Liveness store backends; `make_liveness_store` picks one from the configuration."""

from __future__ import annotations

from server.liveness.base import Known, LivenessStore, LivenessUnavailable, Primed, Report
from server.liveness.memory import MemoryLivenessStore

__all__ = [
    "Known",
    "LivenessStore",
    "LivenessUnavailable",
    "MemoryLivenessStore",
    "Primed",
    "Report",
    "make_liveness_store",
]


def make_liveness_store(redis_url: str | None, prefix: str | None = None) -> LivenessStore:
    """Redis when `redis_url` is set (REDIS_URL; replicas share it), else in this process."""
    if not redis_url:
        return MemoryLivenessStore()
    from server.liveness.redis import DEFAULT_PREFIX, RedisLivenessStore

    return RedisLivenessStore(redis_url, prefix or DEFAULT_PREFIX)
