"""Scenario 5: a nodemanager is frozen (SIGSTOP) with running containers, then thawed (SIGCONT):
for less than the offline window nothing changes; for longer than NODE_OFFLINE_AFTER +
RUN_LOST_GRACE its runs are lost or requeued, and the thawed node stops what the server gave up
on, even though it wakes up holding old answers (a work answer, heartbeats) from before."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.harness import OFFLINE_AFTER, Api, Faults
from tests.support.wait import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.docker]


def _running(api: Api, faults: Faults, run_ids: list[str]) -> bool:
    runs = api.runs()
    return all(runs[rid]["status"] == "running" and faults.ledger.started(rid) for rid in run_ids)


def test_node_paused_less_than_the_offline_window_changes_nothing(docker_client: Any, faults: Faults) -> None:
    server = faults.apiserver()
    api = faults.api(server)
    node = faults.node(server, "node-a", "docker")
    run_ids = [api.submit(faults.ledger.command(4)) for _ in range(3)]
    wait_until(lambda: _running(api, faults, run_ids), "the runs running", timeout=20)

    node.pause()
    seen = set()
    deadline = time.monotonic() + OFFLINE_AFTER / 3  # the point: frozen for a third of the offline window
    while time.monotonic() < deadline:
        seen.add(api.node("node-a")["status"])  # type: ignore[index]
        time.sleep(0.1)
    node.resume()

    runs = api.wait_settled()
    faults.check(api)
    assert seen == {"online"}
    assert {runs[rid]["status"] for rid in run_ids} == {"succeeded"}
    assert all(run["attempts"] == 1 for run in runs.values())


def test_node_paused_past_the_lost_window_stops_what_the_server_gave_up_on(
    docker_client: Any, faults: Faults
) -> None:
    server = faults.apiserver()
    api = faults.api(server)
    node_a = faults.node(server, "node-a", "docker")
    running = [api.submit(faults.ledger.command(60)) for _ in range(2)]
    wait_until(lambda: _running(api, faults, running), "two runs running on node-a", timeout=20)

    node_a.pause()
    # placed on node-a while it still counts as online; its frozen work poll may even get them
    unstarted = [api.submit(faults.ledger.command(1)) for _ in range(2)]
    for run_id in unstarted:
        assert api.wait_status(run_id, {"scheduled"}, timeout=5)["node_id"] == "node-a"
    faults.node(server, "node-b", "docker")
    for run_id in running:  # frozen for longer than LOST_AFTER by now
        assert "node-a sent no heartbeat" in api.wait_status(run_id, {"lost"}, timeout=20)["message"]
    for run_id in unstarted:
        done = api.wait_status(run_id, {"succeeded"}, timeout=20)
        assert (done["node_id"], done["attempts"]) == ("node-b", 2)

    node_a.resume()
    wait_until(lambda: not node_a.running_runs(), "node-a stops the runs the server gave up on", timeout=20)
    api.wait_online("node-a")
    faults.check(api)
    executions = faults.ledger.executions()
    assert [e.how for rid in running for e in executions[rid]] == ["stop", "stop"]
    assert all(len(executions[rid]) == 1 for rid in unstarted), "node-a started none of its stale assignments"
