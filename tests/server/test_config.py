"""Settings.from_env and the start-up checks of `python -m server`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError, Settings, async_database_url, is_loopback, sqlite_path
from tests.support.server import REPO_ROOT


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.database_url == "sqlite+aiosqlite:///data/apiserver.db"
    assert settings.redis_url is None
    assert (settings.heartbeat_interval, settings.offline_after) == (30.0, 90.0)
    assert (settings.run_lost_grace, settings.run_max_attempts) == (60.0, 3)
    assert settings.max_body_size == 1024 * 1024
    assert settings.protected_mode
    data_dir = Settings.from_env({"APISERVER_DATA_DIR": str(tmp_path)})
    assert data_dir.database_url == f"sqlite+aiosqlite:///{tmp_path}/apiserver.db"
    assert sqlite_path(data_dir.database_url) == tmp_path / "apiserver.db"


def test_values_from_env() -> None:
    settings = Settings.from_env(
        {
            "APISERVER_HOST": "0.0.0.0",
            "APISERVER_PORT": "9000",
            "DATABASE_URL": "postgresql://u:p@db:5432/nodes",
            "REDIS_URL": "redis://localhost:6379/0",
            "NODE_HEARTBEAT_INTERVAL": "0.5",
            "NODE_OFFLINE_AFTER": "2",
            "ADMIN_TOKEN": "admin-token-1, admin-token-2",
            "VIEWER_TOKEN": "viewer-token",
            "NODE_JOIN_TOKEN": "join-token",
            "RUN_LOST_GRACE": "5",
            "RUN_MAX_ATTEMPTS": "7",
            "MAX_BODY_SIZE": "2048",
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://u:p@db:5432/nodes"
    assert (settings.port, settings.heartbeat_interval, settings.offline_after) == (9000, 0.5, 2.0)
    assert (settings.run_lost_grace, settings.run_max_attempts, settings.max_body_size) == (5.0, 7, 2048)
    assert settings.log_level == "DEBUG"
    assert settings.admin_tokens == ("admin-token-1", "admin-token-2")  # a list, for rotation
    assert (settings.viewer_tokens, settings.node_join_tokens) == (("viewer-token",), ("join-token",))
    assert "admin-token" not in repr(settings)
    assert not settings.protected_mode
    settings.check_listen_address()  # tokens set: any address is allowed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APISERVER_PORT": "http"}, "APISERVER_PORT must be an integer"),
        ({"APISERVER_PORT": "70000"}, "APISERVER_PORT must be between 0 and 65535"),
        ({"NODE_OFFLINE_AFTER": "soon"}, "NODE_OFFLINE_AFTER must be a number of seconds"),
        ({"NODE_HEARTBEAT_INTERVAL": "-1"}, "NODE_HEARTBEAT_INTERVAL must be between"),
        (
            {"NODE_HEARTBEAT_INTERVAL": "100"},
            "NODE_OFFLINE_AFTER .* must be greater than NODE_HEARTBEAT_INTERVAL",
        ),
        ({"RUN_MAX_ATTEMPTS": "0"}, "RUN_MAX_ATTEMPTS must be between 1 and 100"),
        ({"MAX_BODY_SIZE": "1"}, "MAX_BODY_SIZE must be between"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"DATABASE_URL": "mysql://x/y"}, "scheme 'mysql' is not supported"),
        ({"DATABASE_URL": "nodes.db"}, "DATABASE_URL must look like"),
        ({"DATABASE_URL": "sqlite://nodes.db"}, "three slashes"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start with"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN must hold tokens of at least 8"),
        ({"SECRETS_KEY": "not-a-fernet-key"}, "SECRETS_KEY must hold Fernet keys"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_database_url_mapping() -> None:
    assert async_database_url("sqlite:////abs/x.db") == "sqlite+aiosqlite:////abs/x.db"
    assert async_database_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert async_database_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _run_server(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_protected_mode_refuses_public_address() -> None:
    result = _run_server({"APISERVER_HOST": "0.0.0.0"})
    assert result.returncode == 2
    assert "protected mode" in result.stderr
    assert "ADMIN_TOKEN" in result.stderr


def test_invalid_value_stops_the_server_with_exit_2() -> None:
    result = _run_server({"NODE_OFFLINE_AFTER": "ninety"})
    assert result.returncode == 2
    assert "NODE_OFFLINE_AFTER must be a number of seconds" in result.stderr


def test_help() -> None:
    result = _run_server({}, "--help")
    assert result.returncode == 0
    assert "DATABASE_URL" in result.stdout
