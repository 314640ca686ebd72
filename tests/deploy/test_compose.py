"""deploy/compose.yaml is a valid Compose file (`docker-compose config`, as CI runs it) holding the
whole topology, with its secrets from the env file, never written in the file itself."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, in the short form docker-compose 1.x prints or the long one."""
    found = []
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found.append((source, target))
    return found


def compose_config(*env_file: str) -> subprocess.CompletedProcess[str]:
    compose = require_binary("docker-compose", "docker-compose (Debian package docker-compose)")
    options = ["--env-file", env_file[0]] if env_file else []
    return subprocess.run(
        [compose, *options, "--file", str(COMPOSE), "config"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},  # nothing of the caller's environment is substituted
    )


def test_compose_config_validates_the_topology() -> None:
    done = compose_config(str(ENV_EXAMPLE))
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "apiserver", "nodemanager"}
    apiserver, nodemanager = services["apiserver"], services["nodemanager"]
    assert apiserver["build"]["context"] == str(DEPLOY.parent)  # the Dockerfile at the root
    assert apiserver["environment"]["ADMIN_TOKEN"] == "change-me-admin-token"
    assert apiserver["environment"]["DATABASE_URL"].startswith("postgresql://agentnodes:")
    assert apiserver["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert nodemanager["image"] == apiserver["image"]
    assert nodemanager["entrypoint"] == ["/opt/agent-nodes/bin/nodemanager"]
    assert nodemanager["environment"]["NODE_JOIN_TOKEN"] == apiserver["environment"]["NODE_JOIN_TOKEN"]
    assert ("/var/run/docker.sock", "/var/run/docker.sock") in mounts(nodemanager)
    workspaces = nodemanager["environment"]["WORKSPACE_DIR"]
    # the engine mounts a run's workspace by its host path: the same path inside the container
    assert any(source == target and workspaces.startswith(target) for source, target in mounts(nodemanager))


def test_compose_without_the_env_file_names_the_missing_secret() -> None:
    done = compose_config()
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in done.stderr


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for variable in ("POSTGRES_PASSWORD", "ADMIN_TOKEN", "NODE_JOIN_TOKEN"):
        assert f"${{{variable}:?" in text
    assert "change-me" not in text
