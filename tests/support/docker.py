"""Pytest plugin for tests on the real Docker engine (registered in tests/conftest.py).

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
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import SESSION_LABEL, TEST_LABEL, TEST_SESSION, ensure_test_image
from tests.support.ports import unavailable

DOCKERD_ARGS = ("--bridge=none", "--iptables=false", "--ip6tables=false")
DOCKERD_START_TIMEOUT = 60.0


def _engine_socket_answers() -> bool:
    """Whether something accepts connections on the engine's unix socket. Checked by hand first:
    the SDK's client leaks its socket when the engine does not answer its constructor."""
    url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not url.startswith("unix://"):
        return True  # a TCP engine: let the SDK find out
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(url.removeprefix("unix://"))
        except OSError:
            return False
    return True


def _ping() -> Any:
    import docker

    if not _engine_socket_answers():
        raise OSError("nothing listens on the Docker engine's socket")
    client = docker.from_env(timeout=30)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


def connect_or_skip() -> Any:
    """A client of the local engine, started for this session when none answers and `dockerd`
    can be run (root); skips when there is no engine at all (fails under CI)."""
    import docker.errors

    try:
        return _ping()
    except (docker.errors.DockerException, OSError) as exc:
        problem = str(exc)
    if _start_dockerd():
        try:
            return _ping()
        except (docker.errors.DockerException, OSError) as exc:
            problem = str(exc)
    message = f"a Docker engine is required (docker info failed: {problem})"
    unavailable(message)


_STARTED_ENGINES: list[subprocess.Popen[bytes]] = []


def _start_dockerd() -> bool:
    """Start `dockerd` without a bridge or iptables (containers get loopback or the host's network).

    It keeps running after the session, as a system's engine would: other test sessions on the
    machine may be using it by then, and the next session starts faster."""
    import docker.errors

    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        return False
    log = open(os.path.join(tempfile.gettempdir(), "agentnodes-test-dockerd.log"), "ab")  # noqa: SIM115
    with log:
        process = subprocess.Popen(
            [dockerd, *DOCKERD_ARGS], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    # the engine outlives the session: hold the handle so its collection does not warn that
    # the process is still running (a warning the suite turns into an error)
    _STARTED_ENGINES.append(process)
    deadline = time.monotonic() + DOCKERD_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if _engine_socket_answers():
            try:
                _ping().close()
                return True
            except (docker.errors.DockerException, OSError):
                pass
        time.sleep(0.25)
    return False


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
