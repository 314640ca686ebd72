"""Pytest plugin for tests on the real Docker engine. Load with
`pytest_plugins = ["tests.support.docker"]`.

Every test container carries the labels `agentnodes.test=1` and
`agentnodes.test.session=<pid of the pytest process>` (tests.support.images.TEST_LABELS).
`docker_client` removes this session's containers before and after each test; the first use
also removes leftovers of sessions that are gone. Containers labelled with another pytest
session that runs at the same time on the same engine are left alone. To get the same
protection, give containers started by a program under test TEST_LABELS too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import SESSION_LABEL, TEST_LABEL, TEST_SESSION, ensure_test_image
from tests.support.ports import IN_CI


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


def _session_alive(session: str | None) -> bool:
    if not session or not session.isdigit():
        return False
    try:
        os.kill(int(session), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_test_containers(client: Any, *, leftovers: bool = False) -> int:
    """Remove this session's test containers and those without a session label (started by
    a nodemanager under test with only `agentnodes.test=1`); with `leftovers`, also those of
    sessions that have ended."""
    import docker.errors

    containers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}, ignore_removed=True)
    removed = 0
    for container in containers:
        session = container.labels.get(SESSION_LABEL)
        if session is None or session == TEST_SESSION or (leftovers and not _session_alive(session)):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
                removed += 1
    return removed


@pytest.fixture(scope="session")
def docker_session_client() -> Iterator[Any]:
    client = connect_or_skip()
    remove_test_containers(client, leftovers=True)
    yield client
    remove_test_containers(client)
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_session_client: Any) -> str:
    return ensure_test_image(docker_session_client)


@pytest.fixture
def docker_client(docker_session_client: Any, test_image: str) -> Iterator[Any]:
    remove_test_containers(docker_session_client)
    yield docker_session_client
    remove_test_containers(docker_session_client)
