"""Run queue on one Redis stream read by one consumer group ("schedulers").

Every scheduler replica is a consumer with a unique name. A message stays in the
group's pending entries list until acked; acked entries are also deleted so the
stream only holds work not yet done. Redis errors surface as `QueueUnavailable`;
the client reconnects on its own, and a group that vanished (Redis restarted
without persistence) is recreated on first use.

Reading is the hot path. redis-py's pure-Python parser costs about five protocol elements
per stream entry, so new entries are read by a small server-side script that runs the same
XREADGROUP and answers with one string (entry id and run id on alternate lines), split in C
here. Scripts cannot block, so only when that finds nothing does `consume` fall back to a
blocking XREADGROUP. Publishing goes through a script too: one command per chunk of ids
instead of one XADD each, since encoding commands and parsing replies is what the client
spends its time on in a burst.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from nodeapi.masking import mask_url_password
from server.queue.base import Message, QueueUnavailable, RunQueue

DEFAULT_STREAM_KEY = "agentnodes:runs"
GROUP = "schedulers"
RUN_ID_FIELD = "run_id"
MAX_BLOCK_SECONDS = 10.0
SEPARATOR = "\n"  # between the fields of the read script's answer; never part of an id

# KEYS[1] stream; ARGV group, consumer, count, field. Same delivery semantics as XREADGROUP ">".
READ_NEW_SCRIPT = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not reply then return '' end
local out = {}
for _, entry in ipairs(reply[1][2]) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[4] then
      out[#out + 1] = entry[1]
      out[#out + 1] = fields[i + 1]
      break
    end
  end
end
return table.concat(out, '\\n')
"""

# KEYS[1] stream; ARGV[1] field, then one run id per entry to add.
ADD_ALL_SCRIPT = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[i])
end
return #ARGV - 1
"""
PUBLISH_CHUNK = 1000  # ids per script call: bounds how long Redis is busy with one call

T = TypeVar("T")


def unique_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStreamsQueue(RunQueue):
    def __init__(self, url: str, stream_key: str = DEFAULT_STREAM_KEY, consumer: str | None = None) -> None:
        self.url = url
        self.stream_key = stream_key
        self.consumer = consumer or unique_consumer_name()
        self._redis: Redis | None = None
        self._read_script: AsyncScript | None = None
        self._add_script: AsyncScript | None = None

    @property
    def _client(self) -> Redis:
        if self._redis is None:
            # a couple of quick retries make a reconnect after a Redis restart invisible to callers,
            # while a Redis that stays down is reported within a fraction of a second
            self._redis = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                # no socket_timeout: redis-py's read timeout swallows task cancellation on
                # Python 3.11 (a blocked XREADGROUP would never stop); keepalive detects dead peers
                socket_timeout=None,
                socket_keepalive=True,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            )
        return self._redis

    @property
    def _read_new(self) -> AsyncScript:
        # scripts are sent as EVALSHA, and loaded again after a Redis restart emptied its cache
        if self._read_script is None:
            self._read_script = self._client.register_script(READ_NEW_SCRIPT)
        return self._read_script

    @property
    def _add_all(self) -> AsyncScript:
        if self._add_script is None:
            self._add_script = self._client.register_script(ADD_ALL_SCRIPT)
        return self._add_script

    async def start(self) -> None:
        await self._guard(self._create_group)

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            self._read_script = self._add_script = None
            try:
                await redis.aclose()
            except (RedisError, OSError) as exc:
                raise QueueUnavailable(f"closing the Redis connection failed: {exc}") from exc

    async def publish(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        if any(SEPARATOR in run_id for run_id in run_ids):
            raise ValueError("a run id must not contain a line break")

        async def add_all() -> None:
            for start in range(0, len(run_ids), PUBLISH_CHUNK):
                chunk = run_ids[start : start + PUBLISH_CHUNK]
                await self._add_all(keys=[self.stream_key], args=[RUN_ID_FIELD, *chunk])

        await self._guard(add_all)

    async def consume(self, count: int, block: float) -> list[Message]:
        async def read_new() -> Any:
            return await self._read_new(
                keys=[self.stream_key], args=[GROUP, self.consumer, count, RUN_ID_FIELD]
            )

        packed = await self._guard(read_new, group_needed=True)
        if packed:
            fields = packed.split(SEPARATOR)
            return [Message(id=mid, run_id=rid) for mid, rid in zip(fields[::2], fields[1::2], strict=True)]
        if block <= 0:
            return []
        block_ms = max(1, int(min(block, MAX_BLOCK_SECONDS) * 1000))

        async def read_blocking() -> Any:
            return await self._client.xreadgroup(
                GROUP, self.consumer, {self.stream_key: ">"}, count=count, block=block_ms
            )

        reply = await self._guard(read_blocking, group_needed=True)
        if not reply:
            return []
        # RESP2: [[stream, entries]]; RESP3: {stream: [entries]}
        entries = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        return [_message(message_id, fields) for message_id, fields in entries if fields]

    async def ack(self, message_ids: list[str]) -> None:
        if not message_ids:
            return

        async def ack_and_delete() -> None:
            # one round trip; no MULTI: an entry acked but not deleted is never delivered again
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xack(self.stream_key, GROUP, *message_ids)
                pipe.xdel(self.stream_key, *message_ids)
                await pipe.execute()

        await self._guard(ack_and_delete)

    async def reclaim(self, min_idle: float, count: int) -> list[Message]:
        async def claim() -> Any:
            return await self._client.xautoclaim(
                self.stream_key, GROUP, self.consumer, int(min_idle * 1000), start_id="0-0", count=count
            )

        reply = await self._guard(claim, group_needed=True)
        claimed = [(message_id, fields) for message_id, fields in reply[1] if fields]
        if not claimed:
            return []
        return [_message(message_id, fields) for message_id, fields in claimed]

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def pending_count(self) -> int:
        async def summary() -> Any:
            return await self._client.xpending(self.stream_key, GROUP)

        reply = await self._guard(summary, group_needed=True)
        return int(reply["pending"])

    async def _create_group(self) -> None:
        try:
            await self._client.xgroup_create(self.stream_key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _guard(self, call: Callable[[], Awaitable[T]], group_needed: bool = False) -> T:
        """Run `call`, recreating a vanished group once; every Redis error becomes QueueUnavailable."""
        try:
            try:
                return await call()
            except ResponseError as exc:
                if not (group_needed and str(exc).startswith("NOGROUP")):
                    raise
            await self._create_group()
            return await call()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis at {mask_url_password(self.url)} is unavailable: {exc}") from exc


def _message(message_id: str, fields: dict[str, str]) -> Message:
    return Message(id=message_id, run_id=fields[RUN_ID_FIELD])
