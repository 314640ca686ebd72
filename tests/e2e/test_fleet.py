"""Fleet-wide nodectl forms (`-l k=v` instead of a node id) end to end: the real CLI (a subprocess),
a real apiserver and three real nodemanagers (RUNTIME=process) sharing a label:

- `ok`: its saved proxy is a working loopback tinyproxy;
- `refused`: its saved proxy points at a closed loopback port;
- `offline`: started, registered, then stopped (the server marks it offline after 3 s).

A fourth node with another label value must never be touched. Every proxy test fetches a
loopback target (`--url`), and the server's default targets are loopback too.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PROXY_TEST_OFFLINE_AFTER
from tests.support.nodectl import ANSI_ESCAPE, base_env, heartbeat, run, run_in_pty, tsv
from tests.support.nodemanager import NodeManagerProcess
from tests.support.ports import free_port
from tests.support.proxies import ProxyProcess, SelfSignedCert, TargetServer
from tests.support.server import ServerProcess
from tests.support.wait import eventually, wait_until

OFFLINE_AFTER = PROXY_TEST_OFFLINE_AFTER


@dataclass
class Fleet:
    server: ServerProcess
    http: httpx.Client
    label: str  # the selector all three nodes match, `fleet=<tag>`
    ok: str
    refused: str
    offline: str
    bystander: str  # `fleet=other`: no fleet-wide command may touch it
    proxy_url: str
    env: dict[str, str]

    @property
    def members(self) -> list[str]:
        return sorted([self.ok, self.refused, self.offline])

    def nodectl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return run(self.env, *args, timeout=timeout)

    def node(self, node_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/nodes/{node_id}")
        response.raise_for_status()
        return dict(response.json())

    def env_config(self, node_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/nodes/{node_id}/env-config")
        response.raise_for_status()
        return dict(response.json())

    def set_draining(self, node_id: str, draining: bool) -> None:
        status = "draining" if draining else "online"
        self.http.patch(f"/api/v1/nodes/{node_id}", json={"status": status}).raise_for_status()

    def draining(self) -> dict[str, bool]:
        return {node_id: self.node(node_id)["draining"] for node_id in [*self.members, self.bystander]}


@pytest.fixture(scope="module")
def server(proxy_test_server: ServerProcess) -> ServerProcess:
    return proxy_test_server


def _wait_status(http: httpx.Client, node_id: str, status: str, timeout: float) -> None:
    def reached() -> bool:
        response = http.get(f"/api/v1/nodes/{node_id}")
        return response.status_code == 200 and response.json()["status"] == status

    wait_until(reached, f"{node_id} {status}", timeout)


@pytest.fixture(scope="module")
def fleet(
    server: ServerProcess, workdir: Path, tinyproxy: ProxyProcess, target_cert: SelfSignedCert
) -> Iterator[Fleet]:
    tag = uuid.uuid4().hex[:8]
    ids = {role: f"fleet-{tag}-{role}" for role in ("ok", "refused", "offline")}
    nodes = [
        NodeManagerProcess(
            server.base_url,
            workdir,
            node_id,
            {
                "RUNTIME": "process",
                "NODE_LABELS": f"fleet={tag},role={role}",
                # the server adds its default HTTPS target to a request naming only --url: the
                # loopback HTTPS target, whose self-signed CA the nodes trust
                "PROXY_TEST_CA_FILE": str(target_cert.cert_file),
            },
        ).start()
        for role, node_id in ids.items()
    ]
    http = server.client()
    try:
        for node_id in ids.values():
            _wait_status(http, node_id, "online", timeout=30)
        saved = {ids["ok"]: tinyproxy.url(), ids["refused"]: f"http://127.0.0.1:{free_port()}"}
        for node_id, proxy in saved.items():
            config = {"proxy": {"http_proxy": proxy, "https_proxy": proxy}, "env": {}}
            http.put(f"/api/v1/nodes/{node_id}/env-config", json=config).raise_for_status()
        nodes[2].stop()
        _wait_status(http, ids["offline"], "offline", timeout=OFFLINE_AFTER + 15)
        bystander = f"fleet-{tag}-bystander"
        heartbeat(server.base_url, bystander, {"fleet": "other"})
        yield Fleet(
            server=server,
            http=http,
            label=f"fleet={tag}",
            ok=ids["ok"],
            refused=ids["refused"],
            offline=ids["offline"],
            bystander=bystander,
            proxy_url=tinyproxy.url(),
            env=base_env(server.base_url, workdir / "nodectl-config"),
        )
    finally:
        http.close()
        for node in nodes:
            node.stop()


@pytest.fixture
def undrain_after(fleet: Fleet) -> Iterator[None]:
    yield
    for node_id in fleet.members:
        fleet.set_draining(node_id, False)


def _by_node(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["node_id"]: row for row in rows}


# --------------------------------------------------------------------------- env test-proxy -l


def test_proxy_test_gives_one_row_per_node(fleet: Fleet, http_target: TargetServer) -> None:
    target = ("--url", http_target.url(), "--timeout", "5")
    as_json = fleet.nodectl("env", "test-proxy", "-l", fleet.label, *target, "-o", "json")
    table = fleet.nodectl("env", "test-proxy", "-l", fleet.label, *target)

    assert as_json.returncode == 1, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [row["node_id"] for row in rows] == fleet.members
    by_node = _by_node(rows)
    ok, refused, offline = by_node[fleet.ok], by_node[fleet.refused], by_node[fleet.offline]
    assert (ok["ok"], ok["reason"], ok["proxy_test"]["ok"]) == (True, "ok", True), ok
    assert ok["proxy_test"]["target_http"] == http_target.url()
    assert (refused["ok"], refused["reason"], refused["proxy_test"]["reason"]) == (
        False,
        "refused",
        "refused",
    )
    assert "refused the connection" in refused["message"]
    assert (offline["ok"], offline["reason"], offline["proxy_test"]) == (False, "offline", None)
    assert f"node {fleet.offline} is offline" in offline["message"]
    assert all(isinstance(row["latency_ms"], float) and row["latency_ms"] >= 0 for row in rows)
    assert "2 of 3 nodes failed" in as_json.stderr

    assert table.returncode == 1, table.stderr
    assert ANSI_ESCAPE not in table.stdout
    header, *body = tsv(table.stdout)
    assert header == ["NODE", "RESULT", "REASON", "LATENCY"]
    expected = {
        fleet.ok: ["OK", "ok"],
        fleet.offline: ["FAILED", "offline"],
        fleet.refused: ["FAILED", "refused"],
    }
    assert [row[:3] for row in body] == [[node_id, *expected[node_id]] for node_id in fleet.members]
    assert all(row[3].endswith((" ms", " s")) for row in body)
    assert table.stderr.startswith("error: 2 of 3 nodes failed:")


def test_proxy_test_with_a_given_proxy_and_one_worker(fleet: Fleet, http_target: TargetServer) -> None:
    done = fleet.nodectl(
        "env", "test-proxy", "-l", fleet.label, "-l", "role=refused", "--proxy", fleet.proxy_url,
        "--url", http_target.url(), "--parallel", "1", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["node_id"], row["ok"], row["reason"]) == (fleet.refused, True, "ok")


# --------------------------------------------------------------------------- env set -l


def test_env_set_changes_every_matching_node(fleet: Fleet) -> None:
    before = fleet.env_config(fleet.bystander)
    done = fleet.nodectl("env", "set", "-l", fleet.label, "--env", "FLEET=on", "--unset-env", "NOPE", "--yes")

    assert done.returncode == 0, done.stderr
    header, *body = tsv(done.stdout)
    assert header == ["NODE", "RESULT", "REASON", "LATENCY"]
    assert [row[:3] for row in body] == [[node_id, "OK", "updated"] for node_id in fleet.members]
    for node_id in fleet.members:
        config = fleet.env_config(node_id)
        assert config["env"]["FLEET"] == "on", (node_id, config)
    # only the named parts change: the saved proxies stay
    assert fleet.env_config(fleet.ok)["proxy"]["http_proxy"] == fleet.proxy_url
    assert fleet.env_config(fleet.bystander) == before

    as_json = fleet.nodectl("env", "set", "-l", fleet.label, "--unset-env", "FLEET", "-y", "-o", "wide")
    assert as_json.returncode == 0, as_json.stderr
    assert all("FLEET" not in fleet.env_config(node_id)["env"] for node_id in fleet.members)


def test_env_set_json_rows(fleet: Fleet) -> None:
    done = fleet.nodectl("env", "set", "-l", fleet.label, "--env", "ROWS=1", "--yes", "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(row["node_id"], row["ok"], row["reason"]) for row in rows] == [
        (node_id, True, "updated") for node_id in fleet.members
    ]
    assert all(isinstance(row["resource_version"], int) for row in rows)


# --------------------------------------------------------------------------- drain / undrain -l


@pytest.mark.usefixtures("undrain_after")
def test_drain_then_undrain_flip_every_matching_node(fleet: Fleet) -> None:
    drained = fleet.nodectl("nodes", "drain", "-l", fleet.label, "--yes", "-o", "json")
    assert drained.returncode == 0, drained.stderr
    assert [(row["node_id"], row["ok"], row["reason"]) for row in json.loads(drained.stdout)] == [
        (node_id, True, "draining") for node_id in fleet.members
    ]
    flags = fleet.draining()
    assert flags == {**dict.fromkeys(fleet.members, True), fleet.bystander: False}
    assert fleet.node(fleet.ok)["status"] == "draining"
    assert fleet.node(fleet.offline)["status"] == "offline"  # offline wins over draining

    undrained = fleet.nodectl("nodes", "undrain", "-l", fleet.label, "--parallel", "1")
    assert undrained.returncode == 0, undrained.stderr
    assert [row[:3] for row in tsv(undrained.stdout)[1:]] == [
        [node_id, "OK", "undrained"] for node_id in fleet.members
    ]
    assert fleet.draining() == dict.fromkeys([*fleet.members, fleet.bystander], False)
    assert fleet.node(fleet.ok)["status"] == "online"


@pytest.mark.usefixtures("undrain_after")
def test_drain_wait_follows_the_runs_of_every_node(fleet: Fleet) -> None:
    response = fleet.http.post(
        "/api/v1/runs",
        json={"image": "ignored", "command": ["sh", "-c", "sleep 60"], "node_selector": {"role": "ok"}},
    )
    response.raise_for_status()
    run_id = response.json()["id"]
    wait_until(
        lambda: fleet.http.get(f"/api/v1/runs/{run_id}").json()["status"] == "running", "run running", 30
    )

    timed_out = fleet.nodectl("nodes", "drain", "-l", fleet.label, "--yes", "--wait", "--timeout", "1")
    assert timed_out.returncode == 3, timed_out.stdout + timed_out.stderr
    rows = {row[0]: row for row in tsv(timed_out.stdout)[1:]}
    assert rows[fleet.ok][1:3] == ["FAILED", "timeout"]
    assert rows[fleet.refused][1:3] == rows[fleet.offline][1:3] == ["OK", "drained"]
    assert "1 of 3 nodes failed" in timed_out.stderr

    # --deadline 0 cancels what is still running, then waits for it to end
    cancelled = fleet.nodectl(
        "nodes", "drain", "-l", fleet.label, "--yes", "--deadline", "0", "--timeout", "30", "-o", "json"
    )
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    rows_json = json.loads(cancelled.stdout)
    assert [(row["node_id"], row["reason"], row["running"]) for row in rows_json] == [
        (node_id, "drained", 0) for node_id in fleet.members
    ]
    assert f"run/{run_id} cancel requested" in cancelled.stderr
    eventually(lambda: fleet.http.get(f"/api/v1/runs/{run_id}").json()["status"] == "cancelled", 10)


# --------------------------------------------------------------------------- confirmation and usage


def test_a_bulk_change_without_a_terminal_needs_yes(fleet: Fleet) -> None:
    drain = fleet.nodectl("nodes", "drain", "-l", fleet.label)
    env_set = fleet.nodectl("env", "set", "-l", fleet.label, "--env", "UNCONFIRMED=1")

    for done in (drain, env_set):
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert "without a terminal to confirm; pass --yes" in done.stderr
    assert fleet.draining() == dict.fromkeys([*fleet.members, fleet.bystander], False)
    assert all("UNCONFIRMED" not in fleet.env_config(node_id)["env"] for node_id in fleet.members)


@pytest.mark.usefixtures("undrain_after")
def test_on_a_terminal_the_change_is_confirmed_with_the_node_count(fleet: Fleet) -> None:
    declined_code, declined = run_in_pty(fleet.env, "nodes", "drain", "-l", fleet.label, answer="n\n")
    assert declined_code == 3, declined
    assert f"Drain 3 nodes matching {fleet.label}? [y/N]" in declined
    assert not any(fleet.draining().values())

    code, shown = run_in_pty(fleet.env, "nodes", "drain", "-l", fleet.label, answer="y\n")
    assert code == 0, shown
    assert "3/3 nodes done, 0 failed" in shown  # the progress line on stderr
    assert all(fleet.draining()[node_id] for node_id in fleet.members)


def test_a_selector_matching_nothing_is_not_an_error(fleet: Fleet) -> None:
    as_json = fleet.nodectl("env", "test-proxy", "-l", "fleet=nobody", "-o", "json")
    table = fleet.nodectl("nodes", "undrain", "-l", "fleet=nobody")

    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])
    assert as_json.stderr.strip() == "No nodes match fleet=nobody."
    assert (table.returncode, table.stdout) == (0, "")
    assert table.stderr.strip() == "No nodes match fleet=nobody."


@pytest.mark.parametrize(
    "args",
    [
        ["nodes", "drain"],
        ["nodes", "undrain", "some-node", "-l", "a=b"],
        ["env", "set", "--env", "A=1", "--yes"],
        ["env", "test-proxy", "some-node", "-l", "a=b"],
        ["nodes", "drain", "-l", "not-a-pair", "--yes"],
        ["nodes", "undrain", "some-node", "-o", "json"],
        ["env", "test-proxy", "-l", "a=b", "--parallel", "0"],
    ],
)
def test_an_id_or_a_selector_exactly(fleet: Fleet, args: list[str]) -> None:
    done = fleet.nodectl(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
