"""apiserver settings, read once from the environment.

Every variable is validated at start-up: a bad value stops the server with a
message naming the variable, instead of failing later on first use.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nodeapi.envreader import ConfigError as ConfigError
from nodeapi.envreader import EnvReader

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    database_url: str = ""  # SQLAlchemy async URL; from_env() always fills it
    redis_url: str | None = None
    heartbeat_interval: float = 30.0
    offline_after: float = 90.0
    admin_token: str | None = None
    node_join_token: str | None = None
    run_lost_grace: float = 60.0
    run_max_attempts: int = 3
    max_body_size: int = 1024 * 1024
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        data_dir = Path(reader.text("APISERVER_DATA_DIR") or "data")
        raw_db_url = reader.text("DATABASE_URL") or f"sqlite:///{data_dir / 'apiserver.db'}"
        settings = cls(
            host=reader.text("APISERVER_HOST") or "127.0.0.1",
            port=reader.integer("APISERVER_PORT", 8080, minimum=0, maximum=65535),
            data_dir=data_dir,
            database_url=async_database_url(raw_db_url),
            redis_url=reader.text("REDIS_URL"),
            heartbeat_interval=reader.seconds("NODE_HEARTBEAT_INTERVAL", 30.0),
            offline_after=reader.seconds("NODE_OFFLINE_AFTER", 90.0),
            admin_token=reader.text("ADMIN_TOKEN"),
            node_join_token=reader.text("NODE_JOIN_TOKEN"),
            run_lost_grace=reader.seconds("RUN_LOST_GRACE", 60.0),
            run_max_attempts=reader.integer("RUN_MAX_ATTEMPTS", 3, minimum=1, maximum=100),
            max_body_size=reader.integer("MAX_BODY_SIZE", 1024 * 1024, minimum=1024, maximum=1024**3),
            log_level=(reader.text("LOG_LEVEL") or "INFO").upper(),
        )
        if settings.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}")
        if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if settings.offline_after <= settings.heartbeat_interval:
            raise ConfigError(
                f"NODE_OFFLINE_AFTER ({settings.offline_after:g}s) must be greater than "
                f"NODE_HEARTBEAT_INTERVAL ({settings.heartbeat_interval:g}s), or every node flaps offline"
            )
        return settings

    @property
    def protected_mode(self) -> bool:
        """No token configured: the API is open, so it may only listen on loopback."""
        return not self.admin_token and not self.node_join_token

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_listen_address(self) -> None:
        if self.protected_mode and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host!r} in protected mode: neither ADMIN_TOKEN nor "
                "NODE_JOIN_TOKEN is set, so the API would be open to the network. Set ADMIN_TOKEN "
                "(and NODE_JOIN_TOKEN for nodes), or listen on 127.0.0.1."
            )
        if not self.admin_token and not is_loopback(self.host):
            logging.getLogger("server.config").warning(
                "ADMIN_TOKEN is not set: the admin API on %s is open to anyone who can reach it; "
                "NODE_JOIN_TOKEN only guards the node endpoints",
                self.host,
            )


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def async_database_url(url: str) -> str:
    """Map a user-facing `sqlite:///` or `postgresql://` URL to its asyncio driver."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"DATABASE_URL must look like sqlite:///PATH or postgresql://..., got {url!r}")
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        if not rest.startswith("/") or rest == "/":
            raise ConfigError("DATABASE_URL for SQLite must be sqlite:///PATH (three slashes)")
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(f"DATABASE_URL scheme {scheme!r} is not supported; use sqlite:/// or postgresql://")


def sqlite_path(async_url: str) -> Path | None:
    """The file behind a sqlite URL, or None for in-memory databases and other backends."""
    if not async_url.startswith("sqlite"):
        return None
    path = async_url.partition("://")[2][1:].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)
