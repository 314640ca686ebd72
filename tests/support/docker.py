"""Pytest plugin for tests on the real Docker engine. Load with
`pytest_plugins = ["tests.support.docker"]`.

Every test container carries the label `agentnodes.test=1`; they are removed by that
label before and after each test that uses `docker_client`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import ensure_test_image
from tests.support.ports import IN_CI

TEST_LABEL = "agentnodes.test"
TEST_LABELS = {TEST_LABEL: "1"}


def connect_or_skip() -> Any:
    """A client of the local engine; skips when there is none (fails under CI)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        message = f"a Docker engine is required (docker info failed: {exc})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return client


def remove_test_containers(client: Any) -> int:
    import docker.errors

    containers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}, ignore_removed=True)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    return len(containers)


@pytest.fixture(scope="session")
def docker_session_client() -> Iterator[Any]:
    client = connect_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_session_client: Any) -> str:
    return ensure_test_image(docker_session_client)


@pytest.fixture
def docker_client(docker_session_client: Any, test_image: str) -> Iterator[Any]:
    remove_test_containers(docker_session_client)
    yield docker_session_client
    remove_test_containers(docker_session_client)
