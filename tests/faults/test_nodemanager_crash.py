"""Scenario 4: a nodemanager is SIGKILLed while its Docker containers run, then started again:
(a) within the offline window its runs go on and finish once; (b) after NODE_OFFLINE_AFTER +
RUN_LOST_GRACE its running runs are lost, those it never started are run elsewhere once, and
the old containers are stopped when it returns."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.harness import Api, Faults
from tests.support.wait import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.docker]


def _running_everywhere(api: Api, faults: Faults, run_ids: list[str]) -> bool:
    runs = api.runs()
    return all(runs[rid]["status"] == "running" and faults.ledger.started(rid) for rid in run_ids)


def test_nodemanager_killed_and_back_within_the_offline_window(docker_client: Any, faults: Faults) -> None:
    server = faults.apiserver()
    api = faults.api(server)
    node = faults.node(server, "node-a", "docker")
    first = [api.submit(faults.ledger.command(4)) for _ in range(3)]
    wait_until(lambda: _running_everywhere(api, faults, first), "the first runs running", timeout=20)

    node.kill()
    assert node.running_runs() == set(first), "the containers outlive their nodemanager"
    later = api.submit(faults.ledger.command(1))  # placed on the node while its daemon is down
    node.start()

    runs = api.wait_settled()
    faults.check(api)
    assert {runs[rid]["status"] for rid in [*first, later]} == {"succeeded"}
    assert {runs[rid]["node_id"] for rid in [*first, later]} == {"node-a"}
    assert all(run["attempts"] == 1 for run in runs.values())
    wait_until(lambda: not node.running_runs(), "the finished containers gone")


def test_nodemanager_killed_past_the_lost_window(docker_client: Any, faults: Faults) -> None:
    server = faults.apiserver()
    api = faults.api(server)
    node_a = faults.node(server, "node-a", "docker")
    running = [api.submit(faults.ledger.command(60)) for _ in range(2)]
    wait_until(lambda: _running_everywhere(api, faults, running), "two runs running on node-a", timeout=20)

    node_a.kill()
    # placed on node-a while it still counts as online, never claimed by it
    unstarted = [api.submit(faults.ledger.command(1)) for _ in range(2)]
    for run_id in unstarted:
        assert api.wait_status(run_id, {"scheduled"}, timeout=5)["node_id"] == "node-a"
    faults.node(server, "node-b", "docker")

    for run_id in running:
        lost = api.wait_status(run_id, {"lost"}, timeout=20)
        assert "node-a sent no heartbeat" in lost["message"]
    for run_id in unstarted:
        done = api.wait_status(run_id, {"succeeded"}, timeout=20)
        assert (done["node_id"], done["attempts"]) == ("node-b", 2)
    assert node_a.running_runs() == set(running), "the lost runs' containers still run until node-a returns"

    node_a.start()
    wait_until(lambda: not node_a.running_runs(), "node-a stops the runs the server gave up on", timeout=20)
    api.wait_online("node-a")
    faults.check(api)
    executions = faults.ledger.executions()
    assert [e.how for rid in running for e in executions[rid]] == ["stop", "stop"]
    wait_until(lambda: not _containers(docker_client, "node-a"), "node-a's containers removed")


def _containers(docker_client: Any, node_id: str) -> list[Any]:
    """Every container of the node, running or not."""
    filters = {"label": f"agentnodes.node_id={node_id}"}
    return list(docker_client.containers.list(all=True, filters=filters, ignore_removed=True))
