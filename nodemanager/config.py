"""nodemanager settings, read once from the environment.

Every variable is validated at start-up; a bad value stops the daemon (exit 2)
with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from nodeapi.envreader import ConfigError as ConfigError
from nodeapi.envreader import EnvReader
from nodeapi.validation import validate_labels, validate_node_id

_C = TypeVar("_C", bound=str)

RuntimeKind = Literal["auto", "docker", "process"]
PullPolicy = Literal["if-not-present", "always", "never"]

RUNTIMES: tuple[RuntimeKind, ...] = ("auto", "docker", "process")
PULL_POLICIES: tuple[PullPolicy, ...] = ("if-not-present", "always", "never")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


# (name, default, meaning) for `--help`; the order is the order printed.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("API_SERVER_URL", "http://localhost:8080", "apiserver base URL"),
    ("NODE_ID", "dev-node-01", "unique id of this node"),
    ("WORKSPACE_DIR", "/tmp/agents-workspaces", "per-run workspace directories live here"),
    ("NODE_LABELS", "(auto: os, arch)", "extra labels, k=v,k2=v2"),
    ("MAX_CONCURRENT", "number of CPUs (min 1)", "runs executed at once; reported as capacity"),
    ("NODE_JOIN_TOKEN", "(unset)", "token presented to the apiserver"),
    ("RUNTIME", "auto", "auto | docker | process (auto: docker when an engine answers)"),
    ("IMAGE_PULL_POLICY", "if-not-present", "if-not-present | always | never"),
    ("STOP_GRACE", "10", "seconds between SIGTERM and SIGKILL when stopping a run"),
    ("WORKSPACE_RETENTION", "86400", "seconds a finished run's workspace is kept"),
    ("DOCKER_NETWORK", "host", "network of agent containers (host | none | a network name)"),
    ("PROXY_PROBE_IMAGE", "busybox:latest", "image used for in-container proxy tests"),
    ("PROXY_TEST_CA_FILE", "(unset)", "extra CA certificates (PEM) trusted for proxy-test HTTPS targets"),
    ("CONTAINER_LABELS", "(none)", "extra labels put on every container, k=v,k2=v2"),
    ("LOG_LEVEL", "INFO", "CRITICAL | ERROR | WARNING | INFO | DEBUG"),
)


@dataclass(frozen=True)
class NodeConfig:
    api_server_url: str = "http://localhost:8080"
    node_id: str = "dev-node-01"
    workspace_dir: Path = Path("/tmp/agents-workspaces")
    node_labels: dict[str, str] = field(default_factory=dict)
    max_concurrent: int = 1
    node_join_token: str | None = None
    runtime: RuntimeKind = "auto"
    image_pull_policy: PullPolicy = "if-not-present"
    stop_grace: float = 10.0
    workspace_retention: float = 24 * 3600.0
    docker_network: str = "host"
    proxy_probe_image: str = "busybox:latest"
    proxy_test_ca_file: Path | None = None
    container_labels: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeConfig:
        env = os.environ if environ is None else environ
        reader = _NodeEnvReader(env)
        url = (reader.text("API_SERVER_URL") or "http://localhost:8080").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"API_SERVER_URL must start with http:// or https://, got {url!r}")
        node_id = reader.text("NODE_ID") or "dev-node-01"
        try:
            validate_node_id(node_id, "NODE_ID")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        log_level = (reader.text("LOG_LEVEL") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        return cls(
            api_server_url=url,
            node_id=node_id,
            workspace_dir=Path(reader.text("WORKSPACE_DIR") or "/tmp/agents-workspaces"),
            node_labels=reader.labels("NODE_LABELS"),
            max_concurrent=reader.integer(
                "MAX_CONCURRENT", default_max_concurrent(), minimum=1, maximum=10_000
            ),
            node_join_token=reader.text("NODE_JOIN_TOKEN"),
            runtime=reader.choice("RUNTIME", RUNTIMES, "auto"),
            image_pull_policy=reader.choice("IMAGE_PULL_POLICY", PULL_POLICIES, "if-not-present"),
            stop_grace=reader.seconds("STOP_GRACE", 10.0, maximum=3600.0, allow_zero=True),
            workspace_retention=reader.seconds(
                "WORKSPACE_RETENTION", 24 * 3600.0, maximum=365 * 86400.0, allow_zero=True
            ),
            docker_network=reader.text("DOCKER_NETWORK") or "host",
            proxy_probe_image=reader.text("PROXY_PROBE_IMAGE") or "busybox:latest",
            proxy_test_ca_file=reader.readable_file("PROXY_TEST_CA_FILE"),
            container_labels=reader.labels("CONTAINER_LABELS"),
            log_level=log_level,
        )


def default_max_concurrent() -> int:
    """One run per CPU: agents are mostly I/O bound, but a node should not promise more than it has."""
    return max(1, os.cpu_count() or 1)


def parse_labels(raw: str, field: str = "labels") -> dict[str, str]:
    """`k=v,k2=v2` into a dict; raises ValueError naming the bad pair."""
    labels: dict[str, str] = {}
    for item in raw.split(","):
        pair = item.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"{field}: {pair!r} is not k=v")
        labels[key] = value
    validate_labels(labels, field)
    return labels


class _NodeEnvReader(EnvReader):
    def labels(self, name: str) -> dict[str, str]:
        raw = self.text(name)
        if raw is None:
            return {}
        try:
            return parse_labels(raw, name)
        except ValueError as exc:
            raise ConfigError(f"{exc} (expected k=v,k2=v2)") from None
