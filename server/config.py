"""apiserver settings, read once from the environment (pydantic-settings).

Every variable is validated at start-up: a bad value stops the server with a message
naming the variable, instead of failing later on first use.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic_settings import NoDecode

from nodeapi.logs import LogFormat
from nodeapi.settings import ConfigError as ConfigError
from nodeapi.settings import (
    EnvSettings,
    checked,
    choice,
    integer,
    per_second,
    positive,
    readable_file,
    seconds,
)
from nodeapi.validation import MAX_CPUS, MAX_DEADLINE_SECONDS, MAX_MEMORY_MB, MAX_PIDS_LIMIT, MIN_PIDS_LIMIT

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
MIN_TOKEN_LENGTH = 8


def _redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return url


def _tokens(raw: str) -> tuple[str, ...]:
    tokens = tuple(token.strip() for token in raw.split(",") if token.strip())
    for token in tokens:
        if len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ValueError(
                f"must hold tokens of at least {MIN_TOKEN_LENGTH} printable characters without spaces, "
                "separated by commas"
            )
    return tokens


def _fernet_keys(raw: str) -> tuple[str, ...]:
    from cryptography.fernet import Fernet

    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(
                "must hold Fernet keys (32 url-safe base64-encoded bytes each, separated by commas); "
                'make one with python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from None
    return keys


def _http_target(scheme: str) -> Any:
    def check(url: str) -> str:
        if not url.startswith(f"{scheme}://") or len(url) > 2048 or any(ch.isspace() for ch in url):
            raise ValueError(f"must be an {scheme}:// URL without spaces, got {url[:80]!r}")
        return url

    return checked(check)


MAX_RETENTION = 10 * 365 * 86400.0  # seconds; ten years


class Settings(EnvSettings):
    host: str = Field("127.0.0.1", validation_alias="APISERVER_HOST")
    port: Annotated[int, integer(0, 65535)] = Field(8080, validation_alias="APISERVER_PORT")
    data_dir: Path = Field(Path("data"), validation_alias="APISERVER_DATA_DIR")
    # the SQLAlchemy async URL; DATABASE_URL takes sqlite:///PATH or postgresql://...
    database_url: str = Field("", validation_alias="DATABASE_URL")
    redis_url: Annotated[str | None, checked(_redis_url)] = Field(None, validation_alias="REDIS_URL")
    heartbeat_interval: Annotated[float, seconds()] = Field(30.0, validation_alias="NODE_HEARTBEAT_INTERVAL")
    offline_after: Annotated[float, seconds()] = Field(90.0, validation_alias="NODE_OFFLINE_AFTER")
    # each: one token, or several separated by commas (so a token can be rotated without downtime)
    admin_tokens: Annotated[tuple[str, ...], NoDecode, checked(_tokens)] = Field(
        (), validation_alias="ADMIN_TOKEN", repr=False
    )
    viewer_tokens: Annotated[tuple[str, ...], NoDecode, checked(_tokens)] = Field(
        (), validation_alias="VIEWER_TOKEN", repr=False
    )
    node_join_tokens: Annotated[tuple[str, ...], NoDecode, checked(_tokens)] = Field(
        (), validation_alias="NODE_JOIN_TOKEN", repr=False
    )
    # Fernet keys, comma-separated: the first encrypts, all decrypt (key rotation)
    secrets_keys: Annotated[tuple[str, ...], NoDecode, checked(_fernet_keys)] = Field(
        (), validation_alias="SECRETS_KEY", repr=False
    )
    session_ttl: Annotated[float, seconds(30 * 86400.0)] = Field(12 * 3600.0, validation_alias="SESSION_TTL")
    # how long a run placed on a live node may go unlisted in its heartbeats; default 3 intervals
    run_reconcile_grace: Annotated[float | None, seconds()] = Field(
        None, validation_alias="RUN_RECONCILE_GRACE"
    )
    run_lost_grace: Annotated[float, seconds()] = Field(60.0, validation_alias="RUN_LOST_GRACE")
    # with replicas: how long the leader's lease lives unrenewed, so how soon another takes over
    leader_lease: Annotated[float, seconds(3600.0)] = Field(15.0, validation_alias="LEADER_LEASE_SECONDS")
    run_max_attempts: Annotated[int, integer(1, 100)] = Field(3, validation_alias="RUN_MAX_ATTEMPTS")
    # how long a finished run (with its events and logs) and an audit entry are kept
    run_retention: Annotated[float, seconds(MAX_RETENTION)] = Field(
        7 * 86400.0, validation_alias="RUN_RETENTION"
    )
    audit_retention: Annotated[float, seconds(MAX_RETENTION)] = Field(
        90 * 86400.0, validation_alias="AUDIT_RETENTION"
    )
    # a run that failed to start through its node's fault avoids that node this long
    start_failure_cooldown: Annotated[float, seconds(7 * 86400.0, allow_zero=True)] = Field(
        300.0, validation_alias="START_FAILURE_COOLDOWN"
    )
    # start failures in a row, each the node's fault, that quarantine it
    quarantine_after: Annotated[int, integer(1, 1000)] = Field(3, validation_alias="QUARANTINE_AFTER")
    # first quarantine; each further one in a row doubles it, up to QUARANTINE_MAX
    quarantine_backoff: Annotated[float, seconds(7 * 86400.0)] = Field(
        60.0, validation_alias="QUARANTINE_BACKOFF"
    )
    quarantine_max: Annotated[float, seconds(30 * 86400.0)] = Field(3600.0, validation_alias="QUARANTINE_MAX")
    # run limits: defaults for a create body that names none, and ceilings it may not pass
    run_default_deadline: Annotated[int | None, integer(1, MAX_DEADLINE_SECONDS)] = Field(
        None, validation_alias="RUN_DEFAULT_DEADLINE"
    )
    run_max_deadline: Annotated[int, integer(1, MAX_DEADLINE_SECONDS)] = Field(
        7 * 86400, validation_alias="RUN_MAX_DEADLINE"
    )
    # past a run's deadline by this long with its node silent, the server ends it itself
    run_deadline_grace: Annotated[float, seconds()] = Field(60.0, validation_alias="RUN_DEADLINE_GRACE")
    run_default_cpus: Annotated[float | None, positive(MAX_CPUS)] = Field(
        None, validation_alias="RUN_DEFAULT_CPUS"
    )
    run_default_memory_mb: Annotated[int | None, integer(1, MAX_MEMORY_MB)] = Field(
        None, validation_alias="RUN_DEFAULT_MEMORY_MB"
    )
    run_default_pids_limit: Annotated[int, integer(MIN_PIDS_LIMIT, MAX_PIDS_LIMIT)] = Field(
        1024, validation_alias="RUN_DEFAULT_PIDS_LIMIT"
    )
    run_max_pids_limit: Annotated[int, integer(MIN_PIDS_LIMIT, MAX_PIDS_LIMIT)] = Field(
        32768, validation_alias="RUN_MAX_PIDS_LIMIT"
    )
    max_body_size: Annotated[int, integer(1024, 1024**3)] = Field(
        1024 * 1024, validation_alias="MAX_BODY_SIZE"
    )
    # heartbeats of one node id: a token bucket of this many, refilled at this rate (else 429)
    heartbeat_rate_burst: Annotated[int, integer(1, 1_000_000)] = Field(
        20, validation_alias="HEARTBEAT_RATE_BURST"
    )
    heartbeat_rate_per_second: Annotated[float, per_second(1_000_000.0)] = Field(
        2.0, validation_alias="HEARTBEAT_RATE_PER_SECOND"
    )
    # how often the last-seen times of heartbeats kept off the database path are written to it
    liveness_flush_interval: Annotated[float, seconds(60.0)] = Field(
        1.0, validation_alias="LIVENESS_FLUSH_INTERVAL"
    )
    # bytes of log text stored per run; later log events of the run are dropped (one log_truncated event)
    run_max_log_bytes: Annotated[int, integer(1024, 2**40)] = Field(
        64 * 1024 * 1024, validation_alias="RUN_MAX_LOG_BYTES"
    )
    log_level: Annotated[str, choice(*LOG_LEVELS, upper=True)] = Field("INFO", validation_alias="LOG_LEVEL")
    # auto: JSON lines when stderr is not a terminal (a service, a container), else readable text
    log_format: Annotated[LogFormat, choice("auto", "json", "console")] = Field(
        "auto", validation_alias="LOG_FORMAT"
    )
    proxy_test_url: Annotated[str, _http_target("http")] = Field(
        "http://example.com/", validation_alias="PROXY_TEST_URL"
    )
    proxy_test_https_url: Annotated[str, _http_target("https")] = Field(
        "https://example.com/", validation_alias="PROXY_TEST_HTTPS_URL"
    )
    tls_cert_file: Annotated[Path | None, readable_file()] = Field(None, validation_alias="TLS_CERT_FILE")
    tls_key_file: Annotated[Path | None, readable_file()] = Field(None, validation_alias="TLS_KEY_FILE")

    @model_validator(mode="before")
    @classmethod
    def _database_url(cls, values: Any) -> Any:
        if isinstance(values, dict):
            data_dir = values.get("APISERVER_DATA_DIR") or "data"
            raw = values.get("DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'apiserver.db'}"
            values = {**values, "DATABASE_URL": async_database_url(raw)}
        return values

    @model_validator(mode="after")
    def _liveness_window(self) -> Settings:
        if self.offline_after <= self.heartbeat_interval:
            raise ValueError(
                f"NODE_OFFLINE_AFTER ({self.offline_after:g}s) must be greater than "
                f"NODE_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g}s), or every node flaps offline"
            )
        return self

    @model_validator(mode="after")
    def _run_limits(self) -> Settings:
        if self.run_default_deadline is not None and self.run_default_deadline > self.run_max_deadline:
            raise ValueError(
                f"RUN_DEFAULT_DEADLINE ({self.run_default_deadline}s) must not exceed "
                f"RUN_MAX_DEADLINE ({self.run_max_deadline}s)"
            )
        if self.run_default_pids_limit > self.run_max_pids_limit:
            raise ValueError(
                f"RUN_DEFAULT_PIDS_LIMIT ({self.run_default_pids_limit}) must not exceed "
                f"RUN_MAX_PIDS_LIMIT ({self.run_max_pids_limit})"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            check_tls_pair(self.tls_cert_file, self.tls_key_file)
        elif self.tls_cert_file is not None or self.tls_key_file is not None:
            given, missing = (
                ("TLS_CERT_FILE", "TLS_KEY_FILE")
                if self.tls_key_file is None
                else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            )
            raise ValueError(
                f"{missing} must be set too when {given} is: HTTPS needs the certificate and its key"
            )
        return self

    @property
    def protected_mode(self) -> bool:
        """Neither ADMIN_TOKEN nor NODE_JOIN_TOKEN: no credential is checked, so the server may only
        listen on loopback (the single-machine development setup)."""
        return not self.admin_tokens and not self.node_join_tokens

    @property
    def uses_tokens(self) -> bool:
        """Some bearer token is configured: callers must present one."""
        return bool(self.admin_tokens or self.viewer_tokens or self.node_join_tokens)

    @property
    def tls(self) -> bool:
        """The server itself serves HTTPS (TLS_CERT_FILE and TLS_KEY_FILE)."""
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def reconcile_grace(self) -> float:
        if self.run_reconcile_grace is not None:
            return self.run_reconcile_grace
        return 3 * self.heartbeat_interval

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
        log = logging.getLogger("server.config")
        if self.admin_tokens and not self.node_join_tokens:
            log.warning(
                "NODE_JOIN_TOKEN is not set: no new node can register (nodes with a credential still work)"
            )
        if not self.admin_tokens and not is_loopback(self.host):
            log.warning(
                "ADMIN_TOKEN is not set: the admin API on %s is open to anyone who can reach it; "
                "NODE_JOIN_TOKEN only guards the node endpoints",
                self.host,
            )
        if self.uses_tokens and not self.tls and not is_loopback(self.host):
            logging.getLogger("server.config").warning(
                "serving plain HTTP on %s: bearer tokens travel in clear text. Set TLS_CERT_FILE and "
                "TLS_KEY_FILE to serve HTTPS, unless a reverse proxy terminates TLS in front of this server",
                self.host,
            )


def check_tls_pair(cert_file: Path, key_file: Path) -> None:
    """ValueError naming the variable unless the files are a PEM certificate (chain) and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert_file)  # parses every certificate in the file
    except (OSError, ValueError):
        raise ValueError(f"TLS_CERT_FILE must name a PEM certificate file, got {str(cert_file)!r}") from None
    try:
        # a password callback, so that an encrypted key fails here instead of prompting
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except (OSError, ValueError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ValueError(
                "TLS_KEY_FILE is not the private key of the certificate in TLS_CERT_FILE"
            ) from None
        raise ValueError(
            f"TLS_KEY_FILE must name the unencrypted PEM private key of TLS_CERT_FILE, got {str(key_file)!r}"
        ) from None


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
        raise ValueError(f"DATABASE_URL must look like sqlite:///PATH or postgresql://..., got {url!r}")
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        if not rest.startswith("/") or rest == "/":
            raise ValueError("DATABASE_URL for SQLite must be sqlite:///PATH (three slashes)")
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported; use sqlite:/// or postgresql://")


def sqlite_path(async_url: str) -> Path | None:
    """The file behind a sqlite URL, or None for in-memory databases and other backends."""
    if not async_url.startswith("sqlite"):
        return None
    path = async_url.partition("://")[2][1:].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)
