"""The scheduler loop on a real database (SQLite file, PostgreSQL) and real queues."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from server.queue import MemoryQueue, RunQueue
from server.queue.redis import RedisStreamsQueue
from server.repositories.events import append_run_events
from server.scheduler.loop import Scheduler
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


@pytest.fixture
async def schedulers() -> AsyncIterator[list[Scheduler]]:
    """Every scheduler a test appends here is stopped at teardown."""
    started: list[Scheduler] = []
    yield started
    for scheduler in started:
        await scheduler.stop()


def quick(engine: AsyncEngine, queue: RunQueue, **overrides: float) -> Scheduler:
    params: dict[str, float] = {
        "block": 0.2,
        "recheck_interval": 60.0,
        "rescan_interval": 60.0,
        "outbox_interval": 0.3,
        "outbox_grace": 0.0,
        "reclaim_interval": 60.0,
        **overrides,
    }
    return Scheduler(engine, queue, offline_after=30.0, **params)  # type: ignore[arg-type]


async def statuses(engine: AsyncEngine) -> Counter[str]:
    return Counter(run.status for run in (await runs_by_id(engine)).values())


async def test_loop_places_runs_least_loaded_and_acks(
    engine: AsyncEngine, schedulers: list[Scheduler]
) -> None:
    await insert_rows(
        engine, NODES, [node_row("a", max_concurrent=4, running=2), node_row("b", max_concurrent=2)]
    )
    await insert_rows(engine, RUNS, [run_row(f"busy{i}", running_on="a") for i in range(2)])
    await insert_rows(engine, RUNS, [run_row(f"r{i}", age=10 - i) for i in range(3)])
    queue = MemoryQueue()
    assigned: list[tuple[str, str]] = []
    scheduler = quick(engine, queue)
    scheduler.on_assigned = assigned.extend
    schedulers.append(scheduler)
    await queue.publish(["r0", "r1", "r2"])
    await scheduler.start()

    async def all_scheduled() -> bool:
        return (await statuses(engine))["scheduled"] == 3

    await eventually_async(all_scheduled)
    runs = await runs_by_id(engine)
    # b (0/2) first, then a and b tie at 1/2 with 2 vs 1 running -> b, then a (2/4) vs b (2/2 full) -> a
    placed = {run_id: run for run_id, run in runs.items() if run_id.startswith("r")}
    assert {run_id: placed[run_id].node_id for run_id in placed} == {"r0": "b", "r1": "b", "r2": "a"}
    assert all(run.attempts == 1 and run.scheduled_at is not None for run in placed.values())
    nodes = await nodes_by_id(engine)
    assert (nodes["a"].running, nodes["b"].running) == (3, 2)
    assert sorted(assigned) == [("r0", "b"), ("r1", "b"), ("r2", "a")]
    events = await events_of(engine, "r2")
    assert [(e.seq, e.type, e.data) for e in events] == [(1, "scheduled", {"node_id": "a"})]

    async def acked() -> bool:
        return await queue.pending_count() == 0

    await eventually_async(acked)

    # a duplicate delivery of runs already scheduled changes nothing
    await queue.publish(["r0", "r2"])
    await eventually_async(acked)
    await asyncio.sleep(0.3)  # elapsed time is the point: nothing more happens after the ack
    assert await queue.pending_count() == 0
    assert len(await events_of(engine)) == 3
    assert (await nodes_by_id(engine))["a"].running == 3


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_two_schedulers_never_overfill_nor_double_assign(
    engine: AsyncEngine, schedulers: list[Scheduler], backend: str, request: pytest.FixtureRequest
) -> None:
    await insert_rows(engine, NODES, [node_row(f"n{i}", max_concurrent=3) for i in range(5)])
    run_ids = [f"run-{i:02}" for i in range(40)]
    await insert_rows(engine, RUNS, [run_row(run_id) for run_id in run_ids])
    if backend == "redis":
        url = request.getfixturevalue("redis_server").url
        queues: list[RunQueue] = [RedisStreamsQueue(url, "sched:test"), RedisStreamsQueue(url, "sched:test")]
    else:
        first = MemoryQueue()
        queues = [first, first.sibling()]
    for queue in queues:
        await queue.start()
    schedulers.extend(quick(engine, queue, batch_size=7) for queue in queues)
    # every run twice: duplicate delivery must not assign twice
    await queues[0].publish(run_ids + run_ids)
    await asyncio.gather(*(scheduler.start() for scheduler in schedulers))

    async def settled() -> bool:
        return (await statuses(engine))["scheduled"] == 15 and await queues[0].pending_count() == 0

    await eventually_async(settled)
    await asyncio.sleep(0.5)  # elapsed time is the point: no late placement overfills a node
    runs = await runs_by_id(engine)
    per_node = Counter(run.node_id for run in runs.values() if run.status == "scheduled")
    nodes = await nodes_by_id(engine)
    assert per_node == {f"n{i}": 3 for i in range(5)}
    assert all(node.running == 3 for node in nodes.values())
    assert all(run.attempts == 1 for run in runs.values() if run.status == "scheduled")
    scheduled_events = Counter(e.run_id for e in await events_of(engine) if e.type == "scheduled")
    assert set(scheduled_events.values()) == {1}
    assert len(scheduled_events) == 15
    assert (await statuses(engine))["queued"] == 25
    for queue in queues:
        await queue.close()


async def test_unschedulable_reason_once_then_placed_on_wake(
    engine: AsyncEngine, schedulers: list[Scheduler]
) -> None:
    await insert_rows(
        engine,
        NODES,
        [
            node_row("cpu", labels={"gpu": "false"}),
            node_row("gpu-full", max_concurrent=1, running=1, labels={"gpu": "true"}),
            node_row("gpu-drain", draining=True, labels={"gpu": "true"}),
            node_row("gpu-gone", seen_ago=300, labels={"gpu": "true"}),
        ],
    )
    await insert_rows(engine, RUNS, [run_row("train", selector={"gpu": "true"})])
    queue = MemoryQueue()
    scheduler = quick(engine, queue, recheck_interval=0.2)
    schedulers.append(scheduler)
    await scheduler.start()
    await queue.publish(["train"])

    async def has_event() -> bool:
        return bool(await events_of(engine, "train"))

    await eventually_async(has_event)
    reason = "0/4 nodes available: 1 do not match gpu=true, 1 at capacity (1/1), 1 draining, 1 offline"
    events = await events_of(engine, "train")
    assert [(e.seq, e.type, e.data) for e in events] == [(1, "unschedulable", {"reason": reason})]
    runs = await runs_by_id(engine)
    assert (runs["train"].status, runs["train"].message) == ("queued", reason)
    assert "train" in scheduler.parked

    # re-examined again and again, but the same reason is recorded once
    scheduler.wake()
    await asyncio.sleep(0.6)  # elapsed time is the point: three re-examinations (every 0.2 s) meanwhile
    assert len(await events_of(engine, "train")) == 1

    # capacity frees up
    scheduler.recheck_interval = 60.0
    async with engine.begin() as connection:
        await connection.execute(update(NODES).where(NODES.c.id == "gpu-full").values(running=0))
    scheduler.wake()

    async def placed() -> bool:
        return bool((await runs_by_id(engine))["train"].node_id == "gpu-full")

    await eventually_async(placed, within=5.0)
    runs = await runs_by_id(engine)
    assert (runs["train"].status, runs["train"].message) == ("scheduled", None)
    assert [e.type for e in await events_of(engine, "train")] == ["unschedulable", "scheduled"]
    assert "train" not in scheduler.parked


async def test_runs_waiting_for_a_slot_get_a_message_and_no_event_and_are_placed_oldest_first(
    engine: AsyncEngine, schedulers: list[Scheduler]
) -> None:
    """Under load most runs wait for a slot: they get the reason in their message once, no
    `unschedulable` event each, and a freed slot goes to the oldest waiting run."""
    await insert_rows(engine, NODES, [node_row("a", max_concurrent=2)])
    await insert_rows(engine, RUNS, [run_row(f"r{i:02}", age=100 - i) for i in range(12)])
    queue = MemoryQueue()
    scheduler = quick(engine, queue)
    schedulers.append(scheduler)
    await scheduler.start()
    await queue.publish([f"r{i:02}" for i in range(12)])

    async def waiting(count: int) -> bool:
        runs = (await runs_by_id(engine)).values()
        return (
            sum(1 for run in runs if run.status == "queued" and "at capacity (2/2)" in (run.message or ""))
            == count
        )

    await eventually_async(lambda: waiting(10))
    assert (await statuses(engine))["scheduled"] == 2
    assert [e.type for e in await events_of(engine) if e.type != "scheduled"] == []

    async with engine.begin() as connection:  # one run ends: its slot frees up
        await connection.execute(update(RUNS).where(RUNS.c.id == "r00").values(status="succeeded"))
        await connection.execute(update(NODES).where(NODES.c.id == "a").values(running=1))
    scheduler.wake()

    async def third_placed() -> bool:
        return (await statuses(engine))["scheduled"] == 2 and (await runs_by_id(engine))["r02"].node_id == "a"

    await eventually_async(third_placed)
    assert (await statuses(engine))["queued"] == 9
    assert [e.type for e in await events_of(engine) if e.type != "scheduled"] == []


async def test_runs_of_a_failed_pass_are_placed_without_waiting_for_their_reclaim(
    engine: AsyncEngine, schedulers: list[Scheduler]
) -> None:
    """Regression: a pass that failed (the database went away mid-pass) left its batch pending
    until reclaimed (reclaim_min_idle, 30 s by default) or rescanned; its runs now join the
    parked ones and are placed by the next pass that works."""
    await insert_rows(engine, NODES, [node_row("a", max_concurrent=4)])
    await insert_rows(engine, RUNS, [run_row("seed")])  # placed by the rescan at start
    queue = MemoryQueue()
    failures: list[Exception] = []

    class Flaky(Scheduler):
        async def schedule(self, run_ids: Sequence[str]) -> None:
            if failures:
                raise failures.pop()
            await super().schedule(run_ids)

    scheduler = Flaky(
        engine,  # type: ignore[arg-type]
        queue,
        offline_after=30.0,
        block=0.2,
        recheck_interval=0.3,
        rescan_interval=600.0,
        reclaim_interval=600.0,
        reclaim_min_idle=600.0,
    )
    schedulers.append(scheduler)
    await scheduler.start()

    async def scheduled(count: int) -> bool:
        return (await statuses(engine))["scheduled"] == count

    await eventually_async(lambda: scheduled(1))  # the start-up rescan is done: only the queue is left
    await insert_rows(engine, RUNS, [run_row(f"r{i}") for i in range(3)])
    failures.append(RuntimeError("database unavailable"))
    await queue.publish(["r0", "r1", "r2"])

    await eventually_async(lambda: scheduled(4), within=10)
    assert not failures
    assert await queue.pending_count() == 3  # still pending: reclaimed (and found placed) later


async def test_restart_places_queued_runs_from_the_database(
    engine: AsyncEngine, schedulers: list[Scheduler]
) -> None:
    await insert_rows(engine, NODES, [node_row("n", max_concurrent=5)])
    # enqueued earlier, but the in-process queue died with the previous process
    await insert_rows(engine, RUNS, [run_row(f"old-{i}") for i in range(3)])
    await insert_rows(engine, RUNS, [run_row("bad", expressions=["zone in ("])])
    scheduler = quick(engine, MemoryQueue())
    schedulers.append(scheduler)
    await scheduler.start()

    async def placed() -> bool:
        return (await statuses(engine))["scheduled"] == 3

    await eventually_async(placed)
    events = await events_of(engine, "bad")
    assert [e.type for e in events] == ["unschedulable"]
    assert events[0].data["reason"].startswith("invalid node selector: unbalanced '('")


@pytest.mark.redis
async def test_outbox_publishes_runs_committed_while_redis_was_down(
    engine: AsyncEngine,
    schedulers: list[Scheduler],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await insert_rows(engine, NODES, [node_row("n", max_concurrent=5)])
    queue = RedisStreamsQueue(redis_server.url, "sched:outbox")
    await queue.start()
    # the parked/rescan path would place runs straight from the database: keep it out of the way
    scheduler = quick(engine, queue, rescan_interval=3600.0)
    scheduler.parked.clear()
    rescans = 0
    rescan_once = scheduler._rescan_once

    async def counted_rescan() -> None:
        nonlocal rescans
        await rescan_once()
        rescans += 1

    monkeypatch.setattr(scheduler, "_rescan_once", counted_rescan)
    schedulers.append(scheduler)
    redis_server.stop()
    try:
        await scheduler.start()

        async def rescanned() -> bool:
            return rescans > 0

        await eventually_async(rescanned, what="the first rescan, with nothing queued yet")
        await insert_rows(
            engine, RUNS, [run_row("late-1", enqueued=False), run_row("late-2", enqueued=False)]
        )

        async def outbox_failed() -> bool:
            return scheduler.stats.errors > 0

        await eventually_async(outbox_failed)
        runs = await runs_by_id(engine)
        assert [(r.status, r.enqueued) for r in runs.values()] == [("queued", False)] * 2
    finally:
        redis_server.start()

    async def delivered() -> bool:
        runs = await runs_by_id(engine)
        return all(r.enqueued and r.status == "scheduled" for r in runs.values())

    await eventually_async(delivered, within=25.0)
    assert scheduler.stats.published == 2
    await queue.close()


async def test_append_run_events_assigns_gap_free_seqs(engine: AsyncEngine) -> None:
    await insert_rows(engine, RUNS, [run_row("r")])
    at = datetime.now(UTC)
    sessions = async_sessionmaker(engine)
    async with sessions() as session:
        first = await append_run_events(session, "r", [("created", {}, at), ("log", {"text": "hi"}, at)])
        await session.commit()
    async with sessions() as session:
        await append_run_events(session, "r", [("log", {"text": "lost"}, at)])
        await session.rollback()
    async with sessions() as session:
        second = await append_run_events(session, "r", [("exited", {"exit_code": 0}, at)])
        assert await append_run_events(session, "r", []) == []
        await session.commit()
        with pytest.raises(LookupError):
            await append_run_events(session, "missing", [("log", {}, at)])
    assert (first, second) == ([1, 2], [3])
    events = await events_of(engine, "r")
    assert [(e.seq, e.type) for e in events] == [(1, "created"), (2, "log"), (3, "exited")]
    assert (await runs_by_id(engine))["r"].last_event_seq == 3


async def test_two_runs_of_one_node_ending_at_once_leave_its_count_right(
    engine: AsyncEngine, database_url: str
) -> None:
    """Regression (PostgreSQL, READ COMMITTED): two transactions each ended a run of the same node
    and recounted it; the second one's count subquery, blocked on the node's row lock, still
    counted from its snapshot taken before the first committed, so the node kept `running=1` with
    no active run. The recount now locks the node first and counts after the lock."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession

    from server.repositories.runs import recount_running

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writing transaction at a time: the race needs two")

    await insert_rows(engine, NODES, [node_row("b", running=2)])
    await insert_rows(engine, RUNS, [run_row("y", running_on="b"), run_row("z", running_on="b")])
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def end(session: AsyncSession, run_id: str) -> None:
        await session.execute(update(RUNS).where(RUNS.c.id == run_id).values(status="succeeded"))

    async with sessions() as first, sessions() as second:
        await end(first, "y")
        await end(second, "z")
        await recount_running(first, "b")  # holds b's row lock until it commits
        blocked = asyncio.create_task(recount_running(second, "b"))

        async def waiting_for_the_lock() -> bool:
            async with engine.connect() as probe:
                waits = await probe.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
                return bool(waits.scalar())

        await eventually_async(waiting_for_the_lock)
        await first.commit()
        await blocked
        await second.commit()

    assert (await nodes_by_id(engine))["b"].running == 0
