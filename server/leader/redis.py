"""The lease as one Redis key holding the holder's name: one script takes it when it is free or
renews it when it is ours, another gives it up only if it is ours. Redis expires it when the
holder stops renewing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.background import cancel
from server.leader.base import LeaderLease
from server.queue.redis import unique_consumer_name

log = logging.getLogger("server.leader")

DEFAULT_KEY = "agentnodes:leader"
TAKE_OR_RENEW_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease(LeaderLease):
    def __init__(self, url: str, *, ttl: float, key: str = DEFAULT_KEY, holder: str | None = None) -> None:
        super().__init__()
        self.url = url
        self.ttl = ttl
        self.key = key
        self.holder = holder or unique_consumer_name()
        self._redis: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._valid_until = 0.0  # monotonic: past it, this process no longer counts as the holder
        self._was_held = False

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def start(self) -> None:
        if self._task is not None:
            return
        self.connect()
        self._task = asyncio.create_task(self._compete(), name="leader-lease")

    def connect(self) -> None:
        """The client, without competing yet (`try_once` by hand; tests)."""
        if self._redis is None:
            self._redis = Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=2.0
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        if self._redis is not None:
            redis, self._redis = self._redis, None
            if self.held:
                with contextlib.suppress(RedisError, OSError):
                    await redis.eval(RELEASE_SCRIPT, 1, self.key, self.holder)
            self._valid_until = 0.0
            self._note()
            with contextlib.suppress(RedisError, OSError):
                await redis.aclose()

    async def try_once(self) -> bool:
        """Take or renew the lease; whether this process holds it now."""
        assert self._redis is not None
        started = time.monotonic()
        ttl_ms = int(self.ttl * 1000)
        try:
            ok = bool(await self._redis.eval(TAKE_OR_RENEW_SCRIPT, 1, self.key, self.holder, ttl_ms))
        except (RedisError, OSError) as exc:
            # unknown: keep what was confirmed until it runs out (the lease may live on in Redis)
            log.warning("leader lease: Redis did not answer: %s", exc)
        else:
            if ok:
                # counted from before the request: Redis started the ttl no earlier than that; a
                # third of it is kept in hand, so this process stops before another one can take over
                self._valid_until = started + self.ttl * 2 / 3
            else:
                self._valid_until = 0.0  # somebody else holds it
        self._note()
        return self.held

    def _note(self) -> None:
        held = self.held
        if held != self._was_held:
            self._was_held = held
            log.info("leader lease %s (%s)", "taken" if held else "lost", self.holder)
            self._changed(held)

    async def _compete(self) -> None:
        while True:
            await self.try_once()
            await asyncio.sleep(self.ttl / 3)
