"""A broken node among healthy ones, with real nodemanagers: it must not eat the queue.

One whose workspace cannot be written reports it and takes no new runs until it is repaired;
one whose Docker engine refuses every start (a network it names is missing) sends each run
back to the queue, which places it elsewhere, and is quarantined after a few such failures.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_nodemanager import SESSION_NODE_ENV
from tests.support.nodectl import base_env, run
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import eventually

TERMINAL = {"succeeded", "failed", "cancelled", "lost"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "NODE_HEARTBEAT_INTERVAL": "1",
        "NODE_OFFLINE_AFTER": "30",
        "QUARANTINE_AFTER": "2",
        "QUARANTINE_BACKOFF": "6",
    }
    (tmp_path / "server").mkdir()
    with ServerProcess(env=env, data_dir=tmp_path / "server") as process:
        yield process


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


NodeFactory = Callable[..., NodeManagerProcess]


@pytest.fixture
def nodes(
    request: pytest.FixtureRequest, server: ServerProcess, http: httpx.Client, tmp_path: Path
) -> Iterator[NodeFactory]:
    started: list[NodeManagerProcess] = []

    def start(node_id: str, **env: str) -> NodeManagerProcess:
        node = NodeManagerProcess(server.base_url, tmp_path, node_id, {**SESSION_NODE_ENV, **env}).start()
        started.append(node)
        eventually(lambda: node_of(http, node_id).get("status") == "online", timeout=20)
        return node

    yield start
    for node in started:
        node.stop()
        request.node.add_report_section("teardown", f"nodemanager {node.node_id} log", node.log())


def node_of(http: httpx.Client, node_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/nodes/{node_id}")
    return dict(response.json()) if response.status_code == 200 else {}


def submit(http: httpx.Client, command: list[str], image: str = "ignored") -> str:
    response = http.post("/api/v1/runs", json={"image": image, "command": command})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def finished(http: httpx.Client, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = dict(http.get(f"/api/v1/runs/{run_id}").json())
        return run if run["status"] in TERMINAL else None

    return eventually(check, timeout=timeout, interval=0.2)


def condition(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in node.get("conditions", []) if c["type"] == kind), None)


def test_a_node_whose_workspace_breaks_takes_no_runs_until_repaired(
    nodes: NodeFactory, http: httpx.Client, server: ServerProcess, tmp_path: Path
) -> None:
    workspace = tmp_path / "broken-workspace"
    nodes("a-broken", RUNTIME="process", WORKSPACE_DIR=str(workspace), STATE_DIR=str(tmp_path / "state-a"))
    nodes("b-healthy", RUNTIME="process")
    assert (condition(node_of(http, "a-broken"), "workspace") or {}).get("ok") is True

    shutil.rmtree(workspace)
    workspace.write_text("a file where the workspace directory should be")

    def held_back() -> dict[str, Any] | None:
        node = node_of(http, "a-broken")
        return node if node["schedulable"] is False else None

    broken = eventually(held_back, timeout=15)
    assert broken["status"] == "online"
    workspace_condition = condition(broken, "workspace")
    assert workspace_condition is not None
    assert workspace_condition["ok"] is False
    assert str(workspace) in workspace_condition["message"]

    cli = base_env(server.base_url, tmp_path / "nodectl-config")
    shown = run(cli, "nodes", "get", "a-broken")
    assert "online,unschedulable" in shown.stdout
    assert "Condition workspace" in shown.stdout
    header, *lines = run(cli, "nodes", "list", "-o", "wide").stdout.splitlines()
    conditions = header.split("\t").index("CONDITIONS")
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert rows["a-broken"][1] == "online,unschedulable"
    assert rows["a-broken"][conditions] == "workspace"
    assert rows["b-healthy"][conditions] == "ok"

    runs = [submit(http, ["sh", "-c", "echo done"]) for _ in range(12)]
    assert {finished(http, run_id)["node_id"] for run_id in runs} == {"b-healthy"}
    assert all(finished(http, run_id)["status"] == "succeeded" for run_id in runs)

    workspace.unlink()  # repaired: the next heartbeat says so, and the node takes runs again
    eventually(lambda: node_of(http, "a-broken")["schedulable"] is True, timeout=15)
    later = [submit(http, ["sh", "-c", "sleep 1"]) for _ in range(2)]
    assert {finished(http, run_id)["node_id"] for run_id in later} == {"a-broken", "b-healthy"}


def test_a_node_that_cannot_start_containers_is_routed_around_and_quarantined(
    nodes: NodeFactory, http: httpx.Client, server: ServerProcess, docker_client: Any, test_image: str
) -> None:
    # `a-…` wins ties on the node id: without the requeue every first try would land there
    nodes("a-no-network", RUNTIME="docker", DOCKER_NETWORK="agentnodes-test-missing-network")
    nodes("b-healthy", RUNTIME="docker", MAX_CONCURRENT="8")

    runs = [submit(http, ["sh", "-c", "sleep 2; echo ran"], image=test_image) for _ in range(4)]

    def quarantined() -> dict[str, Any] | None:
        node = node_of(http, "a-no-network")
        return node if condition(node, "quarantine") is not None else None

    held = eventually(quarantined, timeout=30)
    assert held["status"] == "online"
    assert held["schedulable"] is False
    assert "no new runs until" in (condition(held, "quarantine") or {})["message"]

    outcomes = [finished(http, run_id) for run_id in runs]
    assert [run["status"] for run in outcomes] == ["succeeded"] * 4
    assert {run["node_id"] for run in outcomes} == {"b-healthy"}
    assert max(run["attempts"] for run in outcomes) == 2  # each at most once on the broken node
    tried = [
        run_id
        for run_id in runs
        if any(e["type"] == "requeued" for e in http.get(f"/api/v1/runs/{run_id}/events").json()["items"])
    ]
    # the broken node, empty again after each failure, is the least loaded until QUARANTINE_AFTER=2
    assert len(tried) == 2
    events = http.get(f"/api/v1/runs/{tried[0]}/events").json()["items"]
    requeued = next(e for e in events if e["type"] == "requeued")
    assert requeued["data"]["node_id"] == "a-no-network"
    assert "agentnodes-test-missing-network" in requeued["data"]["reason"]
    assert not docker_client.containers.list(
        all=True, filters={"label": "agentnodes.node_id=a-no-network"}, ignore_removed=True
    )

    # QUARANTINE_BACKOFF=6: lifted by itself, with nothing done to the node
    lifted = eventually(lambda: node_of(http, "a-no-network")["schedulable"] is True, timeout=20)
    assert lifted
    assert condition(node_of(http, "a-no-network"), "quarantine") is None
