"""The container image (Dockerfile at the root), built and run as operators would, without a registry.

The base is a Debian made locally (tests.support.base_image, cached across sessions) with a CI-only
layer for the machine's CA bundle; the product image is built on it with `--network host
--build-arg BASE_IMAGE=...`. The apiserver container runs on host networking against a throwaway
PostgreSQL and Redis and answers /readyz; a nodemanager on the host and one in the same image (the
documented entry point override, the Docker socket and its group) each register and run a run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.base_image import CI_LABEL, docker_build, ensure_ci_base_image
from tests.support.images import TEST_IMAGE, TEST_LABELS
from tests.support.nodemanager import NodeManagerProcess
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import REPO_ROOT
from tests.support.wait import eventually

# a cold machine makes the base (mmdebstrap, 17-55 s) and builds the image (40-80 s) in the first
# test's setup: measured 81 s for this module from nothing (2026-12-03), 6 s with the image built
pytestmark = [
    pytest.mark.slow,
    pytest.mark.docker,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(600),
]

IMAGE = "agentnodes-test/agent-nodes:test"
ADMIN_TOKEN = secrets.token_hex(16)
JOIN_TOKEN = secrets.token_hex(16)
DOCKER_SOCKET = "/var/run/docker.sock"
HEALTHCHECK = ["/opt/agent-nodes/bin/python", "-m", "server.healthcheck"]


@pytest.fixture(scope="module")
def image(docker_session_client: Any) -> str:
    import docker.errors

    client = docker_session_client
    base = ensure_ci_base_image(client)
    try:
        older = {client.images.get(IMAGE).id}
    except docker.errors.ImageNotFound:
        older = set()
    # the untagged build stages of earlier builds (they carry the CI layer's label)
    older |= {stage.id for stage in client.images.list(filters={"dangling": True, "label": CI_LABEL})}
    output = docker_build(context=REPO_ROOT, tag=IMAGE, build_args={"BASE_IMAGE": base}, timeout=540)
    # what an older source left, 400 MB a change otherwise; an image this build used (its build
    # stage, the layer cache of the next build) stays, and so does one a tag still names
    for stale in older:
        if stale.removeprefix("sha256:")[:12] not in output:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(stale)
    return IMAGE


class ContainerServer:
    """The apiserver in its container, reached on the host's loopback."""

    def __init__(self, container: Any, port: int) -> None:
        self.container = container
        self.base_url = f"http://127.0.0.1:{port}"

    def client(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, trust_env=False, timeout=10.0)

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))


@pytest.fixture
def apiserver_container(
    docker_client: Any, image: str, postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[ContainerServer]:
    with RedisServer() as redis:
        port = free_port()
        container = docker_client.containers.run(
            image,
            detach=True,
            network_mode="host",
            labels=TEST_LABELS,
            environment={
                "APISERVER_HOST": "127.0.0.1",
                "APISERVER_PORT": str(port),
                "DATABASE_URL": postgres_server.create_database("image"),
                "REDIS_URL": redis.url,
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "NODE_JOIN_TOKEN": JOIN_TOKEN,
                "NODE_HEARTBEAT_INTERVAL": "1",
                "NODE_OFFLINE_AFTER": "5",
            },
        )
        server = ContainerServer(container, port)
        try:
            yield server
        finally:
            request.node.add_report_section("teardown", "apiserver container log", server.logs())
            container.remove(force=True)


def _ready(server: ContainerServer) -> bool:
    try:
        with server.client(token=None) as anonymous:
            return anonymous.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def _run_on(server: ContainerServer, node: str, text: str) -> dict[str, Any]:
    with server.client() as client:
        created = client.post(
            "/api/v1/runs",
            json={"image": TEST_IMAGE, "command": ["echo", text], "node_selector": {"at": node}},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            run = client.get(f"/api/v1/runs/{run_id}").json()
            return dict(run) if run["status"] in ("succeeded", "failed", "cancelled", "lost") else None

        run = eventually(finished, timeout=60, interval=0.2, what=f"run {run_id} to finish")
        events = client.get(f"/api/v1/runs/{run_id}/events").json()["items"]
        run["logged"] = [event["data"].get("text") for event in events if event["type"] == "log"]
        return run


def test_the_image_is_plain_and_runs_as_a_user(docker_client: Any, image: str) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    assert config["Entrypoint"] == ["/opt/agent-nodes/bin/apiserver"]
    assert config["User"] == "agentnodes"
    assert config["Healthcheck"]["Test"] == ["CMD", *HEALTHCHECK]
    assert "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in config["Env"]  # from the CI layer only
    product = (REPO_ROOT / "Dockerfile").read_text()
    assert "PIP_CERT" not in product
    assert "ARG BASE_IMAGE=python:3.11-slim" in product
    version = docker_client.containers.run(image, ["--version"], remove=True, labels=TEST_LABELS)
    assert version.decode().startswith("apiserver ")
    whoami = docker_client.containers.run(
        image,
        ["-c", "import os; print(os.getuid())"],
        entrypoint="/opt/agent-nodes/bin/python",
        remove=True,
        labels=TEST_LABELS,
    )
    assert whoami.decode().strip() == "10001"


def test_the_apiserver_container_serves_nodes_on_the_host_and_in_the_image(
    apiserver_container: ContainerServer, docker_client: Any, image: str, tmp_path: Path
) -> None:
    server = apiserver_container
    eventually(lambda: _ready(server), timeout=60, interval=0.25, what=f"/readyz\n{server.logs()}")
    healthcheck = server.container.exec_run(HEALTHCHECK)
    assert healthcheck.exit_code == 0, healthcheck.output

    host_node = NodeManagerProcess(
        server.base_url, tmp_path, "host-node", env={"NODE_JOIN_TOKEN": JOIN_TOKEN, "NODE_LABELS": "at=host"}
    ).start()
    # the nodemanager from the same image, as docs/operations.md runs it: another entry point, the
    # engine's socket and its group, the workspace directory at the same path inside and out
    workspaces = tmp_path / "image-node"
    workspaces.mkdir()
    os.chmod(workspaces, 0o777)
    image_node = docker_client.containers.run(
        image,
        entrypoint="/opt/agent-nodes/bin/nodemanager",
        detach=True,
        network_mode="host",
        labels=TEST_LABELS,
        group_add=[str(os.stat(DOCKER_SOCKET).st_gid)],
        volumes={
            DOCKER_SOCKET: {"bind": DOCKER_SOCKET, "mode": "rw"},
            str(workspaces): {"bind": str(workspaces), "mode": "rw"},
        },
        environment={
            "API_SERVER_URL": server.base_url,
            "NODE_ID": "image-node",
            "NODE_JOIN_TOKEN": JOIN_TOKEN,
            "NODE_LABELS": "at=image",
            "RUNTIME": "docker",
            "IMAGE_PULL_POLICY": "never",
            "DOCKER_NETWORK": "none",
            "WORKSPACE_DIR": str(workspaces / "workspaces"),
            "STATE_DIR": str(workspaces / "state"),
            "CONTAINER_LABELS": ",".join(f"{key}={value}" for key, value in TEST_LABELS.items()),
        },
        healthcheck={"test": ["NONE"]},
    )
    try:
        for node, text in (("host", "hello from the host node"), ("image", "hello from the image node")):
            run = _run_on(server, node, text)
            assert (run["status"], run["exit_code"]) == ("succeeded", 0), (run, server.logs())
            assert run["node_id"] == f"{node}-node"
            assert text in run["logged"]
    finally:
        host_node.stop()
        image_node.remove(force=True)
