"""Liveness store on Redis, shared by every apiserver replica (REDIS_URL set).

Two hashes keyed by node id: `<prefix>:seen` (epoch seconds, as text) and `<prefix>:report`
("state detail detail_at draining"). Every step that reads and then writes runs as one
server-side script, so concurrent replicas never move `seen` back or take a heartbeat against
a report that was just dropped: one round trip per heartbeat. Redis errors surface as
`LivenessUnavailable`; the client reconnects on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from nodeapi.masking import mask_url_password
from server.liveness.base import Known, LivenessStore, LivenessUnavailable, Primed, Report

DEFAULT_PREFIX = "agentnodes:liveness"
NO_DETAIL = "-"  # a primed report: its detail is not known, so any detail differs
PRIME_CHUNK = 1000  # entries per script call: bounds how long Redis is busy with one call

# KEYS seen, report; ARGV node id, state, detail, at, fresh_after, detail_after.
# 0: not taken; 1: taken, online; 2: taken, draining.
HEARD_SCRIPT = """
local report = redis.call('HGET', KEYS[2], ARGV[1])
if not report then return 0 end
local state, detail, detail_at, draining = string.match(report, '^(%S+) (%S+) (%S+) (%d)$')
if state ~= ARGV[2] then return 0 end
if detail ~= ARGV[3] and tonumber(detail_at) < tonumber(ARGV[6]) then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if seen < tonumber(ARGV[5]) then return 0 end
if tonumber(ARGV[4]) > seen then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) end
return 1 + tonumber(draining)
"""

# KEYS seen, report; ARGV node id, at, report ('' drops it).
RECORD_SCRIPT = """
local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
"""

# KEYS seen, report; ARGV triples of node id, seen, report ('' none). Only nodes without `seen`.
PRIME_SCRIPT = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
    if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2]) end
  end
end
return added
"""

T = TypeVar("T")


def _report_value(state: str, detail: str, detail_at: float, draining: bool) -> str:
    return f"{state} {detail or NO_DETAIL} {detail_at!r} {int(draining)}"


class RedisLivenessStore(LivenessStore):
    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.seen_key = f"{prefix}:seen"
        self.report_key = f"{prefix}:report"
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def _client(self) -> Redis:
        if self._redis is None:
            # as the run queue's client: quick retries hide a reconnect, a Redis that stays down
            # is reported at once (and the heartbeat takes the database path meanwhile)
            self._redis = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                socket_keepalive=True,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            )
        return self._redis

    def _script(self, source: str) -> AsyncScript:
        # sent as EVALSHA, and loaded again after a Redis restart emptied its script cache
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return script

    async def start(self) -> None:
        await self._guard(self._client.ping)

    async def close(self) -> None:
        redis, self._redis = self._redis, None
        self._scripts.clear()
        if redis is not None:
            try:
                await redis.aclose()
            except (RedisError, OSError) as exc:
                raise LivenessUnavailable(f"closing the Redis connection failed: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    @property
    def _keys(self) -> list[str]:
        return [self.seen_key, self.report_key]

    async def heard(
        self, node_id: str, report: Report, at: float, *, fresh_after: float, detail_after: float
    ) -> Known | None:
        args = [node_id, report.state, report.detail, repr(at), repr(fresh_after), repr(detail_after)]

        async def call() -> Any:
            return await self._script(HEARD_SCRIPT)(keys=self._keys, args=args)

        taken = int(await self._guard(call))
        return None if taken == 0 else Known(draining=taken == 2)

    async def record(self, node_id: str, report: Report | None, at: float, draining: bool) -> None:
        value = "" if report is None else _report_value(report.state, report.detail, at, draining)

        async def call() -> Any:
            return await self._script(RECORD_SCRIPT)(keys=self._keys, args=[node_id, repr(at), value])

        await self._guard(call)

    async def invalidate(self, node_ids: Sequence[str]) -> None:
        if node_ids:
            await self._guard(lambda: self._client.hdel(self.report_key, *node_ids))

    async def forget(self, node_ids: Sequence[str]) -> None:
        if not node_ids:
            return

        async def call() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.seen_key, *node_ids)
                pipe.hdel(self.report_key, *node_ids)
                await pipe.execute()

        await self._guard(call)

    async def last_seen(self, node_ids: Sequence[str]) -> dict[str, float]:
        if not node_ids:
            return {}
        values = await self._guard(lambda: self._client.hmget(self.seen_key, list(node_ids)))
        return {node_id: float(value) for node_id, value in zip(node_ids, values, strict=True) if value}

    async def prime(self, entries: Sequence[Primed], at: float) -> int:
        added = 0
        for start in range(0, len(entries), PRIME_CHUNK):
            args: list[str] = []
            for primed in entries[start : start + PRIME_CHUNK]:
                value = (
                    ""
                    if primed.state is None
                    else _report_value(primed.state, primed.detail, at, primed.draining)
                )
                args += [primed.node_id, repr(primed.seen), value]

            async def call(args: list[str] = args) -> Any:
                return await self._script(PRIME_SCRIPT)(keys=self._keys, args=args)

            added += int(await self._guard(call))
        return added

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (RedisError, OSError) as exc:
            raise LivenessUnavailable(
                f"Redis at {mask_url_password(self.url)} is unavailable: {exc}"
            ) from exc
