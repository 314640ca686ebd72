"""The lost-run reaper in compressed time: a ManualClock decides how long nodes have been silent,
the runs and nodes are real rows of a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from server.clock import ManualClock
from server.config import Settings
from server.db.engine import create_sessionmaker
from server.liveness import MemoryLivenessStore
from server.queue import MemoryQueue
from server.secrets import SecretBox
from server.services.context import ServiceContext
from server.services.liveness import Liveness
from server.services.reaper import LostRunReaper
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

OFFLINE_AFTER = 3.0
LOST_GRACE = 2.0
SILENCE = OFFLINE_AFTER + LOST_GRACE  # what the reaper waits for
MAX_ATTEMPTS = 3
T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)  # only the manual clock tells the time


@dataclass
class Reaping:
    engine: AsyncEngine
    clock: ManualClock
    queue: MemoryQueue
    ctx: ServiceContext
    reaper: LostRunReaper
    scheduler_woken: list[datetime] = field(default_factory=list)

    async def heartbeat(self, node_id: str) -> None:
        """What a heartbeat does to the liveness of a node: stamps it with the server's clock."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(NODES).where(NODES.c.id == node_id).values(last_heartbeat_at=self.clock.now())
            )

    async def statuses(self) -> dict[str, str]:
        return {run_id: row.status for run_id, row in (await runs_by_id(self.engine)).items()}

    async def running(self) -> dict[str, int]:
        return {node_id: row.running for node_id, row in (await nodes_by_id(self.engine)).items()}


@pytest.fixture
async def reaping(engine: AsyncEngine, database_url: str) -> AsyncIterator[Reaping]:
    settings = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "NODE_HEARTBEAT_INTERVAL": "1",
            "NODE_OFFLINE_AFTER": str(OFFLINE_AFTER),
            "RUN_LOST_GRACE": str(LOST_GRACE),
            "RUN_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        }
    )
    clock = ManualClock(T0 - timedelta(seconds=100))  # the reaper is built well before it starts
    queue = MemoryQueue()
    await queue.start()
    woken: list[datetime] = []
    ctx = ServiceContext(
        settings=settings,
        sessionmaker=create_sessionmaker(engine),
        queue=queue,
        secrets=SecretBox(()),
        wake_scheduler=lambda: woken.append(clock.now()),
        nodes_changed=lambda: woken.append(clock.now()),
        clock=clock,
    )
    reaper = LostRunReaper(ctx, Liveness(ctx, MemoryLivenessStore()))
    yield Reaping(engine, clock, queue, ctx, reaper, woken)
    await reaper.stop()
    await queue.close()


def seen_at(at: datetime, node_id: str, *, running: int = 0) -> dict[str, Any]:
    return {**node_row(node_id, max_concurrent=10, running=running), "last_heartbeat_at": at}


def placed(
    run_id: str,
    node_id: str,
    status: str,
    *,
    claimed: bool = False,
    attempts: int = 1,
    cancel_requested: bool = False,
) -> dict[str, Any]:
    """A run the scheduler placed on `node_id` (attempt `attempts`), claimed and started as told."""
    at = T0 - timedelta(seconds=200)
    row = {**run_row(run_id), "status": status, "node_id": node_id, "attempts": attempts}
    # every row the same columns: one executemany inserts them all
    row.update(scheduled_at=at, cancel_requested=cancel_requested, claimed_at=None, started_at=None)
    row.update(finished_at=None, container_id=None, exit_code=None)
    if claimed or status == "running":
        row["claimed_at"] = at
    if status == "running":
        row.update(started_at=at, container_id=f"c-{run_id}")
    if status in ("succeeded", "failed"):
        row.update(claimed_at=at, started_at=at, finished_at=at, exit_code=0 if status == "succeeded" else 1)
    return row


async def test_runs_of_silent_nodes_are_requeued_lost_or_cancelled_only_after_the_silence(
    reaping: Reaping,
) -> None:
    engine, clock, reaper = reaping.engine, reaping.clock, reaping.reaper
    await insert_rows(
        engine,
        NODES,
        [
            seen_at(T0 - timedelta(seconds=60), "silent", running=5),  # silent since before the start
            seen_at(T0 + timedelta(seconds=1), "quiet", running=1),  # falls silent a second after it
            seen_at(T0, "fresh", running=1),  # keeps sending heartbeats
        ],
    )
    await insert_rows(
        engine,
        RUNS,
        [
            placed("r-unclaimed", "silent", "scheduled"),
            placed("r-exhausted", "silent", "scheduled", attempts=MAX_ATTEMPTS),
            placed("r-claimed", "silent", "scheduled", claimed=True),
            placed("r-running", "silent", "running"),
            placed("r-cancelling", "silent", "running", cancel_requested=True),
            placed("r-done", "silent", "succeeded"),
            placed("r-quiet", "quiet", "running"),
            placed("r-fresh", "fresh", "running"),
            placed("r-orphan", "gone", "running"),  # its node row was deleted
        ],
    )
    before = await reaping.statuses()

    clock.advance(100)  # T0: the server starts the reaper; silence counts from here at the earliest
    await reaper.start()
    await reaper.stop()  # its loop never ran a step: this test takes every step itself

    for at in (1.0, 3.0, SILENCE - 0.1):
        clock.advance(at - (clock.now() - T0).total_seconds())
        await reaping.heartbeat("fresh")
        # the silent node has been silent for over a minute, but not for SILENCE since the start
        assert await reaper.reap_once() == 0, at
        assert await reaping.statuses() == before
    assert await reaping.running() == {"silent": 5, "quiet": 1, "fresh": 1}
    assert reaping.scheduler_woken == []

    clock.advance(0.2)  # T0 + 5.1
    await reaping.heartbeat("fresh")
    assert await reaper.reap_once() == 6
    now = clock.now()
    runs = await runs_by_id(engine)
    assert {run_id: row.status for run_id, row in runs.items()} == {
        "r-unclaimed": "queued",
        "r-exhausted": "lost",
        "r-claimed": "lost",
        "r-running": "lost",
        "r-cancelling": "cancelled",
        "r-done": "succeeded",
        "r-quiet": "running",  # silent for 4.1 s only
        "r-fresh": "running",
        "r-orphan": "lost",
    }
    # never claimed: back in the queue for any node, with no trace of its placement left
    requeued = runs["r-unclaimed"]
    assert (requeued.node_id, requeued.scheduled_at, requeued.claimed_at) == (None, None, None)
    assert requeued.attempts == 1  # the next placement counts the next attempt
    assert requeued.enqueued is True
    assert [m.run_id for m in await reaping.queue.consume(count=10, block=0)] == ["r-unclaimed"]
    assert "before starting it; queued again" in requeued.message
    # claimed: it may have started, so it is never placed again
    assert "after it claimed the run; it may have started it" in runs["r-claimed"].message
    assert runs["r-exhausted"].message.endswith(f"giving up after {MAX_ATTEMPTS} attempt(s)")
    assert runs["r-running"].message == f"node silent sent no heartbeat for more than {SILENCE:g}s"
    assert "cancelled without its confirmation" in runs["r-cancelling"].message
    for run_id in ("r-exhausted", "r-claimed", "r-running", "r-cancelling", "r-orphan"):
        assert _utc(runs[run_id].finished_at) == now, run_id
        assert runs[run_id].node_id in ("silent", "gone"), run_id  # where it was lost stays on record
    kinds = {
        run_id: [(event.type, _utc(event.at)) for event in await events_of(engine, run_id)]
        for run_id in ("r-unclaimed", "r-exhausted", "r-claimed", "r-running", "r-cancelling")
    }
    assert kinds == {
        "r-unclaimed": [("requeued", now)],
        "r-exhausted": [("lost", now)],
        "r-claimed": [("lost", now)],
        "r-running": [("lost", now)],
        "r-cancelling": [("cancelled", now)],
    }
    assert await reaping.running() == {"silent": 0, "quiet": 1, "fresh": 1}
    assert reaping.scheduler_woken == [now]  # once, for the slots and the requeued run

    clock.advance(0.7)  # T0 + 5.8: the quiet node has been silent for 4.8 s
    await reaping.heartbeat("fresh")
    assert await reaper.reap_once() == 0
    clock.advance(0.4)  # T0 + 6.2: 5.2 s
    await reaping.heartbeat("fresh")
    assert await reaper.reap_once() == 1
    statuses = await reaping.statuses()
    assert (statuses["r-quiet"], statuses["r-fresh"]) == ("lost", "running")
    assert await reaping.running() == {"silent": 0, "quiet": 0, "fresh": 1}

    clock.advance(600)  # nothing left to do on the silent nodes; the fresh one is still fresh
    await reaping.heartbeat("fresh")
    assert await reaper.reap_once() == 0
    assert (await reaping.statuses())["r-fresh"] == "running"
    assert await reaping.running() == {"silent": 0, "quiet": 0, "fresh": 1}


async def test_a_heartbeat_just_in_time_keeps_the_runs(reaping: Reaping) -> None:
    engine, clock, reaper = reaping.engine, reaping.clock, reaping.reaper
    await insert_rows(engine, NODES, [seen_at(T0, "flaky", running=2)])
    await insert_rows(engine, RUNS, [placed("r-a", "flaky", "scheduled"), placed("r-b", "flaky", "running")])
    clock.advance(100)
    await reaper.start()
    await reaper.stop()

    clock.advance(60)  # long past the start grace
    await reaping.heartbeat("flaky")  # T0 + 60
    clock.advance(SILENCE - 0.01)
    assert await reaper.reap_once() == 0
    await reaping.heartbeat("flaky")  # back just in time
    clock.advance(SILENCE - 0.01)
    assert await reaper.reap_once() == 0
    assert await reaping.statuses() == {"r-a": "scheduled", "r-b": "running"}
    assert await reaping.running() == {"flaky": 2}
    clock.advance(0.02)
    assert await reaper.reap_once() == 2
    assert await reaping.statuses() == {"r-a": "queued", "r-b": "lost"}
    assert await reaping.running() == {"flaky": 0}


async def test_the_started_reaper_handles_silent_nodes_by_itself(reaping: Reaping) -> None:
    engine, clock = reaping.engine, reaping.clock
    await insert_rows(engine, NODES, [seen_at(T0 - timedelta(seconds=100), "gone-quiet", running=1)])
    await insert_rows(engine, RUNS, [placed("r-x", "gone-quiet", "running")])
    reaper = LostRunReaper(reaping.ctx, Liveness(reaping.ctx, MemoryLivenessStore()), interval=0.05)
    await reaper.start()
    try:
        clock.advance(SILENCE + 0.1)

        async def lost() -> bool:
            return (await reaping.statuses())["r-x"] == "lost"

        await eventually_async(lost, within=10, what="the background loop reaps r-x")
    finally:
        await reaper.stop()
    assert await reaping.running() == {"gone-quiet": 0}


async def test_repair_running_sets_a_drifted_count_right_and_says_so(
    reaping: Reaping, caplog: pytest.LogCaptureFixture
) -> None:
    engine = reaping.engine
    await insert_rows(
        engine,
        NODES,
        [
            seen_at(T0, "drifted", running=1),
            seen_at(T0, "undercounted", running=2),
            seen_at(T0, "right", running=1),
        ],
    )
    await insert_rows(
        engine,
        RUNS,
        [
            placed("d-1", "drifted", "running"),
            placed("d-done", "drifted", "succeeded"),
            placed("u-1", "undercounted", "running"),
            placed("u-2", "undercounted", "scheduled"),
            placed("u-3", "undercounted", "scheduled", claimed=True),
            placed("r-1", "right", "running"),
        ],
    )
    assert await reaping.reaper.repair_running() == [("undercounted", 2)]
    # the count corrupted behind the server's back (a manual UPDATE, a bug, a restored backup)
    async with engine.begin() as connection:
        await connection.execute(update(NODES).where(NODES.c.id == "drifted").values(running=7))
        await connection.execute(update(NODES).where(NODES.c.id == "undercounted").values(running=0))
    caplog.clear()
    reaping.scheduler_woken.clear()

    with caplog.at_level(logging.WARNING, logger="server.reaper"):
        repaired = await reaping.reaper.repair_running()

    assert sorted(repaired) == [("drifted", 7), ("undercounted", 0)]
    assert await reaping.running() == {"drifted": 1, "undercounted": 3, "right": 1}
    warnings = sorted(record.getMessage() for record in caplog.records if record.name == "server.reaper")
    assert warnings == [
        "node drifted counted 7 active run(s), which its run rows do not match; repaired",
        "node undercounted counted 0 active run(s), which its run rows do not match; repaired",
    ]
    assert len(reaping.scheduler_woken) == 1  # slots may have appeared
    caplog.clear()
    assert await reaping.reaper.repair_running() == []  # right now: nothing to do, nothing said
    assert not [record for record in caplog.records if record.name == "server.reaper"]
    assert len(reaping.scheduler_woken) == 1


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives timestamps back without their zone (stored as UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
