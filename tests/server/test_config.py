"""Settings.from_env and the start-up checks of `python -m server`."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError, Settings, async_database_url, is_loopback, sqlite_path
from tests.support.server import REPO_ROOT
from tests.support.tls import ThrowawayCA, make_test_ca

CLEAR_TEXT_WARNING = "bearer tokens travel in clear text"


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.database_url == "sqlite+aiosqlite:///data/apiserver.db"
    assert settings.redis_url is None
    assert (settings.heartbeat_interval, settings.offline_after) == (30.0, 90.0)
    assert (settings.run_lost_grace, settings.run_max_attempts) == (60.0, 3)
    assert settings.max_body_size == 1024 * 1024
    assert (settings.heartbeat_rate_burst, settings.heartbeat_rate_per_second) == (20, 2.0)
    assert settings.run_max_log_bytes == 64 * 1024 * 1024
    assert (settings.run_retention, settings.audit_retention) == (604800.0, 7776000.0)
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
            "HEARTBEAT_RATE_BURST": "50",
            "HEARTBEAT_RATE_PER_SECOND": "0.5",
            "RUN_MAX_LOG_BYTES": "1048576",
            "RUN_RETENTION": "3600",
            "AUDIT_RETENTION": "86400",
            "LOG_LEVEL": "debug",
        }
    )
    assert (settings.run_retention, settings.audit_retention) == (3600.0, 86400.0)
    assert (settings.heartbeat_rate_burst, settings.heartbeat_rate_per_second) == (50, 0.5)
    assert settings.run_max_log_bytes == 1024 * 1024
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
        ({"HEARTBEAT_RATE_BURST": "0"}, "HEARTBEAT_RATE_BURST must be between 1 and"),
        ({"HEARTBEAT_RATE_PER_SECOND": "0"}, "HEARTBEAT_RATE_PER_SECOND must be above 0"),
        ({"HEARTBEAT_RATE_PER_SECOND": "nan"}, "HEARTBEAT_RATE_PER_SECOND must be above 0"),
        ({"HEARTBEAT_RATE_PER_SECOND": "often"}, "HEARTBEAT_RATE_PER_SECOND must be a number per second"),
        ({"RUN_MAX_LOG_BYTES": "10"}, "RUN_MAX_LOG_BYTES must be between"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"RUN_RETENTION": "0"}, "RUN_RETENTION must be between 0 \\(exclusive\\) and"),
        ({"RUN_RETENTION": "a week"}, "RUN_RETENTION must be a number of seconds"),
        ({"AUDIT_RETENTION": "-5"}, "AUDIT_RETENTION must be between"),
        ({"AUDIT_RETENTION": "1e12"}, "AUDIT_RETENTION must be between"),
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


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


def test_tls_needs_both_files(tmp_path: Path) -> None:
    some_file = tmp_path / "file.pem"
    some_file.write_text("x")
    with pytest.raises(ConfigError, match="TLS_KEY_FILE must be set too when TLS_CERT_FILE is"):
        Settings.from_env({"TLS_CERT_FILE": str(some_file)})
    with pytest.raises(ConfigError, match="TLS_CERT_FILE must be set too when TLS_KEY_FILE is"):
        Settings.from_env({"TLS_KEY_FILE": str(some_file)})
    with pytest.raises(ConfigError, match="TLS_CERT_FILE must name a readable file"):
        Settings.from_env({"TLS_CERT_FILE": str(tmp_path / "missing.pem"), "TLS_KEY_FILE": str(some_file)})
    with pytest.raises(ConfigError, match="TLS_KEY_FILE must name a readable file"):
        Settings.from_env({"TLS_CERT_FILE": str(some_file), "TLS_KEY_FILE": str(tmp_path)})
    assert not Settings.from_env({}).tls


def test_tls_files_must_be_a_certificate_and_its_key(test_ca: ThrowawayCA, tmp_path: Path) -> None:
    cert, key = str(test_ca.cert_file), str(test_ca.key_file)
    settings = Settings.from_env({"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key})
    assert settings.tls
    assert (settings.tls_cert_file, settings.tls_key_file) == (test_ca.cert_file, test_ca.key_file)

    other_key = str(test_ca.ca_file.with_name("ca-key.pem"))
    with pytest.raises(ConfigError, match="TLS_KEY_FILE is not the private key of the certificate"):
        Settings.from_env({"TLS_CERT_FILE": cert, "TLS_KEY_FILE": other_key})
    with pytest.raises(ConfigError, match="TLS_CERT_FILE must name a PEM certificate file"):
        Settings.from_env({"TLS_CERT_FILE": key, "TLS_KEY_FILE": key})
    with pytest.raises(ConfigError, match="TLS_KEY_FILE must name the unencrypted PEM private key"):
        Settings.from_env({"TLS_CERT_FILE": cert, "TLS_KEY_FILE": cert})
    encrypted = tmp_path / "encrypted-key.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with pytest.raises(ConfigError, match="TLS_KEY_FILE must name the unencrypted"):  # refused, not prompted
        Settings.from_env({"TLS_CERT_FILE": cert, "TLS_KEY_FILE": str(encrypted)})


def test_tokens_in_use() -> None:
    assert not Settings.from_env({}).uses_tokens
    assert Settings.from_env({"ADMIN_TOKEN": "admin-token"}).uses_tokens
    assert Settings.from_env({"NODE_JOIN_TOKEN": "join-token"}).uses_tokens
    assert Settings.from_env({"NODE_JOIN_TOKEN": "join-token"}).protected_mode is False
    viewer_only = Settings.from_env({"VIEWER_TOKEN": "viewer-token"})
    assert viewer_only.uses_tokens
    assert viewer_only.protected_mode  # the admin API would be open: loopback only


def test_plain_http_with_tokens_beyond_loopback_warns_once(
    caplog: pytest.LogCaptureFixture, test_ca: ThrowawayCA
) -> None:
    tokens = {"ADMIN_TOKEN": "admin-token", "NODE_JOIN_TOKEN": "join-token"}
    tls = {"TLS_CERT_FILE": str(test_ca.cert_file), "TLS_KEY_FILE": str(test_ca.key_file)}
    with caplog.at_level(logging.WARNING, logger="server.config"):
        Settings.from_env({**tokens, "APISERVER_HOST": "0.0.0.0"}).check_listen_address()
    assert [r.getMessage() for r in caplog.records].count(
        "serving plain HTTP on 0.0.0.0: bearer tokens travel in clear text. Set TLS_CERT_FILE and "
        "TLS_KEY_FILE to serve HTTPS, unless a reverse proxy terminates TLS in front of this server"
    ) == 1

    for quiet in (
        {**tokens, **tls, "APISERVER_HOST": "0.0.0.0"},  # HTTPS
        {**tokens, "APISERVER_HOST": "127.0.0.1"},  # loopback only
        {"APISERVER_HOST": "::1"},  # no tokens to leak
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="server.config"):
            Settings.from_env(quiet).check_listen_address()
        assert CLEAR_TEXT_WARNING not in caplog.text


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
    result = _run_server({"RUN_RETENTION": "forever"})
    assert result.returncode == 2
    assert "RUN_RETENTION must be a number of seconds" in result.stderr


def test_help() -> None:
    result = _run_server({}, "--help")
    assert result.returncode == 0
    assert "DATABASE_URL" in result.stdout
    assert "TLS_CERT_FILE" in result.stdout
