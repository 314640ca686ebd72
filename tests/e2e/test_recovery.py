"""Recovery end to end: real nodemanagers that die, freeze and come back, against a real apiserver
deployed both ways (`backend`: SQLite with the in-process queue; PostgreSQL with Redis Streams).

- A node killed with SIGKILL and left down past NODE_OFFLINE_AFTER + RUN_LOST_GRACE: its running
  run becomes `lost`; a run placed on it and never claimed goes back to the queue and runs on
  another node.
- The node back after that: the run the server gave up on is stopped there and the node logs why,
  by the heartbeat's `stop_runs` both when the daemon restarts (its first heartbeat lists the runs
  it finds in its runtime) and when a frozen daemon thaws;
  a run that waited there for a slot and was requeued meanwhile runs there when placed there again.
- A cancel of a run its node claimed and started: `cancelled`, its process or container stopped.

Runs execute as local processes (RUNTIME=process) and, where the path is about what runs on the
node, as Docker containers too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from nodemanager.runtime import PROCESS_STATE_DIR
from nodemanager.runtime.process import ProcessRuntime
from tests.support.api import TERMINAL, Api
from tests.support.images import TEST_LABELS
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

LIVENESS = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "3", "RUN_LOST_GRACE": "2"}
GIVE_UP_AFTER = 5  # seconds of silence: NODE_OFFLINE_AFTER + RUN_LOST_GRACE
LOST_WITHIN = GIVE_UP_AFTER + 25.0  # + a pass of the reaper (every 2 s) and a loaded machine's slack
SLEEPER = ["sh", "-c", "echo up; sleep 300"]
# containers carry this pytest session's label: another session's clean-up leaves them alone
DOCKER_NODE_ENV = {
    "RUNTIME": "docker",
    "CONTAINER_LABELS": ",".join(f"{key}={value}" for key, value in TEST_LABELS.items()),
}


class Workloads(Protocol):
    """What a run is on the node's machine: a process group, or a container."""

    image: str
    node_env: dict[str, str]

    def running(self, node_id: str, run_id: str) -> bool: ...

    def gone(self, node_id: str, run_id: str) -> bool: ...


class Processes:
    """Runs of RUNTIME=process: the command's process (its pid in the runtime's state directory)."""

    image = "ignored"
    node_env = {"RUNTIME": "process"}

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._pids: dict[str, int] = {}

    def _state_root(self, node_id: str) -> Path:
        return self.workdir / f"workspaces-{node_id}" / PROCESS_STATE_DIR

    def running(self, node_id: str, run_id: str) -> bool:
        try:
            started = json.loads((self._state_root(node_id) / run_id / "started.json").read_text())
        except (OSError, ValueError):
            return False
        self._pids[run_id] = int(started["pid"])
        return _alive(self._pids[run_id])

    def gone(self, node_id: str, run_id: str) -> bool:
        """Its process has ended and the runtime has forgotten the run (state directory removed)."""
        assert run_id in self._pids, f"run {run_id} was never seen running"
        return not _alive(self._pids[run_id]) and not (self._state_root(node_id) / run_id).exists()

    def remove_all(self) -> None:
        """Teardown: kill what the nodes left running (a lost run whose node never came back)."""

        async def remove(state_root: Path) -> None:
            runtime = ProcessRuntime("teardown", state_root)
            for handle in await runtime.list():
                await runtime.remove(handle.run_id)

        for state_root in self.workdir.glob(f"workspaces-*/{PROCESS_STATE_DIR}"):
            asyncio.run(remove(state_root))


class Containers:
    """Runs of RUNTIME=docker: the run's container on the local engine."""

    node_env = DOCKER_NODE_ENV

    def __init__(self, client: Any, image: str) -> None:
        self.client = client
        self.image = image

    def _containers(self, node_id: str, run_id: str) -> list[Any]:
        labels = [f"agentnodes.node_id={node_id}", f"agentnodes.run_id={run_id}"]
        return list(self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))

    def running(self, node_id: str, run_id: str) -> bool:
        return [c.status for c in self._containers(node_id, run_id)] == ["running"]

    def gone(self, node_id: str, run_id: str) -> bool:
        return not self._containers(node_id, run_id)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"  # a zombie has ended


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def workloads(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workloads]:
    if request.param == "docker":
        yield Containers(request.getfixturevalue("docker_client"), request.getfixturevalue("test_image"))
        return  # docker_client removes this session's containers
    processes = Processes(tmp_path)
    yield processes
    processes.remove_all()


@pytest.fixture
def server(
    request: pytest.FixtureRequest, backend: dict[str, str], tmp_path: Path
) -> Iterator[ServerProcess]:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    with ServerProcess(env={**backend, **LIVENESS}, data_dir=data_dir) as process:
        yield process
        request.node.add_report_section("teardown", "apiserver log", process.log())


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


NodeFactory = Callable[..., NodeManagerProcess]


@pytest.fixture
def start_node(
    request: pytest.FixtureRequest, server: ServerProcess, api: Api, workloads: Workloads, tmp_path: Path
) -> Iterator[NodeFactory]:
    """`start_node(node_id, **env)`: a nodemanager, once the server has it online. Starting an id
    again is a restart: same workspace and state, its log appended to the same file."""
    started: list[NodeManagerProcess] = []

    def start(node_id: str, **env: str) -> NodeManagerProcess:
        node = NodeManagerProcess(server.base_url, tmp_path, node_id, {**workloads.node_env, **env})
        started.append(node.start())
        api.wait_node(node_id)
        return node

    yield start
    for node in started:
        node.stop()
    for node in {n.log_path: n for n in started}.values():
        request.node.add_report_section("teardown", f"nodemanager {node.node_id} log", node.log())


@pytest.mark.slow
@pytest.mark.parametrize("workloads", ["process"], indirect=True)
def test_a_killed_node_loses_its_running_run_and_its_unclaimed_run_runs_on_another_node(
    api: Api, start_node: NodeFactory, workloads: Workloads
) -> None:
    node_a = start_node("node-a", MAX_CONCURRENT="1")
    running = api.submit(workloads.image, SLEEPER)
    api.wait_log(running, "up")
    assert api.run(running)["node_id"] == "node-a"
    # the admin gives node-a a second slot it does not have: the server places a second run there,
    # and the node keeps it waiting for a free slot, placed and never claimed
    patched = api.http.patch("/api/v1/nodes/node-a", json={"max_concurrent": 2})
    assert patched.status_code == 200, patched.text
    unclaimed = api.submit(workloads.image, ["sh", "-c", "echo ran"])
    assert api.wait_status(unclaimed, {"scheduled"})["node_id"] == "node-a"
    node_a.wait_for_log(f"run {unclaimed}: all slots busy; queued locally")
    assert "claimed" not in api.event_types(unclaimed)

    node_a.kill()
    start_node("node-b")  # online before the server gives up on node-a: it gets nothing until then

    lost = api.wait_status(running, TERMINAL, LOST_WITHIN)
    assert (lost["status"], lost["node_id"]) == ("lost", "node-a")
    assert lost["message"] == f"node node-a sent no heartbeat for more than {GIVE_UP_AFTER}s"
    assert lost["finished_at"] is not None
    done = api.wait_status(unclaimed, TERMINAL, LOST_WITHIN)
    assert (done["status"], done["node_id"], done["attempts"]) == ("succeeded", "node-b", 2)
    assert api.log_texts(unclaimed) == ["ran"]
    types = api.event_types(unclaimed)
    assert (types.count("requeued"), types.count("claimed"), types.count("started")) == (1, 1, 1)
    assert types.index("requeued") < types.index("claimed")  # claimed once: by node-b
    (requeued,) = [e for e in api.events(unclaimed) if e["type"] == "requeued"]
    assert requeued["data"]["node_id"] == "node-a"
    assert "before starting it; queued again" in requeued["data"]["reason"]
    node_a_row = api.node("node-a")
    assert (node_a_row["status"], node_a_row["running"]) == ("offline", 0)
    assert api.node("node-b")["running"] == 0
    # nothing on node-a's machine stopped the lost run: its daemon is down (see the next tests)
    assert workloads.running("node-a", running)


@pytest.mark.slow
def test_a_killed_node_that_comes_back_stops_the_run_the_server_gave_up_on(
    api: Api, start_node: NodeFactory, workloads: Workloads
) -> None:
    node = start_node("node-a")
    run_id = api.submit(workloads.image, SLEEPER)
    api.wait_log(run_id, "up")
    assert workloads.running("node-a", run_id)

    node.kill()
    assert api.wait_status(run_id, TERMINAL, LOST_WITHIN)["status"] == "lost"
    assert workloads.running("node-a", run_id)  # its daemon is down: nothing stopped it
    recorded = api.event_types(run_id)

    back = start_node("node-a")  # the same node restarted: it finds the run in its runtime

    wait_until(lambda: workloads.gone("node-a", run_id), "the lost run stopped and removed", timeout=30)
    back.wait_for_log(f"run {run_id}: stopping its container: the server no longer expects it here")
    assert api.run(run_id)["status"] == "lost"
    assert api.event_types(run_id) == recorded  # stopped without reporting anything for it
    assert api.node("node-a")["running"] == 0


@pytest.mark.slow
def test_a_frozen_node_that_thaws_is_told_to_stop_the_run_the_server_gave_up_on(
    api: Api, start_node: NodeFactory, workloads: Workloads
) -> None:
    node = start_node("node-a")
    run_id = api.submit(workloads.image, SLEEPER)
    api.wait_log(run_id, "up")
    assert workloads.running("node-a", run_id)

    node.pause()  # SIGSTOP: no heartbeats, while the run goes on
    assert api.wait_status(run_id, TERMINAL, LOST_WITHIN)["status"] == "lost"
    assert workloads.running("node-a", run_id)
    recorded = api.event_types(run_id)
    node.resume()  # its next heartbeat lists the run, and the answer's stop_runs names it

    wait_until(lambda: workloads.gone("node-a", run_id), "the lost run stopped and removed", timeout=30)
    node.wait_for_log(f"run {run_id}: stopping its container: the server no longer expects it here")
    api.wait_node("node-a")
    assert api.run(run_id)["status"] == "lost"
    assert api.event_types(run_id) == recorded
    # back in service: it takes new work
    again = api.submit(workloads.image, ["sh", "-c", "echo back"])
    done = api.wait_status(again, TERMINAL)
    assert (done["status"], done["node_id"]) == ("succeeded", "node-a")
    assert api.node("node-a")["running"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("workloads", ["process"], indirect=True)
def test_a_run_requeued_while_its_node_was_frozen_runs_there_when_placed_there_again(
    api: Api, start_node: NodeFactory, workloads: Workloads
) -> None:
    node = start_node("node-a", MAX_CONCURRENT="1")
    running = api.submit(workloads.image, SLEEPER)
    api.wait_log(running, "up")
    assert workloads.running("node-a", running)
    patched = api.http.patch("/api/v1/nodes/node-a", json={"max_concurrent": 2})
    assert patched.status_code == 200, patched.text
    waiting = api.submit(workloads.image, ["sh", "-c", "echo ran"])
    assert api.wait_status(waiting, {"scheduled"})["node_id"] == "node-a"
    node.wait_for_log(f"run {waiting}: all slots busy; queued locally")

    node.pause()  # silent past the limit: the running run is lost, the waiting one requeued
    assert api.wait_status(running, TERMINAL, LOST_WITHIN)["status"] == "lost"
    api.wait_status(waiting, {"queued"})
    assert "requeued" in api.event_types(waiting)
    node.resume()  # it lets both go (stop_runs); the waiting run is placed on it again, the only node

    done = api.wait_status(waiting, TERMINAL)
    assert (done["status"], done["node_id"], done["attempts"]) == ("succeeded", "node-a", 2)
    assert api.log_texts(waiting) == ["ran"]
    assert api.event_types(waiting).count("started") == 1
    wait_until(lambda: workloads.gone("node-a", running), "the lost run stopped and removed", timeout=30)
    assert api.node("node-a")["running"] == 0


def test_cancel_of_a_claimed_and_started_run_stops_it(
    api: Api, start_node: NodeFactory, workloads: Workloads
) -> None:
    start_node("node-a")
    run_id = api.submit(workloads.image, SLEEPER)
    api.wait_log(run_id, "up")
    assert api.run(run_id)["status"] == "running"
    assert {"claimed", "started"} <= set(api.event_types(run_id))
    assert workloads.running("node-a", run_id)

    response = api.http.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code in (200, 202), response.text

    run = api.wait_status(run_id, TERMINAL, timeout=30)
    assert run["status"] == "cancelled"
    assert not workloads.running("node-a", run_id)  # stopped before the node reported the end
    wait_until(lambda: workloads.gone("node-a", run_id), "the cancelled run removed", timeout=15)
    types = api.event_types(run_id)
    assert (types[-1], types.count("cancelled")) == ("cancelled", 1)
    assert api.log_texts(run_id) == ["up"]
    assert api.node("node-a")["running"] == 0
