"""End to end: a real apiserver, real `python -m nodemanager` processes and the real Docker engine.

Nothing is mocked. Containers are labelled `agentnodes.test=1` and removed by label.
The process-runtime variants run the same scenarios without Docker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import RUN_TIMEOUT, TERMINAL, Api
from tests.support.images import TEST_LABELS
from tests.support.nodemanager import REPO_ROOT, NodeManagerProcess
from tests.support.proxies import SelfSignedCert, TargetServer
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

# containers of the nodemanagers under test carry this session's label, so the per-test
# cleanup of another pytest process on the same engine leaves them alone
SESSION_NODE_ENV = {"CONTAINER_LABELS": ",".join(f"{key}={value}" for key, value in TEST_LABELS.items())}
# what tests.support.docker does at every test of another pytest process using the engine
OTHER_SESSION_CLEANUP = (
    "import docker; from tests.support.docker import remove_test_containers; "
    "remove_test_containers(docker.from_env())"
)


NodeFactory = Callable[..., NodeManagerProcess]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(
        env={"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30"}, data_dir=tmp_path
    ) as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


def _node_factory(
    request: pytest.FixtureRequest, server: ServerProcess, api: Api, tmp_path: Path, runtime: str
) -> Iterator[NodeFactory]:
    started: list[NodeManagerProcess] = []

    def start(node_id: str = "node-a", **env: str) -> NodeManagerProcess:
        node = NodeManagerProcess(
            server.base_url, tmp_path, node_id, {**SESSION_NODE_ENV, "RUNTIME": runtime, **env}
        )
        started.append(node.start())
        api.wait_node(node_id)
        return node

    yield start
    for node in started:
        node.stop()
    for node in {n.log_path: n for n in started}.values():
        request.node.add_report_section("teardown", f"nodemanager {node.node_id} log", node.log())


@pytest.fixture
def docker_node(
    request: pytest.FixtureRequest, server: ServerProcess, api: Api, tmp_path: Path, docker_client: Any
) -> Iterator[NodeFactory]:
    yield from _node_factory(request, server, api, tmp_path, "docker")


@pytest.fixture
def process_node(
    request: pytest.FixtureRequest, server: ServerProcess, api: Api, tmp_path: Path
) -> Iterator[NodeFactory]:
    yield from _node_factory(request, server, api, tmp_path, "process")


def _containers(docker_client: Any, node_id: str, **filters: str) -> list[Any]:
    labels = ["agentnodes.test=1", f"agentnodes.node_id={node_id}"]
    return list(
        docker_client.containers.list(all=True, filters={"label": labels, **filters}, ignore_removed=True)
    )


def _printed(docker_client: Any, node_id: str, text: str) -> bool:
    """Whether the node's container has printed the line `text` (its own log, not the server's)."""
    return any(
        text in container.logs().decode(errors="replace").splitlines()
        for container in _containers(docker_client, node_id)
    )


# ------------------------------------------------------------------ docker


@pytest.mark.docker
def test_output_becomes_log_events_and_exit_code_decides_status(
    docker_node: NodeFactory, api: Api, test_image: str
) -> None:
    docker_node()
    ok = api.submit(test_image, ["sh", "-c", "echo hello; echo oops >&2; echo bye"])
    bad = api.submit(test_image, ["sh", "-c", "echo failing; exit 3"])

    ok_run = api.wait_status(ok, TERMINAL)
    bad_run = api.wait_status(bad, TERMINAL)

    assert (ok_run["status"], ok_run["exit_code"]) == ("succeeded", 0)
    assert (bad_run["status"], bad_run["exit_code"]) == ("failed", 3)
    logs = [(e["data"]["stream"], e["data"]["text"]) for e in api.events(ok) if e["type"] == "log"]
    assert [text for stream, text in logs if stream == "stdout"] == ["hello", "bye"]
    assert [text for stream, text in logs if stream == "stderr"] == ["oops"]
    assert all(e["data"]["ts"] for e in api.events(ok) if e["type"] == "log")
    assert api.log_texts(bad) == ["failing"]
    assert ok_run["container_id"]


@pytest.mark.docker
def test_a_flood_of_output_arrives_complete_and_in_order(
    docker_node: NodeFactory, api: Api, test_image: str
) -> None:
    docker_node()
    run_id = api.submit(test_image, ["seq", "1", "5000"])

    assert api.wait_status(run_id, TERMINAL)["status"] == "succeeded"
    assert api.log_texts(run_id) == [str(i) for i in range(1, 5001)]


@pytest.mark.docker
def test_env_config_and_proxy_reach_the_container(
    docker_node: NodeFactory, api: Api, test_image: str
) -> None:
    docker_node()
    config = {
        "proxy": {
            "http_proxy": "http://127.0.0.1:3128",
            "https_proxy": "http://127.0.0.1:3129",
            "no_proxy": "",
        },
        "env": {"CUSTOM_VAR": "from-node", "OVERRIDDEN": "node"},
    }
    response = api.http.put("/api/v1/nodes/node-a/env-config", json=config)
    assert response.status_code == 200, response.text

    run_id = api.submit(test_image, ["env"], env={"OVERRIDDEN": "run"})
    run = api.wait_status(run_id, TERMINAL)

    assert run["status"] == "succeeded"
    env_lines = set(api.log_texts(run_id))
    assert {
        "CUSTOM_VAR=from-node",
        "OVERRIDDEN=run",
        "HTTP_PROXY=http://127.0.0.1:3128",
        "http_proxy=http://127.0.0.1:3128",
        "HTTPS_PROXY=http://127.0.0.1:3129",
        "https_proxy=http://127.0.0.1:3129",
    } <= env_lines
    assert not any(line.lower().startswith("no_proxy=") for line in env_lines)  # unset: not injected


@pytest.mark.docker
def test_cancel_stops_a_sleeping_container(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    docker_node()
    run_id = api.submit(test_image, ["sh", "-c", "echo sleeping; sleep 300"])
    api.wait_log(run_id, "sleeping")

    response = api.http.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code in (200, 202), response.text
    run = api.wait_status(run_id, TERMINAL, timeout=20)

    assert run["status"] == "cancelled"
    wait_until(lambda: not _containers(docker_client, "node-a"), "the cancelled container is removed")


@pytest.mark.docker
def test_killed_nodemanager_readopts_its_running_container(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    node = docker_node()
    script = "for i in $(seq 1 30); do echo line $i; sleep 0.2; done"
    run_id = api.submit(test_image, ["sh", "-c", script])
    api.wait_log(run_id, "line 3")

    node.kill()
    assert [c.status for c in _containers(docker_client, "node-a")] == ["running"]
    # the container keeps printing while nobody listens
    wait_until(lambda: _printed(docker_client, "node-a", "line 8"), "output while the daemon is down")
    docker_node()
    run = api.wait_status(run_id, TERMINAL)

    assert (run["status"], run["exit_code"]) == ("succeeded", 0)
    assert api.log_texts(run_id) == [f"line {i}" for i in range(1, 31)]
    types = [e["type"] for e in api.events(run_id)]
    assert types.count("exited") == 1
    assert types.count("started") == 1
    wait_until(lambda: not _containers(docker_client, "node-a"), "the finished container is removed")


@pytest.mark.docker
def test_max_concurrent_is_never_exceeded(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    docker_node(MAX_CONCURRENT="2")
    run_ids = [api.submit(test_image, ["sleep", "1"]) for _ in range(5)]

    most = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        most = max(most, len(_containers(docker_client, "node-a", status="running")))
        if all(api.run(r)["status"] in TERMINAL for r in run_ids):
            break
        time.sleep(0.05)

    assert [api.run(r)["status"] for r in run_ids] == ["succeeded"] * 5
    assert 1 <= most <= 2


@pytest.mark.docker
def test_two_nodes_share_the_runs_and_none_runs_twice(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    docker_node("node-a", MAX_CONCURRENT="1")
    docker_node("node-b", MAX_CONCURRENT="1")
    run_ids = [api.submit(test_image, ["sh", "-c", "echo once; sleep 0.5"]) for _ in range(4)]

    runs = [api.wait_status(r, TERMINAL) for r in run_ids]

    assert [r["status"] for r in runs] == ["succeeded"] * 4
    assert {r["node_id"] for r in runs} == {"node-a", "node-b"}
    assert all(api.log_texts(r) == ["once"] for r in run_ids)
    assert all([e["type"] for e in api.events(r)].count("started") == 1 for r in run_ids)


@pytest.mark.docker
def test_missing_image_fails_the_run_with_a_clear_message(docker_node: NodeFactory, api: Api) -> None:
    docker_node()
    run_id = api.submit("agentnodes-test/not-there:1.0", ["true"])
    run = api.wait_status(run_id, TERMINAL)

    assert run["status"] == "failed"
    failed = [e for e in api.events(run_id) if e["type"] == "failed"]
    assert len(failed) == 1
    assert "agentnodes-test/not-there:1.0" in failed[0]["data"]["reason"]
    assert "not present" in failed[0]["data"]["reason"]


@pytest.mark.docker
def test_draining_node_finishes_its_runs_and_takes_no_new_ones(
    docker_node: NodeFactory, api: Api, test_image: str
) -> None:
    docker_node()
    first = api.submit(test_image, ["sh", "-c", "echo started; sleep 2"])
    api.wait_log(first, "started")
    response = api.http.patch("/api/v1/nodes/node-a", json={"status": "draining"})
    assert response.status_code == 200, response.text

    second = api.submit(test_image, ["true"])
    assert api.wait_status(first, TERMINAL)["status"] == "succeeded"
    time.sleep(1.5)  # elapsed time is the point: nothing is placed on the draining node meanwhile
    assert api.run(second)["status"] == "queued"

    response = api.http.patch("/api/v1/nodes/node-a", json={"status": "online"})
    assert response.status_code == 200, response.text
    assert api.wait_status(second, TERMINAL)["status"] == "succeeded"


@pytest.mark.docker
def test_sigterm_leaves_the_container_running(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    node = docker_node()
    run_id = api.submit(test_image, ["sh", "-c", "echo up; sleep 300"])
    api.wait_log(run_id, "up")

    assert node.terminate() == 0
    time.sleep(0.5)  # elapsed time is the point: the container is not stopped after the daemon exits
    assert [c.status for c in _containers(docker_client, "node-a")] == ["running"]
    assert api.run(run_id)["status"] == "running"

    docker_node()  # re-adopts it; cancelling proves the new daemon owns it
    assert api.http.post(f"/api/v1/runs/{run_id}/cancel").status_code in (200, 202)
    assert api.wait_status(run_id, TERMINAL, timeout=20)["status"] == "cancelled"
    assert api.log_texts(run_id) == ["up"]


@pytest.mark.docker
def test_apiserver_outage_loses_and_duplicates_no_output(
    docker_node: NodeFactory, api: Api, server: ServerProcess, test_image: str
) -> None:
    node = docker_node()
    script = "for i in $(seq 1 30); do echo line $i; sleep 0.2; done"
    run_id = api.submit(test_image, ["sh", "-c", script])
    api.wait_log(run_id, "line 3")

    server.stop(timeout=0.5)  # killed mid-run; the node keeps the container and its events
    time.sleep(2.0)  # elapsed time is the point: an outage of a few lines' worth of output
    server.start()
    run = api.wait_status(run_id, TERMINAL)

    assert node.running
    assert (run["status"], run["exit_code"]) == ("succeeded", 0)
    assert api.log_texts(run_id) == [f"line {i}" for i in range(1, 31)]
    assert [e["type"] for e in api.events(run_id)].count("exited") == 1


@pytest.mark.docker
def test_another_pytest_sessions_cleanup_leaves_this_sessions_runs_alone(
    docker_node: NodeFactory, api: Api, test_image: str, docker_client: Any
) -> None:
    # The flaky ('failed', 137) of the outage test: a concurrent pytest session on the same
    # engine force-removed (SIGKILL) containers that carried no session label.
    docker_node()
    run_id = api.submit(test_image, ["sh", "-c", "echo up; sleep 300"])
    api.wait_log(run_id, "up")

    other_session = subprocess.run(
        [sys.executable, "-c", OTHER_SESSION_CLEANUP], cwd=REPO_ROOT, capture_output=True, timeout=60
    )

    assert other_session.returncode == 0, other_session.stderr.decode()
    assert [c.status for c in _containers(docker_client, "node-a")] == ["running"]
    assert api.run(run_id)["status"] == "running"
    assert api.http.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    assert api.wait_status(run_id, TERMINAL, timeout=20)["status"] == "cancelled"


# ------------------------------------------------------------------ process runtime (no Docker)


def test_process_runtime_runs_report_output_and_exit_codes(process_node: NodeFactory, api: Api) -> None:
    process_node()
    ok = api.submit("ignored", ["sh", "-c", "echo hello; echo world"])
    bad = api.submit("ignored", ["sh", "-c", "exit 3"])

    assert api.wait_status(ok, TERMINAL)["status"] == "succeeded"
    assert (api.wait_status(bad, TERMINAL)["status"], api.run(bad)["exit_code"]) == ("failed", 3)
    assert api.log_texts(ok) == ["hello", "world"]


def test_process_runtime_gets_env_config_and_can_be_cancelled(process_node: NodeFactory, api: Api) -> None:
    process_node()
    config = {"proxy": {"http_proxy": "http://127.0.0.1:3128"}, "env": {"CUSTOM_VAR": "custom"}}
    assert api.http.put("/api/v1/nodes/node-a/env-config", json=config).status_code == 200
    echo = api.submit("ignored", ["sh", "-c", 'echo "$CUSTOM_VAR $http_proxy $HTTP_PROXY"'])
    sleeper = api.submit("ignored", ["sh", "-c", "echo sleeping; sleep 300"])

    assert api.wait_status(echo, TERMINAL)["status"] == "succeeded"
    assert api.log_texts(echo) == ["custom http://127.0.0.1:3128 http://127.0.0.1:3128"]
    api.wait_log(sleeper, "sleeping")
    assert api.http.post(f"/api/v1/runs/{sleeper}/cancel").status_code in (200, 202)
    assert api.wait_status(sleeper, TERMINAL, timeout=20)["status"] == "cancelled"


def test_node_works_with_its_join_token_and_is_refused_without(tmp_path: Path) -> None:
    tokens = {"ADMIN_TOKEN": "admin-secret", "NODE_JOIN_TOKEN": "join-secret"}
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30", **tokens}
    (tmp_path / "server").mkdir()
    with ServerProcess(env=env, data_dir=tmp_path / "server") as srv:
        api = Api(srv)
        good = NodeManagerProcess(
            srv.base_url, tmp_path, "good", {"RUNTIME": "process", "NODE_JOIN_TOKEN": "join-secret"}
        )
        bad = NodeManagerProcess(
            srv.base_url, tmp_path, "bad", {"RUNTIME": "process", "NODE_JOIN_TOKEN": "wrong"}
        )
        try:
            good.start()
            bad.start()
            api.wait_node("good")
            run_id = api.submit("ignored", ["sh", "-c", "echo authorised"])
            run = api.wait_status(run_id, TERMINAL)
            bad.wait_for_log("invalid token")

            assert (run["status"], run["node_id"]) == ("succeeded", "good")
            assert api.log_texts(run_id) == ["authorised"]
            assert api.http.get("/api/v1/nodes/bad").status_code == 404
        finally:
            good.stop()
            bad.stop()
            api.http.close()


TOKENS = {"ADMIN_TOKEN": "admin-secret", "NODE_JOIN_TOKEN": "join-secret"}


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with both tokens: the node holds only the join token, as in production."""
    (tmp_path / "server").mkdir()
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30", **TOKENS}
    with ServerProcess(env=env, data_dir=tmp_path / "server") as srv:
        yield srv


@pytest.fixture
def token_api(token_server: ServerProcess) -> Iterator[Api]:
    client = Api(token_server)
    yield client
    client.http.close()


def test_run_claimed_before_a_crash_is_started_after_restart_with_tokens(
    request: pytest.FixtureRequest, token_server: ServerProcess, token_api: Api, tmp_path: Path
) -> None:
    # what a node that crashed right after claiming leaves behind: scheduled, claimed, no process,
    # and its credential in its state directory
    heartbeat = {"node_id": "node-a", "labels": {}, "capacity": {"max_concurrent": 2}}
    with token_server.client(token=TOKENS["NODE_JOIN_TOKEN"]) as joining:
        registered = joining.post("/api/v1/nodes/heartbeat", json=heartbeat)
    assert registered.status_code == 200
    node_token = registered.json()["node_token"]
    credential = tmp_path / "workspaces-node-a" / ".nodemanager" / "node-token-node-a"
    credential.parent.mkdir(parents=True)
    credential.write_text(node_token + "\n")
    run_id = token_api.submit("ignored", ["sh", "-c", "echo once"])
    token_api.wait_status(run_id, {"scheduled"})
    claim = {"node_id": "node-a", "events": [{"node_seq": 1, "type": "claimed", "data": {}}]}
    with token_server.client(token=node_token) as crashed:
        assert crashed.post(f"/api/v1/runs/{run_id}/node-events", json=claim).status_code == 200

    node = NodeManagerProcess(
        token_server.base_url,
        tmp_path,
        "node-a",
        {"RUNTIME": "process", "NODE_JOIN_TOKEN": TOKENS["NODE_JOIN_TOKEN"]},
    )
    try:
        node.start()
        run = token_api.wait_status(run_id, TERMINAL, timeout=20)
    finally:
        node.stop()
        request.node.add_report_section("call", "nodemanager log", node.log())

    assert (run["status"], run["node_id"]) == ("succeeded", "node-a")
    assert token_api.log_texts(run_id) == ["once"]
    assert [e["type"] for e in token_api.events(run_id)].count("started") == 1


@pytest.mark.docker
def test_killed_nodemanager_resumes_output_without_gaps_or_repeats_with_tokens(
    request: pytest.FixtureRequest,
    token_server: ServerProcess,
    token_api: Api,
    tmp_path: Path,
    docker_client: Any,
    test_image: str,
) -> None:
    env = {**SESSION_NODE_ENV, "RUNTIME": "docker", "NODE_JOIN_TOKEN": TOKENS["NODE_JOIN_TOKEN"]}
    node = NodeManagerProcess(token_server.base_url, tmp_path, "node-a", env)
    script = "for i in $(seq 1 30); do echo line $i; sleep 0.2; done"
    try:
        node.start()
        token_api.wait_node("node-a")
        run_id = token_api.submit(test_image, ["sh", "-c", script])
        token_api.wait_log(run_id, "line 3")
        node.kill()
        # the container keeps printing while nobody listens
        wait_until(lambda: _printed(docker_client, "node-a", "line 8"), "output while the daemon is down")
        node.start()
        run = token_api.wait_status(run_id, TERMINAL)
    finally:
        node.stop()
        request.node.add_report_section("call", "nodemanager log", node.log())

    assert (run["status"], run["exit_code"]) == ("succeeded", 0)
    assert token_api.log_texts(run_id) == [f"line {i}" for i in range(1, 31)]


def test_proxy_test_runs_on_the_node(
    process_node: NodeFactory,
    api: Api,
    tinyproxy: Any,
    http_target: TargetServer,
    https_target: TargetServer,
    target_cert: SelfSignedCert,
    closed_port: int,
) -> None:
    process_node(SSL_CERT_FILE=str(target_cert.cert_file))
    targets = {"url": http_target.url(), "https_url": https_target.url(), "timeout": 5}

    good = api.http.post(
        "/api/v1/nodes/node-a/env-config/test-proxy",
        json={"proxy": {"http_proxy": tinyproxy.url()}, **targets},
    )
    refused = api.http.post(
        "/api/v1/nodes/node-a/env-config/test-proxy",
        json={"proxy": {"http_proxy": f"http://127.0.0.1:{closed_port}"}, **targets},
    )

    assert good.status_code == 200, good.text
    assert (good.json()["ok"], good.json()["reason"], good.json()["in_container"]) == (True, "ok", False)
    assert refused.status_code == 200, refused.text
    assert (refused.json()["ok"], refused.json()["reason"]) == (False, "refused")


@pytest.mark.docker
def test_proxy_test_in_a_container(
    docker_node: NodeFactory,
    api: Api,
    test_image: str,
    tinyproxy: Any,
    http_target: TargetServer,
    closed_port: int,
) -> None:
    docker_node(DOCKER_NETWORK="host", PROXY_PROBE_IMAGE=test_image)
    body = {
        "url": http_target.url(),
        "https_url": http_target.url().replace("http://", "https://"),
        "timeout": 5,
    }

    refused = api.http.post(
        "/api/v1/nodes/node-a/env-config/test-proxy",
        json={"proxy": {"http_proxy": f"http://127.0.0.1:{closed_port}"}, "in_container": True, **body},
    )
    reached = api.http.post(
        "/api/v1/nodes/node-a/env-config/test-proxy",
        json={"proxy": {"http_proxy": tinyproxy.url()}, "in_container": True, **body},
    )

    assert refused.status_code == 200, refused.text
    assert (refused.json()["ok"], refused.json()["reason"], refused.json()["in_container"]) == (
        False,
        "refused",
        True,
    )
    assert reached.status_code == 200, reached.text
    steps = reached.json()["steps"]
    assert steps[0]["name"] == "http"
    assert steps[0]["ok"] is True  # the HTTP target answered through tinyproxy from inside the container
