"""`nodectl env test-proxy` end to end: the real CLI (a subprocess), a real apiserver, a real
nodemanager process, real proxies (tinyproxy, proxy.py) and targets, all on loopback.

The node trusts the HTTPS target's self-signed CA through PROXY_TEST_CA_FILE; the server's
default targets (PROXY_TEST_URL, PROXY_TEST_HTTPS_URL) point at the loopback targets too, so no
test traffic leaves the machine.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.e2e.conftest import PROXY_TEST_OFFLINE_AFTER
from tests.support.fake_node import FakeNode
from tests.support.nodectl import base_env, heartbeat, run
from tests.support.nodemanager import NodeManagerProcess
from tests.support.proxies import (
    PROXY_PASSWORD,
    PROXY_USER,
    Blackhole,
    ProxyProcess,
    SelfSignedCert,
    TargetServer,
)
from tests.support.server import ServerProcess

NODE = "proxy-node"
WRONG_PASSWORD = f"wrong-{PROXY_PASSWORD}"  # a secret as well: must be masked like the right one
OFFLINE_AFTER = PROXY_TEST_OFFLINE_AFTER


class Cli:
    """`python -m nodectl` against the test server."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []  # everything printed, for the password check

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        done = run(self.env, *args, timeout=timeout)
        self.outputs += [done.stdout, done.stderr]
        return done

    def test_proxy(self, node_id: str, *args: str) -> tuple[int, dict[str, Any]]:
        done = self("env", "test-proxy", node_id, *args, "-o", "json")
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def server(proxy_test_server: ServerProcess) -> ServerProcess:
    return proxy_test_server


def start_node(
    server: ServerProcess, workdir: Path, node_id: str, **env: str
) -> Iterator[NodeManagerProcess]:
    node = NodeManagerProcess(server.base_url, workdir, node_id, env=env).start()
    try:
        wait_for_status(server, node_id, "online")
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def node(server: ServerProcess, workdir: Path, target_cert: SelfSignedCert) -> Iterator[NodeManagerProcess]:
    yield from start_node(
        server, workdir, NODE, RUNTIME="process", PROXY_TEST_CA_FILE=str(target_cert.cert_file)
    )


@pytest.fixture
def cli(server: ServerProcess, node: NodeManagerProcess, workdir: Path) -> Cli:
    return Cli(base_env(server.base_url, workdir / "nodectl-config"))


def wait_for_status(server: ServerProcess, node_id: str, status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    with server.client() as http:
        while time.monotonic() < deadline:
            response = http.get(f"/api/v1/nodes/{node_id}")
            seen = response.json().get("status") if response.status_code == 200 else response.status_code
            if seen == status:
                return
            time.sleep(0.2)
    raise AssertionError(f"node {node_id} is {seen}, not {status}, after {timeout}s")


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PROXY_PASSWORD not in text


def steps_of(result: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(step["name"], step["ok"]) for step in result["steps"]]


@pytest.mark.parametrize("proxy_name", ["tinyproxy", "proxy_py"])
def test_a_working_proxy_passes_every_step(
    request: pytest.FixtureRequest,
    cli: Cli,
    proxy_name: str,
    http_target: TargetServer,
    https_target: TargetServer,
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    targets = ("--url", http_target.url(), "--url", https_target.url(), "--timeout", "5")

    text = cli("env", "test-proxy", NODE, "--proxy", proxy.url(), *targets)
    code, result = cli.test_proxy(NODE, "--proxy", proxy.url(), *targets)

    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    for name in ("connect", "http", "https"):
        assert any(line.startswith(f"Step {name}:") and " ok" in line for line in lines), text.stdout
    assert "HTTP 200" in next(line for line in lines if line.startswith("Step https:"))
    assert any(line.startswith("Result:") and line.endswith("ok") for line in lines), text.stdout
    assert lines[0].split() == ["Node:", NODE]
    assert code == 0
    assert (result["ok"], result["reason"], result["node_id"], result["in_container"]) == (
        True,
        "ok",
        NODE,
        False,
    )
    assert steps_of(result) == [("connect", True), ("http", True), ("https", True)]
    assert all(step["latency_ms"] >= 0 for step in result["steps"])


@pytest.mark.parametrize("proxy_name", ["tinyproxy_auth", "proxy_py_auth"])
def test_a_proxy_that_wants_credentials(
    request: pytest.FixtureRequest, cli: Cli, proxy_name: str, http_target: TargetServer
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    target = ("--url", http_target.url(), "--timeout", "5")

    missing_code, missing = cli.test_proxy(NODE, "--proxy", proxy.url(), *target)
    wrong_code, wrong = cli.test_proxy(NODE, "--proxy", proxy.url(PROXY_USER, WRONG_PASSWORD), *target)
    text = cli("env", "test-proxy", NODE, "--proxy", proxy.url(PROXY_USER, WRONG_PASSWORD), *target)

    assert (missing_code, missing["reason"]) == (1, "auth_required")
    assert "requires authentication" in missing["message"]
    assert steps_of(missing) == [("connect", True), ("http", False)]
    assert missing["steps"][1]["status_code"] == 407
    assert (wrong_code, wrong["reason"]) == (1, "auth_required")
    assert "rejected the credentials" in wrong["message"]
    assert wrong["proxy"] == f"http://{PROXY_USER}:***@127.0.0.1:{proxy.port}"
    assert text.returncode == 1
    assert "failed (auth_required)" in text.stdout
    assert "proxy test failed: auth_required" in text.stderr
    assert_no_password(*cli.outputs)


def test_a_closed_proxy_port_is_refused(cli: Cli, closed_port: int, http_target: TargetServer) -> None:
    code, result = cli.test_proxy(
        NODE, "--proxy", f"http://127.0.0.1:{closed_port}", "--url", http_target.url()
    )
    assert (code, result["ok"], result["reason"]) == (1, False, "refused")
    assert [(step["name"], step["ok"], step["skipped"]) for step in result["steps"]] == [
        ("connect", False, False),
        ("http", False, True),  # not run after the failure: skipped, not failed
    ]
    assert "refused the connection" in result["message"]


def test_only_the_named_targets_are_fetched(
    cli: Cli, tinyproxy: ProxyProcess, http_target: TargetServer, https_target: TargetServer
) -> None:
    """The server's default targets (the loopback HTTP and HTTPS targets here) serve only a
    request that names none: naming one http:// target tests exactly that one."""
    named = [http_target.url("/named-a"), http_target.url("/named-b")]
    code, result = cli.test_proxy(NODE, "--proxy", tinyproxy.url(), "--url", named[0], "--url", named[1])
    assert code == 0, result["message"]
    assert [(step["name"], step["target"]) for step in result["steps"]] == [
        ("connect", None),
        ("http", named[0]),
        ("http", named[1]),
    ]
    assert (result["targets"], result["target_https"]) == (named, None)
    _, default = cli.test_proxy(NODE, "--proxy", tinyproxy.url())
    assert default["targets"] == [http_target.url(), https_target.url()]
    assert [step["name"] for step in default["steps"]] == ["connect", "http", "https"]
    bad = cli("env", "test-proxy", NODE, "--url", "ftp://x/")
    assert bad.returncode == 2
    assert "must be an http:// or https:// URL" in bad.stderr


def test_a_proxy_that_never_answers_times_out(
    cli: Cli, blackhole: Blackhole, http_target: TargetServer
) -> None:
    started = time.monotonic()
    text = cli(
        "env", "test-proxy", NODE, "--proxy", blackhole.url(), "--url", http_target.url(), "--timeout", "1"
    )
    assert text.returncode == 1, text.stdout + text.stderr
    assert time.monotonic() - started < 20
    assert "failed (timeout)" in text.stdout
    assert "timed out after 1s" in text.stdout
    step_lines = [line for line in text.stdout.splitlines() if line.startswith("Step ")]
    assert [line.split(":")[0] for line in step_lines] == ["Step connect", "Step http"]
    assert ["FAILED" in line for line in step_lines] == [False, True]


@pytest.mark.parametrize("proxy_name", ["tinyproxy", "proxy_py"])
def test_a_target_that_refuses_is_an_upstream_error(
    request: pytest.FixtureRequest, cli: Cli, proxy_name: str, closed_port: int
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(proxy_name)
    code, result = cli.test_proxy(NODE, "--proxy", proxy.url(), "--url", f"http://127.0.0.1:{closed_port}/")
    assert (code, result["reason"]) == (1, "upstream_error")
    assert steps_of(result) == [("connect", True), ("http", False)]
    assert result["steps"][1]["status_code"] in (500, 502)


def test_in_container_on_a_node_without_docker_says_so(cli: Cli, tinyproxy: ProxyProcess) -> None:
    code, result = cli.test_proxy(NODE, "--in-container", "--proxy", tinyproxy.url())
    assert (code, result["reason"], result["in_container"]) == (1, "error", True)
    assert "needs the Docker runtime" in result["message"]
    assert result["steps"] == []


def test_an_offline_node_is_a_conflict(
    server: ServerProcess, workdir: Path, cli: Cli, tinyproxy: ProxyProcess
) -> None:
    for gone in start_node(server, workdir, "gone-node", RUNTIME="process"):
        gone.stop()
    wait_for_status(server, "gone-node", "offline", timeout=OFFLINE_AFTER + 10)

    done = cli("env", "test-proxy", "gone-node", "--proxy", tinyproxy.url())

    assert done.returncode == 6, done.stdout + done.stderr
    assert "node gone-node is offline: last heartbeat" in done.stderr
    assert done.stdout == ""


def test_a_node_that_does_not_answer_in_time(
    server: ServerProcess, cli: Cli, tinyproxy: ProxyProcess
) -> None:
    heartbeat(server.base_url, "silent-node")  # online, but nothing polls its work channel

    done = cli("env", "test-proxy", "silent-node", "--proxy", tinyproxy.url(), "--wait", "1")

    assert done.returncode == 3, done.stdout + done.stderr
    assert "node silent-node did not answer the proxy test within 1 s" in done.stderr


def test_saved_proxy_unsaved_proxy_and_latest_result(
    cli: Cli,
    tinyproxy_auth: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
    closed_port: int,
) -> None:
    saved_url = tinyproxy_auth.url(PROXY_USER, PROXY_PASSWORD)
    assert cli("env", "set", NODE, "--http-proxy", saved_url, "--https-proxy", saved_url).returncode == 0
    before = cli("env", "get", NODE, "-o", "json", "--show-secrets").stdout

    unsaved_code, unsaved = cli.test_proxy(NODE, "--proxy", f"http://127.0.0.1:{closed_port}")
    after = cli("env", "get", NODE, "-o", "json", "--show-secrets").stdout
    saved_code, saved = cli.test_proxy(NODE)  # no --proxy, no --url: the saved proxy, the server's targets
    shown = json.loads(cli("nodes", "get", NODE, "-o", "json").stdout)["last_proxy_test"]
    table = cli("nodes", "get", NODE).stdout

    assert (unsaved_code, unsaved["reason"]) == (1, "refused")
    assert json.loads(after) == json.loads(before)
    assert json.loads(after)["proxy"]["http_proxy"] == saved_url
    assert (saved_code, saved["ok"], saved["reason"]) == (0, True, "ok"), saved["message"]
    assert saved["proxy"] == f"http://{PROXY_USER}:***@127.0.0.1:{tinyproxy_auth.port}"
    assert (saved["target_http"], saved["target_https"]) == (http_target.url(), https_target.url())
    assert shown == saved
    assert any(line.startswith("Last proxy test:") and "ok at" in line for line in table.splitlines()), table

    cli.test_proxy(NODE, "--proxy", f"http://127.0.0.1:{closed_port}")
    latest = json.loads(cli("nodes", "get", NODE, "-o", "json").stdout)["last_proxy_test"]
    assert (latest["ok"], latest["reason"]) == (False, "refused")
    assert "failed (refused)" in cli("nodes", "get", NODE).stdout
    assert_no_password(*[text for text in cli.outputs if text not in (before, after)])


def test_passwords_stay_out_of_outputs_logs_and_stored_commands(
    server: ServerProcess,
    workdir: Path,
    node: NodeManagerProcess,
    cli: Cli,
    tinyproxy_auth: ProxyProcess,
    proxy_py_auth: ProxyProcess,
    http_target: TargetServer,
) -> None:
    for proxy in (tinyproxy_auth, proxy_py_auth):
        for password in (PROXY_PASSWORD, WRONG_PASSWORD):
            for output in ("json", "table"):
                cli("env", "test-proxy", NODE, "--proxy", proxy.url(PROXY_USER, password), "-o", output)
    saved = proxy_py_auth.url(PROXY_USER, PROXY_PASSWORD)
    assert cli("env", "set", NODE, "--http-proxy", saved, "--https-proxy", saved).returncode == 0
    done = cli("env", "test-proxy", NODE, "--url", http_target.url(), "--timeout", "5")  # the saved proxy
    assert done.returncode == 0, done.stdout + done.stderr

    assert_no_password(*cli.outputs, node.log(), server.log())
    with sqlite3.connect(workdir / "server" / "apiserver.db") as db:
        stored = db.execute(
            "SELECT payload, result FROM node_commands WHERE node_id = ? ORDER BY created_at", (NODE,)
        ).fetchall()
    assert_no_password(*(f"{payload} {result}" for payload, result in stored))
    masked = [json.loads(payload)["proxy"]["http_proxy"] for payload, _ in stored[-9:]]
    assert all(url.startswith(f"http://{PROXY_USER}:***@127.0.0.1:") for url in masked), masked


def test_the_server_scrubs_a_password_a_node_repeats(server: ServerProcess, cli: Cli, workdir: Path) -> None:
    """Defence in depth against a (scripted, leaky) node that echoes its proxy URL."""
    proxy_url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:9"
    with Client(server.base_url) as client:
        leaky = FakeNode(client, "leaky-node")
        leaky.heartbeat()

        def answer() -> None:
            for command in leaky.poll(wait=10).commands:
                url = command.payload["proxy"]["http_proxy"]
                result = m.ProxyTestResult(
                    ok=False,
                    reason="refused",
                    message=f"{url} refused",
                    steps=[m.ProxyTestStep(name="connect", ok=False, detail=f"with {PROXY_PASSWORD}")],
                )
                answer = m.CommandResult(ok=True, result=msgspec.to_builtins(result), error=url)
                client.send(Calls.post_command_result("leaky-node", command.id, answer))

        answering = threading.Thread(target=answer)
        answering.start()
        code, shown = cli.test_proxy("leaky-node", "--proxy", proxy_url)
        answering.join(timeout=15)
        stored = client.send(Calls.get_node("leaky-node")).last_proxy_test

    assert (code, shown["reason"]) == (1, "refused")
    assert shown["message"] == f"http://{PROXY_USER}:***@127.0.0.1:9 refused"
    assert shown["steps"][0]["detail"] == "with ***"
    assert stored is not None
    assert stored.message == shown["message"]
    with sqlite3.connect(workdir / "server" / "apiserver.db") as db:
        rows = db.execute("SELECT payload, result FROM node_commands WHERE node_id = 'leaky-node'").fetchall()
    assert len(rows) == 1
    assert f"{PROXY_USER}:***@127.0.0.1:9" in rows[0][0]
    assert_no_password(*cli.outputs, *rows[0])


@pytest.mark.docker
def test_the_in_container_variant(
    server: ServerProcess,
    workdir: Path,
    cli: Cli,
    docker_client: Any,
    test_image: str,
    tinyproxy_auth: ProxyProcess,
    http_target: TargetServer,
    https_target: TargetServer,
) -> None:
    env = {"RUNTIME": "docker", "DOCKER_NETWORK": "host", "PROXY_PROBE_IMAGE": test_image}
    for docker_node in start_node(server, workdir, "docker-node", **env):
        proxy = ("--proxy", tinyproxy_auth.url(PROXY_USER, PROXY_PASSWORD))
        targets = ("--url", http_target.url(), "--url", https_target.url(), "--timeout", "5")
        code, result = cli.test_proxy("docker-node", "--in-container", *proxy, *targets)
        text = cli("env", "test-proxy", "docker-node", "--in-container", *proxy, *targets)
        node_log = docker_node.log()

    assert (code, result["ok"], result["reason"], result["in_container"]) == (0, True, "ok", True), result
    assert [(s["name"], s["ok"], s["skipped"]) for s in result["steps"]] == [
        ("http", True, False),
        ("https", False, True),
    ]
    assert result["steps"][0]["status_code"] == 200
    assert text.returncode == 0
    assert "in a container" in next(line for line in text.stdout.splitlines() if line.startswith("Where:"))
    assert any(line.startswith("Step https:") and "skipped" in line for line in text.stdout.splitlines())
    assert_no_password(*cli.outputs, node_log)
    probes = docker_client.containers.list(
        all=True, filters={"label": "agentnodes.proxycheck=1"}, ignore_removed=True
    )
    assert [c.name for c in probes if c.labels.get("agentnodes.node_id") == "docker-node"] == []
