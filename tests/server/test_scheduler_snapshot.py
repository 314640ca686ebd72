"""The node snapshot a scheduler keeps between passes, and the Redis read/publish scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.queue import MemoryQueue
from server.queue.redis import PUBLISH_CHUNK, RedisStreamsQueue
from server.scheduler.loop import Scheduler
from server.scheduler.placement import Assign, NodeSnapshot, PendingRun, Placer, Unschedulable
from server.scheduler.selectors import compile_selector
from tests.support.redis import RedisServer
from tests.support.scheduler_db import (
    NODES,
    RUNS,
    events_of,
    insert_rows,
    node_row,
    nodes_by_id,
    run_row,
    runs_by_id,
)
from tests.support.wait import eventually_async


def pending(run_id: str) -> PendingRun:
    return PendingRun(run_id, compile_selector({}, ()))


def test_kept_placer_counts_earlier_batches_as_load() -> None:
    nodes = [NodeSnapshot("a", {}, 0, 2), NodeSnapshot("b", {}, 1, 2)]
    placer = Placer(nodes)
    assert placer.place([pending("r1")]) == [Assign("r1", "a")]
    assert placer.place([pending("r2"), pending("r3")]) == [Assign("r2", "a"), Assign("r3", "b")]
    assert placer.place([pending("r4")]) == [Unschedulable("r4", "0/2 nodes available: 2 at capacity (2/2)")]
    assert [node.running for node in nodes] == [0, 1]


@pytest.fixture
async def scheduler(engine: AsyncEngine) -> AsyncIterator[Scheduler]:
    # a snapshot kept far longer than the test: every pass after the first reuses it
    scheduler = Scheduler(
        engine,
        MemoryQueue(),
        offline_after=30.0,
        block=0.2,
        recheck_interval=0.3,
        rescan_interval=60.0,
        outbox_interval=60.0,
        reclaim_interval=60.0,
        snapshot_max_age=3600.0,
    )
    yield scheduler
    await scheduler.stop()


async def submit(engine: AsyncEngine, scheduler: Scheduler, run_id: str) -> None:
    await insert_rows(engine, RUNS, [run_row(run_id)])
    await scheduler.queue.publish([run_id])


def scheduled_on(engine: AsyncEngine, run_id: str, node_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        run = (await runs_by_id(engine))[run_id]
        return bool(run.status == "scheduled" and run.node_id == node_id)

    return check


async def test_stale_kept_snapshot_never_declares_a_run_unschedulable(
    engine: AsyncEngine, scheduler: Scheduler
) -> None:
    await insert_rows(engine, NODES, [node_row("a", max_concurrent=1)])
    await scheduler.start()
    await submit(engine, scheduler, "r1")
    await eventually_async(scheduled_on(engine, "r1", "a"))

    # r1 finished: its slot is free in the database, while the kept snapshot still counts it
    async with engine.begin() as connection:
        await connection.execute(update(NODES).values(running=0))
    await submit(engine, scheduler, "r2")

    await eventually_async(scheduled_on(engine, "r2", "a"))
    assert [event.type for event in await events_of(engine, "r2")] == ["scheduled"]
    assert scheduler.stats.unschedulable == 0


async def test_refused_write_drops_the_kept_snapshot(engine: AsyncEngine, scheduler: Scheduler) -> None:
    await insert_rows(engine, NODES, [node_row("a", max_concurrent=1), node_row("b", max_concurrent=3)])
    await scheduler.start()
    await submit(engine, scheduler, "r1")
    await eventually_async(scheduled_on(engine, "r1", "a"))

    # meanwhile other replicas filled b and r1 finished on a; the kept snapshot says the opposite
    await insert_rows(engine, RUNS, [run_row(f"other{i}", running_on="b") for i in range(3)])
    async with engine.begin() as connection:
        await connection.execute(update(RUNS).where(RUNS.c.id == "r1").values(status="succeeded"))
        await connection.execute(update(NODES).where(NODES.c.id == "a").values(running=0))
        await connection.execute(update(NODES).where(NODES.c.id == "b").values(running=3))
    await submit(engine, scheduler, "r2")

    await eventually_async(scheduled_on(engine, "r2", "a"))
    # one refused write, then a fresh snapshot (a kept one would have tried b until it looked full)
    assert scheduler.stats.retried == 1
    nodes = await nodes_by_id(engine)
    assert (nodes["a"].running, nodes["b"].running) == (1, 3)


@pytest.mark.redis
async def test_redis_burst_publish_and_packed_read_keep_every_id_in_order(redis_server: RedisServer) -> None:
    queue = RedisStreamsQueue(redis_server.url, "test:burst")
    await queue.start()
    try:
        run_ids = [f"run-{i:05}" for i in range(PUBLISH_CHUNK * 2 + 7)]
        await queue.publish(run_ids)
        seen: list[str] = []
        for _ in range(10):
            messages = await queue.consume(1000, 0.1)
            seen.extend(message.run_id for message in messages)
            await queue.ack([message.id for message in messages])
        assert seen == run_ids
        assert await queue.pending_count() == 0

        with pytest.raises(ValueError, match="line break"):
            await queue.publish(["run-1\nrun-2"])
    finally:
        await queue.close()
