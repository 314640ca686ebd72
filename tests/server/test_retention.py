"""Retention in compressed time: a ManualClock says how long ago runs ended and audit entries
were written; the rows are real rows of a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from nodeapi import errors
from nodeapi.client import Calls, Client
from server.clock import ManualClock
from server.config import Settings
from server.db.engine import create_engine, create_sessionmaker
from server.db.models import AUDIT_LOG, IDEMPOTENCY_KEYS
from server.leader import LeaderLease
from server.queue import MemoryQueue
from server.secrets import SecretBox
from server.services import retention
from server.services.context import ServiceContext
from server.services.retention import RetentionSweeper
from tests.conftest import ApiServerFactory
from tests.support.scheduler_db import RUN_EVENTS, RUNS, insert_rows, run_row, runs_by_id
from tests.support.wait import eventually

NOW = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0
EVENTS_PER_RUN = 12  # a few of them log lines


class Follower(LeaderLease):
    """Another replica holds the lease."""

    @property
    def held(self) -> bool:
        return False


@pytest.fixture
async def ctx(engine: AsyncEngine, database_url: str) -> AsyncIterator[ServiceContext]:
    queue = MemoryQueue()
    await queue.start()
    yield ServiceContext(
        settings=Settings.from_env({"DATABASE_URL": database_url}),  # the defaults: 7 and 90 days
        sessionmaker=create_sessionmaker(engine),
        queue=queue,
        secrets=SecretBox(()),
        wake_scheduler=lambda: None,
        nodes_changed=lambda: None,
        clock=ManualClock(NOW),
    )
    await queue.close()


def run(
    run_id: str, status: str, *, ended_days_ago: float | None = None, age_days: float = 30
) -> dict[str, Any]:
    row = {**run_row(run_id), "status": status, "created_at": NOW - timedelta(days=age_days)}
    row["finished_at"] = None if ended_days_ago is None else NOW - timedelta(days=ended_days_ago)
    row["node_id"] = None if status == "queued" else "n1"
    row["last_event_seq"] = EVENTS_PER_RUN
    return row


def events(run_id: str) -> list[dict[str, Any]]:
    at = NOW - timedelta(days=30)
    return [
        {
            "run_id": run_id,
            "seq": seq,
            "type": "log" if seq % 3 else "started",
            "at": at,
            "data": {"stream": "stdout", "text": f"line {seq}\n"},
        }
        for seq in range(1, EVENTS_PER_RUN + 1)
    ]


def audit(entry_id: int, days_ago: float) -> dict[str, Any]:
    at = NOW - timedelta(days=days_ago)
    return {"id": entry_id, "at": at, "actor": "admin", "action": "node.update", "target_type": "node"} | {
        "target_id": "n1",
        "details": {},
    }


def key(name: str, run_id: str, hours_ago: float) -> dict[str, Any]:
    created = NOW - timedelta(hours=hours_ago)
    return {"key": name, "fingerprint": "0" * 64, "run_id": run_id, "created_at": created}


EXPIRED = {
    "old-ok": "succeeded",
    "old-failed": "failed",
    "old-cancelled": "cancelled",
    "old-lost": "lost",
    "old-ok-2": "succeeded",
}
KEPT_FINISHED = {"recent-ok": ("succeeded", 1.0), "almost-expired": ("failed", 6.9)}
ACTIVE = {"old-queued": "queued", "old-scheduled": "scheduled", "old-running": "running"}


async def seed(engine: AsyncEngine) -> None:
    rows = [run(rid, status, ended_days_ago=8 + i) for i, (rid, status) in enumerate(EXPIRED.items())]
    rows += [run(rid, status, ended_days_ago=days) for rid, (status, days) in KEPT_FINISHED.items()]
    rows += [run(rid, status, age_days=365) for rid, status in ACTIVE.items()]  # old, still going
    await insert_rows(engine, RUNS, rows)
    await insert_rows(engine, RUN_EVENTS, [e for row in rows for e in events(row["id"])])
    await insert_rows(engine, AUDIT_LOG, [audit(1, 120), audit(2, 91), audit(3, 89), audit(4, 1)])
    await insert_rows(
        engine,
        IDEMPOTENCY_KEYS,
        # a key of an expired run goes with it; one past its TTL goes anyway; a fresh one stays
        [key("k-old-run", "old-ok", 1), key("k-stale", "recent-ok", 25), key("k-fresh", "recent-ok", 1)],
    )


async def count_by_run(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(RUN_EVENTS.c.run_id, func.count()).group_by(RUN_EVENTS.c.run_id)
        )
        return {run_id: int(n) for run_id, n in rows.all()}


async def column(engine: AsyncEngine, col: Any) -> set[Any]:
    async with engine.connect() as connection:
        return set((await connection.execute(select(col))).scalars())


async def test_finished_runs_go_with_their_events_after_run_retention_active_ones_never(
    engine: AsyncEngine, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small batches, so one pass takes several transactions of each kind
    monkeypatch.setattr(retention, "RUN_BATCH", 2)
    monkeypatch.setattr(retention, "EVENT_BATCH", 5)
    monkeypatch.setattr(retention, "AUDIT_BATCH", 1)
    await seed(engine)

    result = await RetentionSweeper(ctx, pause=0).sweep()

    assert result.complete
    assert (result.runs, result.events) == (len(EXPIRED), len(EXPIRED) * EVENTS_PER_RUN)
    left = set(KEPT_FINISHED) | set(ACTIVE)
    assert set(await runs_by_id(engine)) == left
    assert await count_by_run(engine) == dict.fromkeys(left, EVENTS_PER_RUN)
    assert (result.audit, await column(engine, AUDIT_LOG.c.id)) == (2, {3, 4})
    assert (result.keys, await column(engine, IDEMPOTENCY_KEYS.c.key)) == (1, {"k-fresh"})

    # nothing more to do; a week on, the recent ones have expired too, the active ones stay
    assert (await RetentionSweeper(ctx, pause=0).sweep()).runs == 0
    assert isinstance(ctx.clock, ManualClock)
    ctx.clock.advance(7 * DAY)
    assert (await RetentionSweeper(ctx, pause=0).sweep()).runs == len(KEPT_FINISHED)
    assert set(await runs_by_id(engine)) == set(ACTIVE)
    assert set(await count_by_run(engine)) == set(ACTIVE)


async def test_a_pass_stops_at_its_budget_and_the_next_carries_on(
    engine: AsyncEngine, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "RUN_BATCH", 2)
    monkeypatch.setattr(retention, "EVENT_BATCH", 5)
    await seed(engine)
    sweeper = RetentionSweeper(ctx, pause=0, budget=0)  # one transaction per pass
    passes = []
    while not (result := await sweeper.sweep()).complete:
        passes.append(result)
        assert len(passes) < 100
    assert len(passes) > len(EXPIRED)
    assert sum(p.runs for p in passes) + result.runs == len(EXPIRED)
    assert set(await runs_by_id(engine)) == set(KEPT_FINISHED) | set(ACTIVE)
    # a run is deleted only once its events are: none is ever left without its run
    assert set(await count_by_run(engine)) == set(KEPT_FINISHED) | set(ACTIVE)


async def test_only_the_leader_sweeps(engine: AsyncEngine, ctx: ServiceContext) -> None:
    await seed(engine)
    await RetentionSweeper(ctx, lease=Follower())._sweep_if_leader()
    assert len(await runs_by_id(engine)) == len(EXPIRED) + len(KEPT_FINISHED) + len(ACTIVE)
    await RetentionSweeper(ctx, pause=0)._sweep_if_leader()  # SoleLeader: a single apiserver
    assert set(await runs_by_id(engine)) == set(KEPT_FINISHED) | set(ACTIVE)


def test_a_real_apiserver_sweeps_at_start(apiserver: ApiServerFactory, database_url: str) -> None:
    """Through the real process: a run that ended 8 days ago is gone (404, with its events), a
    recent one and an old queued one are still served."""
    apiserver().stop()  # a server migrates the database, then goes away while rows are planted
    real_now = datetime.now(UTC)

    async def plant() -> None:
        engine = create_engine(Settings.from_env({"DATABASE_URL": database_url}))
        rows = [
            run("run-old-done", "succeeded", ended_days_ago=8),
            run("run-new-done", "failed", ended_days_ago=1),
            run("run-old-queued", "queued", age_days=30),
        ]
        for row in rows:  # relative to the real clock this time
            shift = real_now - NOW
            row["created_at"] += shift
            if row["finished_at"] is not None:
                row["finished_at"] += shift
        try:
            await insert_rows(engine, RUNS, rows)
            await insert_rows(engine, RUN_EVENTS, [e for row in rows for e in events(row["id"])])
        finally:
            await engine.dispose()

    asyncio.run(plant())
    server = apiserver()
    with Client(server.base_url) as api:

        def swept() -> bool:
            try:
                api.send(Calls.get_run("run-old-done"))
            except errors.NotFound:
                return True
            return False

        eventually(swept, timeout=30)
        with pytest.raises(errors.NotFound):
            api.send(Calls.run_events("run-old-done"))
        assert api.send(Calls.get_run("run-new-done")).status == "failed"
        assert len(api.send(Calls.run_events("run-new-done")).items) == EVENTS_PER_RUN
        assert api.send(Calls.get_run("run-old-queued")).status == "queued"
