"""nodectl runs commands, drain --wait and delete-with-runs, against a real apiserver and a scripted node."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest
import yaml

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.support.fake_node import FakeNode, wait_run_status
from tests.support.nodectl import invoke, run, tsv
from tests.support.server import REPO_ROOT, ServerProcess
from tests.support.wait import eventually


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.base_url) as api:
        yield api


@pytest.fixture
def node(client: Client) -> FakeNode:
    """An online node with a label of its own, so only this test's runs land on it."""
    tag = uuid.uuid4().hex[:10]
    fake = FakeNode(client, f"rn-{tag}", {"t": tag}, max_concurrent=2)
    fake.heartbeat()
    return fake


def _submit(env: dict[str, str], node: FakeNode, *extra: str) -> str:
    result = invoke(env, "runs", "submit", "busybox", "--selector", f"t={node.labels['t']}", *extra)
    assert result.exit_code == 0, result.stderr
    run_id = result.stdout.strip()
    assert run_id
    return run_id


def _claim(node: FakeNode, run_id: str) -> None:
    """Poll work until the scheduler hands `run_id` to the node, then report it started."""
    eventually(lambda: any(a.run.id == run_id for a in node.poll(wait=1.0).assignments), timeout=15)
    node.start(run_id)


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nodectl", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_submit_get_list_and_events(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(env, node, "--env", "A=1", "--expr", "!spot", "--", "sh", "-c", "echo hi")
    run = json.loads(invoke(env, "runs", "get", run_id, "-o", "json").stdout)
    assert run["image"] == "busybox"
    assert run["command"] == ["sh", "-c", "echo hi"]
    assert run["env"] == {"A": "1"}
    assert run["node_selector"] == {"t": node.labels["t"]}
    assert run["selector_expressions"] == ["!spot"]

    _claim(node, run_id)
    node.report(run_id, ("log", {"stream": "stdout", "text": "hi\n"}), ("exited", {"exit_code": 0}))
    wait_run_status(client, run_id, "succeeded")

    got = yaml.safe_load(invoke(env, "runs", "get", run_id, "-o", "yaml").stdout)
    assert got["status"] == "succeeded"
    assert got["node_id"] == node.node_id
    assert got["exit_code"] == 0

    listed = invoke(env, "runs", "list", "--node", node.node_id, "--no-headers")
    rows = tsv(listed.stdout)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [(run_id, "succeeded", node.node_id, "0")]
    assert invoke(env, "runs", "list", "-q", "--node", node.node_id, "--status", "failed").stdout == ""
    assert invoke(env, "nodes", "runs", node.node_id, "-q").stdout.split() == [run_id]

    events = json.loads(invoke(env, "runs", "events", run_id, "-o", "json").stdout)["items"]
    types = [e["type"] for e in events]
    assert types[-2:] == ["log", "exited"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    table = tsv(invoke(env, "runs", "events", run_id).stdout)
    assert table[0] == ["SEQ", "TYPE", "AT", "DATA"]
    assert ["log", "[stdout] hi"] in [r[1:4:2] for r in table[1:]]


def test_logs_split_streams(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(env, node, "--", "x")
    _claim(node, run_id)
    node.report(
        run_id,
        ("log", {"stream": "stdout", "text": "out one\n"}),
        ("log", {"stream": "stderr", "text": "err one\n"}),
        ("log", {"stream": "stdout", "text": "out two"}),
        ("exited", {"exit_code": 0}),
    )
    wait_run_status(client, run_id, "succeeded")
    result = run(env, "runs", "logs", run_id)
    assert result.returncode == 0
    assert result.stdout == "out one\nout two\n"
    assert result.stderr == "err one\n"


def test_logs_follow_streams_until_the_run_ends(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(env, node, "--", "x")
    _claim(node, run_id)
    follower = _spawn(env, "runs", "logs", run_id, "-f", "--timeout", "60")
    node.report(run_id, ("log", {"stream": "stdout", "text": "early\n"}))
    assert follower.stdout is not None
    with ThreadPoolExecutor(1) as pool:  # the follower prints the line while the run still goes on
        first = pool.submit(follower.stdout.readline).result(timeout=30)
    assert first == "early\n"
    assert follower.poll() is None
    node.report(run_id, ("log", {"stream": "stdout", "text": "late\n"}), ("exited", {"exit_code": 0}))
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert first + out == "early\nlate\n"


def test_submit_wait_exit_codes(env: dict[str, str], node: FakeNode) -> None:
    ok = _spawn(
        env, "runs", "submit", "img", "-s", f"t={node.labels['t']}", "--follow", "--timeout", "60", "--", "a"
    )
    bad = _spawn(
        env, "runs", "submit", "img", "-s", f"t={node.labels['t']}", "--wait", "--timeout", "60", "--", "b"
    )
    run_ids: dict[str, str] = {}

    def assigned() -> bool:
        for assignment in node.poll(wait=1.0).assignments:
            run_ids[assignment.run.command[0]] = assignment.run.id
        return len(run_ids) == 2

    eventually(assigned, timeout=20)
    for run_id in run_ids.values():
        node.start(run_id)
    node.report(
        run_ids["a"], ("log", {"stream": "stdout", "text": "hello from a\n"}), ("exited", {"exit_code": 0})
    )
    node.report(run_ids["b"], ("log", {"stream": "stdout", "text": "hidden\n"}), ("exited", {"exit_code": 3}))

    out, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    assert out.splitlines() == [run_ids["a"], "hello from a"]
    assert f"run/{run_ids['a']} succeeded" in err

    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 1, err
    assert out.splitlines() == [run_ids["b"]]  # --wait without --follow prints no output
    assert f"run/{run_ids['b']} failed (exit code 3)" in err


def test_submit_wait_times_out_with_exit_3(env: dict[str, str]) -> None:
    result = run(
        env, "runs", "submit", "img", "--selector", "nowhere=true", "--wait", "--timeout", "1", "--", "x"
    )
    assert result.returncode == 3, result.stderr
    run_id = result.stdout.strip()
    assert f"run/{run_id} is not finished" in result.stderr
    assert json.loads(invoke(env, "runs", "get", run_id, "-o", "json").stdout)["status"] == "queued"


def test_cancel_a_queued_run(env: dict[str, str]) -> None:
    run_id = invoke(env, "runs", "submit", "img", "--selector", "nowhere=true").stdout.strip()
    result = invoke(env, "runs", "cancel", run_id)
    assert result.exit_code == 0, result.stderr
    assert f"run/{run_id} cancelled" in result.stderr
    assert json.loads(invoke(env, "runs", "get", run_id, "-o", "json").stdout)["status"] == "cancelled"
    assert invoke(env, "runs", "get", "no-such-run").exit_code == 5
    assert invoke(env, "runs", "submit", "img", "--env", "1X=2").exit_code == 2


def test_delete_a_node_with_active_runs_is_exit_6(env: dict[str, str], node: FakeNode) -> None:
    run_id = _submit(env, node, "--", "x")
    _claim(node, run_id)
    result = invoke(env, "nodes", "delete", node.node_id, "--yes")
    assert result.exit_code == 6, result.stderr
    assert result.stderr.startswith("error: conflict")
    assert invoke(env, "nodes", "get", node.node_id).exit_code == 0


def test_drain_wait_follows_the_last_runs(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(env, node, "--", "x")
    _claim(node, run_id)
    timed_out = invoke(env, "nodes", "drain", node.node_id, "--wait", "--timeout", "1")
    assert timed_out.exit_code == 3
    assert run_id in timed_out.stderr

    drainer = _spawn(env, "nodes", "drain", node.node_id, "--wait", "--timeout", "60")
    assert drainer.stderr is not None
    waiting = f"waiting for 1 run(s) on node/{node.node_id}: {run_id} (running)"
    first = drainer.stderr.readline() + drainer.stderr.readline()  # "draining ..." then "waiting for ..."
    assert waiting in first
    node.report(run_id, ("exited", {"exit_code": 0}))
    _, err = drainer.communicate(timeout=60)
    assert drainer.returncode == 0, first + err
    assert f"node/{node.node_id} drained" in err


def test_drain_deadline_cancels_what_is_left(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(env, node, "--", "x")
    _claim(node, run_id)
    drainer = _spawn(env, "nodes", "drain", node.node_id, "--deadline", "1", "--timeout", "60")
    eventually(lambda: run_id in node.poll(wait=1.0).cancel_runs, timeout=30)
    node.report(run_id, ("cancelled", {}))
    _out, err = drainer.communicate(timeout=60)
    assert drainer.returncode == 0, err
    assert f"run/{run_id} cancel requested" in err
    assert wait_run_status(client, run_id, "cancelled").status == "cancelled"


# ------------------------------------------------------------ env test-proxy (the node is scripted)


def _answer_proxy_test(node: FakeNode, result: m.ProxyTestResult) -> dict[str, object]:
    """Wait for the node's test_proxy command, answer it with `result`; the command's payload."""
    commands: list[m.NodeCommand] = []

    def received() -> bool:
        commands.extend(node.poll(wait=1.0).commands)
        return bool(commands)

    eventually(received, timeout=20)
    (command,) = commands
    assert command.type == "test_proxy"
    answer = m.CommandResult(ok=True, result=msgspec.to_builtins(result))
    node.client.send(Calls.post_command_result(node.node_id, command.id, answer))
    return command.payload


def test_proxy_test_report_and_exit_codes(env: dict[str, str], node: FakeNode) -> None:
    ok = m.ProxyTestResult(
        ok=True, reason="ok", message="works", proxy="http://u:***@127.0.0.1:3128", node_id=node.node_id,
        steps=[m.ProxyTestStep(name="connect", ok=True, latency_ms=1.5),
               m.ProxyTestStep(name="http", ok=True, latency_ms=12.0, status_code=200)],
    )  # fmt: skip
    tester = _spawn(
        env, "env", "test-proxy", node.node_id, "--proxy", "http://u:pw@127.0.0.1:3128",
        "--url", "http://example.test/", "--timeout", "5",
    )  # fmt: skip
    payload = _answer_proxy_test(node, ok)
    out, err = tester.communicate(timeout=60)
    assert tester.returncode == 0, err
    assert payload["url"] == "http://example.test/"
    assert payload["timeout"] == 5
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["Step http"].strip() == "ok HTTP 200 12 ms"
    assert lines["Result"].strip() == "ok"

    failed = m.ProxyTestResult(
        ok=False, reason="refused", message="the proxy refused the connection", node_id=node.node_id,
        steps=[m.ProxyTestStep(name="connect", ok=False, latency_ms=0.4, detail="connection refused")],
    )  # fmt: skip
    tester = _spawn(env, "env", "test-proxy", node.node_id, "-o", "json")
    _answer_proxy_test(node, failed)
    out, err = tester.communicate(timeout=60)
    assert tester.returncode == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["reason"] == "refused"
    assert "proxy test failed: refused" in err


def test_proxy_test_on_unknown_node_and_bad_proxy(env: dict[str, str]) -> None:
    assert invoke(env, "env", "test-proxy", "no-such-node").exit_code == 5
    assert invoke(env, "env", "test-proxy", "no-such-node", "--proxy", "gopher://x").exit_code == 2


def test_submit_with_limits_in_human_units(env: dict[str, str], node: FakeNode, client: Client) -> None:
    run_id = _submit(
        env,
        node,
        *("--deadline", "1h30m", "--cpus", "0.5", "--memory", "1.5G"),
        *("--read-only-rootfs", "--no-network", "--pids-limit", "64"),
    )
    run = client.send(Calls.get_run(run_id))
    assert run.deadline_seconds == 5400
    assert run.resources == m.Resources(cpus=0.5, memory_mb=1536)
    assert run.sandbox == m.Sandbox(read_only_rootfs=True, network="none", pids_limit=64)
    shown = invoke(env, "runs", "get", run_id)
    assert "1h30m" in shown.stdout
    assert "cpus=0.5, memory=1.5Gi" in shown.stdout
    assert "network=none, read-only rootfs, pids<=64" in shown.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--deadline", "soon"), "--deadline: 'soon' is not a duration"),
        (("--memory", "lots"), "--memory: 'lots' is not a memory size"),
        (("--cpus", "0"), "--cpus: must be above 0"),
    ],
)
def test_submit_refuses_bad_limits_before_sending(
    env: dict[str, str], client: Client, flags: tuple[str, str], message: str
) -> None:
    before = client.send(Calls.list_runs()).total
    result = invoke(env, "runs", "submit", "busybox", *flags, "--", "true")
    assert result.exit_code == 2
    assert message in result.stderr
    assert client.send(Calls.list_runs()).total == before
