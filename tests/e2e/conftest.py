"""Fixtures shared by the end-to-end tests: the apiserver's backends, and the proxy test's server
(one node, and a fleet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from tests.support.proxies import TargetServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

PROXY_TEST_OFFLINE_AFTER = 3.0  # seconds: a stopped node is offline quickly


@pytest.fixture(
    params=[
        "sqlite-embedded",
        pytest.param("postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The apiserver's environment for each way it is deployed: a SQLite file with the in-process
    run queue (one apiserver), or a fresh PostgreSQL database with Redis Streams (REDIS_URL, as
    replicas run it). Add it to a ServerProcess's env."""
    if request.param == "sqlite-embedded":
        return {"DATABASE_URL": f"sqlite:///{tmp_path / 'apiserver.db'}"}
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    redis: RedisServer = request.getfixturevalue("redis_server")
    return {"DATABASE_URL": postgres.create_database(), "REDIS_URL": redis.url}


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
