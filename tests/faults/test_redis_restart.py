"""Scenario 2: Redis restarts under load, with persistence (append-only file) and without, while
runs wait in the queue for a node that does not exist yet. The database is the truth: every run
completes once, whatever Redis kept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import Api, Burst, Faults
from tests.support.images import TEST_IMAGE
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.redis]

RUNS = 30
OUTAGE = 1.5  # seconds Redis stays down: submissions meanwhile go through the outbox


def _pool(i: int) -> str:
    return "a" if i % 2 == 0 else "b"  # pool b has no node until the end


@pytest.mark.parametrize("persistent", [True, False], ids=["appendonly", "no-persistence"])
def test_redis_restart_under_load_runs_every_run_once(
    faults: Faults, tmp_path: Path, persistent: bool
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    with RedisServer(persist_dir=redis_dir if persistent else None) as redis:
        server = faults.apiserver({"REDIS_URL": redis.url})
        api = faults.api(server)
        faults.node(server, "node-a", NODE_LABELS="pool=a")
        burst = Burst(
            [api],
            RUNS,
            lambda i: {
                "image": TEST_IMAGE,
                "command": faults.ledger.command(0.5),
                "node_selector": {"pool": _pool(i)},
            },
        )
        burst.start()
        wait_until(lambda: burst.accepted() >= RUNS // 3, "a third of the runs submitted")
        waiting = _unplaced_in_pool_b(api)
        assert waiting, "runs of pool b wait for a node"

        print(f"Redis before the kill: {_stream_state(redis)}")
        redis.kill()
        time.sleep(OUTAGE)  # the point: the queue is gone for a while under load
        redis.start()

        submissions = burst.wait()
        faults.node(server, "node-b", NODE_LABELS="pool=b")  # pool b can run now
        runs = api.wait_settled()
        faults.check(api, submissions)
        assert not submissions.unexpected, submissions.unexpected
        assert len(submissions.created) == RUNS
        assert {run["status"] for run in runs.values()} == {"succeeded"}
        assert {runs[rid]["node_id"] for rid in waiting} == {"node-b"}


def _stream_state(redis: RedisServer) -> str:
    """What the run stream holds: entries not yet acknowledged, and those not even read."""
    import redis as redis_py

    with redis_py.Redis.from_url(redis.url, decode_responses=True) as client:
        length = client.xlen("agentnodes:runs")
        groups = client.xinfo_groups("agentnodes:runs")
    lag = sum(int(group.get("lag") or 0) for group in groups)
    pending = sum(int(group.get("pending") or 0) for group in groups)
    return f"{length} entries in the stream, {pending} read and not acknowledged, {lag} unread"


def _unplaced_in_pool_b(api: Api) -> list[str]:
    runs = api.runs()
    return [
        rid
        for rid, run in runs.items()
        if run["node_selector"] == {"pool": "b"} and run["status"] == "queued"
    ]
