"""Scenario 8: two apiserver replicas race on one PostgreSQL database and one Redis stream, with
the nodes split across them and submissions through both: every run is placed once and runs
once."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.harness import Burst, Faults
from tests.support.images import TEST_IMAGE
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RUNS = 48


def test_two_replicas_place_every_run_once(
    faults: Faults, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    database_url = postgres_server.create_database("replicas")
    shared = {"REDIS_URL": redis_server.url}
    first = faults.apiserver(shared, database_url=database_url)
    second = faults.apiserver(shared, database_url=database_url)
    apis = [faults.api(first), faults.api(second)]
    faults.node(first, "node-a")
    faults.node(second, "node-b")

    burst = Burst(apis, RUNS, lambda i: {"image": TEST_IMAGE, "command": faults.ledger.command(0.3)})
    burst.start()
    submissions = burst.wait()
    runs = apis[0].wait_settled()
    faults.check(apis[1], submissions)

    assert submissions.answers == Counter({"201": RUNS})
    assert {run["status"] for run in runs.values()} == {"succeeded"}
    assert all(run["attempts"] == 1 for run in runs.values()), "no run was placed twice"
    placements = {rid: [e for e in apis[0].events(rid) if e["type"] == "scheduled"] for rid in runs}
    assert {rid: len(events) for rid, events in placements.items() if len(events) != 1} == {}
    nodes = Counter(run["node_id"] for run in runs.values())
    assert set(nodes) == {"node-a", "node-b"}, nodes
