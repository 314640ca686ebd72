"""Fixtures shared by the end-to-end tests of the proxy test (one node, and a fleet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxies import TargetServer
from tests.support.server import ServerProcess

PROXY_TEST_OFFLINE_AFTER = 3.0  # seconds: a stopped node is offline quickly


@pytest.fixture(scope="module")
def workdir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the module's server, nodes and CLI config."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def proxy_test_server(
    workdir: Path, http_target: TargetServer, https_target: TargetServer
) -> Iterator[ServerProcess]:
    """An apiserver with 1 s heartbeats whose default proxy-test targets are the loopback targets."""
    data_dir = workdir / "server"
    data_dir.mkdir()
    env = {
        "DATABASE_URL": f"sqlite:///{data_dir / 'apiserver.db'}",
        "NODE_HEARTBEAT_INTERVAL": "1",
        "NODE_OFFLINE_AFTER": str(PROXY_TEST_OFFLINE_AFTER),
        "PROXY_TEST_URL": http_target.url(),
        "PROXY_TEST_HTTPS_URL": https_target.url(),
    }
    with ServerProcess(env=env, data_dir=data_dir) as server:
        yield server
