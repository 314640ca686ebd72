"""A real nodemanager with node credentials: it registers with the join token, keeps its own
credential (mode 0600) across restarts, registers again after an admin voided it, and hands
secret env vars to the run's process and nowhere else."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import eventually, wait_until

ADMIN = "e2e-admin-token"
JOIN = "e2e-join-token"
SECRET = "sk-e2e-0123456789abcdef"
NODE = "cred-node"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "ADMIN_TOKEN": ADMIN,
        "NODE_JOIN_TOKEN": JOIN,
        "NODE_HEARTBEAT_INTERVAL": "1",
        "NODE_OFFLINE_AFTER": "30",
    }
    (tmp_path / "server").mkdir()
    with ServerProcess(env=env, data_dir=tmp_path / "server") as process:
        yield process


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(token=ADMIN) as client:
        yield client


def start_node(server: ServerProcess, workdir: Path) -> NodeManagerProcess:
    env = {"RUNTIME": "process", "NODE_JOIN_TOKEN": JOIN, "NODE_LABELS": f"id={NODE}"}
    return NodeManagerProcess(server.base_url, workdir, NODE, env).start()


def registrations(admin: httpx.Client) -> list[str]:
    entries = admin.get("/api/v1/audit", params={"target_id": NODE}).json()["items"]
    return [e["action"] for e in entries if e["action"] in ("node.register", "node.claim_credential")]


def online(admin: httpx.Client) -> bool:
    response = admin.get(f"/api/v1/nodes/{NODE}")
    return response.status_code == 200 and response.json()["status"] == "online"


def test_the_node_keeps_its_credential_across_restarts_and_recovers_a_voided_one(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    credential = tmp_path / f"workspaces-{NODE}" / ".nodemanager" / f"node-token-{NODE}"
    node = start_node(server, tmp_path)
    try:
        wait_until(credential.exists, "the node stored its credential", timeout=20)
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        first = credential.read_text().strip()
        wait_until(lambda: online(admin), "the node is online")

        node.terminate()
        node = start_node(server, tmp_path)  # restarted: acts with the stored credential
        node.wait_for_log("ready")
        assert credential.read_text().strip() == first
        assert registrations(admin) == ["node.register"]

        assert admin.delete(f"/api/v1/nodes/{NODE}/credential").status_code == 204
        eventually(lambda: credential.exists() and credential.read_text().strip() != first, timeout=20)
        wait_until(lambda: online(admin), "the node is online again")
        assert sorted(registrations(admin)) == ["node.claim_credential", "node.register"]
    finally:
        node.stop()
        request.node.add_report_section("call", "nodemanager log", node.log())
    assert first not in node.log()


def test_secret_env_reaches_the_run_and_nothing_else(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    node = start_node(server, tmp_path)
    try:
        wait_until(lambda: online(admin), "the node is online", timeout=20)
        body = {"secret_env": {"NODE_SECRET": SECRET}, "env": {"PLAIN": "visible"}}
        assert admin.put(f"/api/v1/nodes/{NODE}/env-config", json=body).status_code == 200
        digest = hashlib.sha256(SECRET.encode()).hexdigest()  # the command must not hold the secret
        check = (
            f'test "$(printf %s "$NODE_SECRET" | sha256sum | cut -d" " -f1)" = {digest} '
            f'&& test "$(printf %s "$RUN_SECRET" | sha256sum | cut -d" " -f1)" = {digest} '
            '&& test "$PLAIN" = visible && echo matched'
        )
        created = admin.post(
            "/api/v1/runs",
            json={"image": "ignored", "command": ["sh", "-c", check], "secret_env": {"RUN_SECRET": SECRET}},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        def finished() -> dict[str, object] | None:
            run = admin.get(f"/api/v1/runs/{run_id}").json()
            return run if run["status"] in ("succeeded", "failed", "lost", "cancelled") else None

        run = eventually(finished, timeout=30)
        events = admin.get(f"/api/v1/runs/{run_id}/events").text
    finally:
        node.stop()
        request.node.add_report_section("call", "nodemanager log", node.log())
    assert run["status"] == "succeeded", run
    assert '"text":"matched"' in events.replace(" ", "")
    assert run["secret_env"] == {"RUN_SECRET": "***"}
    for text in (events, str(run), node.log(), server.log()):
        assert SECRET not in text
