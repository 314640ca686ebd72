"""One suite for every RunQueue backend: the in-process queue and Redis Streams (real redis-server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from server.queue import MemoryQueue, QueueUnavailable, RunQueue, make_queue
from server.queue.redis import RedisStreamsQueue
from tests.support.redis import RedisServer
from tests.support.wait import eventually_async

QueueFactory = Callable[[], Awaitable[RunQueue]]


async def blocked(queue: RunQueue) -> bool:
    """Whether a consume of `queue` waits on an empty queue right now."""
    if isinstance(queue, MemoryQueue):
        return bool(queue.stream.changed._waiters)  # the tasks waiting on the asyncio.Condition
    assert isinstance(queue, RedisStreamsQueue)
    async with Redis.from_url(queue.url) as redis:
        return int((await redis.info("clients"))["blocked_clients"]) > 0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def new_consumer(request: pytest.FixtureRequest) -> AsyncIterator[QueueFactory]:
    """Makes started consumers of one shared queue (as scheduler replicas are)."""
    opened: list[RunQueue] = []
    first = MemoryQueue()
    stream_key = f"test:{uuid.uuid4().hex}"
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None

    async def factory() -> RunQueue:
        if redis_url is not None:
            queue: RunQueue = RedisStreamsQueue(redis_url, stream_key)
        else:
            queue = first if not opened else first.sibling()
        await queue.start()
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        await queue.close()


async def test_publish_consume_ack(new_consumer: QueueFactory) -> None:
    queue = await new_consumer()
    await queue.publish(["r1", "r2", "r3"])
    messages = await queue.consume(count=10, block=1.0)
    assert [m.run_id for m in messages] == ["r1", "r2", "r3"]
    assert len({m.id for m in messages}) == 3
    assert await queue.pending_count() == 3

    await queue.ack([m.id for m in messages[:2]])
    assert await queue.pending_count() == 1
    await queue.ack([messages[2].id])
    assert await queue.pending_count() == 0
    assert await queue.consume(count=10, block=0.05) == []


async def test_consume_respects_count_and_order(new_consumer: QueueFactory) -> None:
    queue = await new_consumer()
    await queue.publish([f"r{i}" for i in range(5)])
    first = await queue.consume(count=2, block=0.1)
    rest = await queue.consume(count=10, block=0.1)
    assert [m.run_id for m in first] == ["r0", "r1"]
    assert [m.run_id for m in rest] == ["r2", "r3", "r4"]


async def test_empty_consume_waits_for_block_then_returns_nothing(new_consumer: QueueFactory) -> None:
    queue = await new_consumer()
    started = time.monotonic()
    assert await queue.consume(count=10, block=0.3) == []
    assert 0.25 <= time.monotonic() - started < 5.0


async def test_blocked_consume_wakes_on_publish(new_consumer: QueueFactory) -> None:
    reader = await new_consumer()
    writer = await new_consumer()
    started = time.monotonic()
    waiting = asyncio.create_task(reader.consume(count=10, block=8.0))
    await eventually_async(lambda: blocked(reader), within=5, what="the reader blocked on the empty queue")
    await writer.publish(["late"])
    messages = await asyncio.wait_for(waiting, timeout=10)
    assert [m.run_id for m in messages] == ["late"]
    assert time.monotonic() - started < 5.0


async def test_messages_of_a_dead_consumer_are_reclaimed(new_consumer: QueueFactory) -> None:
    dead = await new_consumer()
    survivor = await new_consumer()
    await dead.publish(["orphan"])
    taken = await dead.consume(count=10, block=1.0)
    assert [m.run_id for m in taken] == ["orphan"]

    # not idle long enough yet: stays with its consumer
    assert await survivor.reclaim(min_idle=5.0, count=10) == []
    await asyncio.sleep(0.3)  # elapsed time is the point: the message is idle for longer than min_idle
    reclaimed = await survivor.reclaim(min_idle=0.2, count=10)
    assert [(m.id, m.run_id) for m in reclaimed] == [(taken[0].id, "orphan")]
    # a reclaimed message is never handed out as new
    assert await survivor.consume(count=10, block=0.05) == []

    await survivor.ack([reclaimed[0].id])
    assert await survivor.pending_count() == 0
    await asyncio.sleep(0.3)  # elapsed time is the point: an acked message never turns idle
    assert await survivor.reclaim(min_idle=0.2, count=10) == []


async def test_two_consumers_share_work_without_duplicates(new_consumer: QueueFactory) -> None:
    first = await new_consumer()
    second = await new_consumer()
    expected = {f"run-{i}" for i in range(200)}
    await first.publish(sorted(expected))

    seen: dict[str, list[str]] = {"first": [], "second": []}

    async def drain(name: str, queue: RunQueue) -> None:
        for _ in range(200):
            messages = await queue.consume(count=7, block=0.05)
            if not messages:
                return
            seen[name].extend(m.run_id for m in messages)
            await queue.ack([m.id for m in messages])
            await asyncio.sleep(0)

    await asyncio.gather(drain("first", first), drain("second", second))
    assert not set(seen["first"]) & set(seen["second"])
    assert sorted(seen["first"] + seen["second"]) == sorted(expected)
    assert seen["first"]
    assert seen["second"]
    assert await first.pending_count() == 0


async def test_duplicate_publish_is_delivered_twice_and_acked_cleanly(new_consumer: QueueFactory) -> None:
    queue = await new_consumer()
    await queue.publish(["same", "same"])
    messages = await queue.consume(count=10, block=1.0)
    assert [m.run_id for m in messages] == ["same", "same"]
    assert messages[0].id != messages[1].id
    await queue.ack([m.id for m in messages])
    assert await queue.pending_count() == 0


async def test_ping_and_empty_operations(new_consumer: QueueFactory) -> None:
    queue = await new_consumer()
    assert await queue.ping() is True
    await queue.publish([])
    await queue.ack([])
    assert await queue.pending_count() == 0


async def test_closed_memory_queue_is_unavailable() -> None:
    queue = MemoryQueue()
    await queue.start()
    await queue.close()
    assert await queue.ping() is False
    with pytest.raises(QueueUnavailable):
        await queue.publish(["x"])


def test_make_queue_picks_the_backend() -> None:
    assert isinstance(make_queue(None), MemoryQueue)
    assert isinstance(make_queue(""), MemoryQueue)
    redis_queue = make_queue("redis://127.0.0.1:1/0")
    assert isinstance(redis_queue, RedisStreamsQueue)
    assert redis_queue.stream_key == "agentnodes:runs"


@pytest.mark.redis
async def test_redis_down_is_unavailable_and_recovers_without_persistence(redis_server: RedisServer) -> None:
    queue = RedisStreamsQueue(redis_server.url, "test:restart")
    await queue.start()
    await queue.publish(["before"])
    redis_server.stop()
    try:
        assert await queue.ping() is False
        with pytest.raises(QueueUnavailable) as raised:
            await queue.publish(["while-down"])
        assert isinstance(raised.value.__cause__, Exception)
        with pytest.raises(QueueUnavailable):
            await queue.consume(count=1, block=0.1)
        with pytest.raises(QueueUnavailable):
            await queue.pending_count()
    finally:
        redis_server.start()
    # stream and group are gone with the data; the queue recreates them on first use
    await queue.publish(["after"])
    messages = await queue.consume(count=10, block=1.0)
    assert [m.run_id for m in messages] == ["after"]
    await queue.ack([m.id for m in messages])
    assert await queue.pending_count() == 0
    assert await queue.ping() is True
    await queue.close()


@pytest.mark.redis
async def test_redis_restart_with_persistence_keeps_pending(
    persistent_redis_server: RedisServer,
) -> None:
    server = persistent_redis_server
    dead = RedisStreamsQueue(server.url, "test:persist")
    survivor = RedisStreamsQueue(server.url, "test:persist")
    await dead.start()
    await survivor.start()
    await dead.publish(["kept", "unread"])
    assert [m.run_id for m in await dead.consume(count=1, block=1.0)] == ["kept"]
    server.restart()

    unread = await survivor.consume(count=10, block=1.0)
    assert [m.run_id for m in unread] == ["unread"]
    await survivor.ack([m.id for m in unread])
    await asyncio.sleep(0.2)  # elapsed time is the point: "kept" is idle for longer than min_idle
    reclaimed = await survivor.reclaim(min_idle=0.1, count=10)
    assert [m.run_id for m in reclaimed] == ["kept"]
    await dead.close()
    await survivor.close()
