"""Shared fixtures: PostgreSQL per session, `database_url` over both backends, `apiserver` factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess

pytest_plugins = ["tests.support.docker", "tests.support.fixtures_proxies", "tests.support.fixtures_redis"]

ApiServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database: a SQLite file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'apiserver.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    return postgres.create_database()


@pytest.fixture
def apiserver(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[ApiServerFactory]:
    """Factory: `apiserver(env={...})` starts a real `python -m server` on the test's database.

    Every server started is stopped at teardown; their logs are attached to a failing test's report.
    """
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None) -> ServerProcess:
        data_dir = tmp_path / f"server-{len(started)}"
        data_dir.mkdir()
        server = ServerProcess(env={"DATABASE_URL": database_url, **(env or {})}, data_dir=data_dir)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
        request.node.add_report_section("teardown", f"apiserver :{server.port} log", server.log())
