"""Runs that cannot hurt the fleet, end to end: a real apiserver, real nodemanagers, the real
Docker engine and real processes.

A run past its deadline is stopped by its node (SIGTERM, SIGKILL after STOP_GRACE) and ends
`failed` with reason `deadline_exceeded`; a container over its memory is OOM-killed and ends
`oom_killed`; a process run over its memory (RLIMIT_AS: the allocation fails inside it, and the
kernel records no OOM kill) ends `exit_nonzero`. Containers run sandboxed, a sandbox the process
runtime cannot give fails the run without blaming the node, and nodes report what they can
allocate and how they hold memory.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nodemanager.runtime import PROCESS_STATE_DIR
from tests.support.api import TERMINAL, Api
from tests.support.images import TEST_LABELS
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

STOP_GRACE = 2.0  # the nodemanagers' (tests.support.nodemanager)
DEADLINE = 2
# a container's create, stop and removal, and the reports, on a busy 2-core machine
MARGIN = 15.0
NODE_ENV = {"CONTAINER_LABELS": ",".join(f"{key}={value}" for key, value in TEST_LABELS.items())}
DOCKER_HOG = ["sh", "-c", "head -c 200m /dev/zero | tail"]  # busybox tail holds the whole line
PYTHON_HOG = [sys.executable, "-c", "block = bytearray(512 * 1024 * 1024)"]
READ_PIDS_MAX = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"

NodeFactory = Callable[..., NodeManagerProcess]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "server").mkdir()
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30"}
    with ServerProcess(env=env, data_dir=tmp_path / "server") as process:
        yield process


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


@pytest.fixture
def start_node(
    request: pytest.FixtureRequest, server: ServerProcess, api: Api, tmp_path: Path
) -> Iterator[NodeFactory]:
    started: list[NodeManagerProcess] = []

    def start(runtime: str, node_id: str = "node-a", **env: str) -> NodeManagerProcess:
        node = NodeManagerProcess(server.base_url, tmp_path, node_id, {**NODE_ENV, "RUNTIME": runtime, **env})
        started.append(node.start())
        api.wait_node(node_id)
        return node

    yield start
    for node in started:
        node.stop()
        request.node.add_report_section("teardown", f"nodemanager {node.node_id} log", node.log())


def seconds_between(run: dict[str, Any], start: str, end: str) -> float:
    return (datetime.fromisoformat(run[end]) - datetime.fromisoformat(run[start])).total_seconds()


def containers_of(docker_client: Any, run_id: str) -> list[Any]:
    labels = ["agentnodes.test=1", f"agentnodes.run_id={run_id}"]
    return list(docker_client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))


# ------------------------------------------------------------------ docker


@pytest.mark.docker
def test_a_container_past_its_deadline_is_stopped_and_fails_deadline_exceeded(
    start_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    start_node("docker")
    run_id = api.submit(test_image, ["sleep", "60"], deadline_seconds=DEADLINE)

    run = api.wait_status(run_id, TERMINAL, timeout=DEADLINE + STOP_GRACE + MARGIN + 20)

    assert (run["status"], run["reason"]) == ("failed", "deadline_exceeded")
    assert run["exit_code"] == 137  # sleep as PID 1 ignores SIGTERM: killed after STOP_GRACE
    assert DEADLINE <= seconds_between(run, "started_at", "finished_at") <= DEADLINE + STOP_GRACE + MARGIN
    wait_until(lambda: not containers_of(docker_client, run_id), "the container removed", timeout=10)


@pytest.mark.docker
def test_a_container_over_its_memory_fails_oom_killed(
    start_node: NodeFactory, api: Api, test_image: str
) -> None:
    start_node("docker")
    run_id = api.submit(test_image, DOCKER_HOG, resources={"memory_mb": 32})

    run = api.wait_status(run_id, TERMINAL)

    assert (run["status"], run["reason"], run["exit_code"]) == ("failed", "oom_killed", 137)
    assert run["resources"]["memory_mb"] == 32


@pytest.mark.docker
def test_a_container_runs_sandboxed_as_its_run_asks(
    start_node: NodeFactory, api: Api, test_image: str
) -> None:
    start_node("docker", DOCKER_NETWORK="host")
    script = (
        f"grep NoNewPrivs /proc/self/status; echo pids.max=$({READ_PIDS_MAX}); ls /sys/class/net; "
        "touch /root-file 2>/dev/null || echo root-refused; echo ok > /tmp/t && echo tmp-ok"
    )
    sandbox = {"network": "none", "read_only_rootfs": True, "pids_limit": 77}
    run_id = api.submit(test_image, ["sh", "-c", script], sandbox=sandbox)

    run = api.wait_status(run_id, TERMINAL)

    assert (run["status"], run["reason"]) == ("succeeded", "succeeded")
    lines = [" ".join(line.split()) for line in api.log_texts(run_id)]
    assert lines == ["NoNewPrivs: 1", "pids.max=77", "lo", "root-refused", "tmp-ok"]


@pytest.mark.docker
def test_a_docker_node_reports_its_resources_and_how_it_holds_memory(
    start_node: NodeFactory, api: Api, docker_client: Any
) -> None:
    start_node("docker", "node-detected")
    start_node("docker", "node-set", NODE_CPUS="1.5", NODE_MEMORY_MB="3000")
    engine = docker_client.info()

    detected, configured = api.node("node-detected"), api.node("node-set")

    assert detected["capacity"]["cpus"] == engine["NCPU"]
    assert detected["capacity"]["memory_mb"] == engine["MemTotal"] // (1024 * 1024)
    assert (configured["capacity"]["cpus"], configured["capacity"]["memory_mb"]) == (1.5, 3000)
    assert detected["info"]["memory_enforcement"] == "docker"


# ------------------------------------------------------------------ processes


def test_a_process_past_its_deadline_is_stopped_and_fails_deadline_exceeded(
    start_node: NodeFactory, api: Api, tmp_path: Path
) -> None:
    start_node("process")
    run_id = api.submit("ignored", ["sleep", "60"], deadline_seconds=DEADLINE)

    run = api.wait_status(run_id, TERMINAL, timeout=DEADLINE + STOP_GRACE + MARGIN + 20)

    assert (run["status"], run["reason"]) == ("failed", "deadline_exceeded")
    assert run["exit_code"] == 128 + 15  # sleep honours SIGTERM
    assert DEADLINE <= seconds_between(run, "started_at", "finished_at") <= DEADLINE + STOP_GRACE + MARGIN
    state_dir = tmp_path / "workspaces-node-a" / PROCESS_STATE_DIR / run_id
    wait_until(lambda: not state_dir.exists(), "the run forgotten by the runtime", timeout=10)


def test_a_process_over_its_memory_exits_nonzero_under_rlimit(start_node: NodeFactory, api: Api) -> None:
    start_node("process")
    run_id = api.submit("ignored", PYTHON_HOG, resources={"memory_mb": 64})

    run = api.wait_status(run_id, TERMINAL)

    # RLIMIT_AS (this machine has no delegable cgroup v2): the allocation fails inside the run,
    # which exits with its own code; no kernel OOM kill is recorded, so none is claimed
    assert api.node("node-a")["info"]["memory_enforcement"] == "rlimit"
    assert (run["status"], run["reason"], run["exit_code"]) == ("failed", "exit_nonzero", 1)
    assert "MemoryError" in api.log_texts(run_id)


def test_a_sandbox_processes_cannot_give_fails_the_run_not_the_node(
    start_node: NodeFactory, api: Api
) -> None:
    start_node("process")
    run_ids = [api.submit("ignored", ["true"], sandbox={"network": "none"}) for _ in range(3)]

    runs = [api.wait_status(run_id, TERMINAL) for run_id in run_ids]

    assert {(run["status"], run["reason"]) for run in runs} == {("failed", "start_failed")}
    assert all("cannot confine" in (run["message"] or "") for run in runs)
    node = api.node("node-a")
    assert node["schedulable"], node["conditions"]  # not quarantined for the runs' requests
    fine = api.wait_status(api.submit("ignored", ["true"]), TERMINAL)
    assert (fine["status"], fine["node_id"]) == ("succeeded", "node-a")


# ------------------------------------------------------------------ both


@pytest.mark.parametrize("runtime", [pytest.param("docker", marks=pytest.mark.docker), "process"])
def test_a_restarted_node_keeps_the_deadline_of_a_run_it_adopts(
    request: pytest.FixtureRequest, start_node: NodeFactory, api: Api, runtime: str
) -> None:
    image = request.getfixturevalue("test_image") if runtime == "docker" else "ignored"
    node = start_node(runtime)
    deadline, down_until = 10, 8  # seconds after the run's start
    run_id = api.submit(image, ["sh", "-c", "echo up; sleep 60"], deadline_seconds=deadline)
    api.wait_log(run_id, "up")
    node.kill()  # no flush, no goodbye: the run keeps running without its daemon
    started_at = datetime.fromisoformat(api.run(run_id)["started_at"])
    # elapsed time is the point: the daemon stays down for most of the run's deadline
    time.sleep(max(0.0, down_until - (datetime.now(UTC) - started_at).total_seconds()))

    node.start()  # adopts the run: its deadline counts from the run's start, not from now
    run = api.wait_status(run_id, TERMINAL, timeout=deadline + STOP_GRACE + MARGIN + 20)

    assert (run["status"], run["reason"]) == ("failed", "deadline_exceeded")
    # counted from the restart it would end past down_until + deadline + STOP_GRACE (20 s)
    assert seconds_between(run, "started_at", "finished_at") < deadline + STOP_GRACE + 4
    assert "adopting" in node.log()
