"""nodemanager settings, read once from the environment (pydantic-settings).

Every variable is validated at start-up; a bad value stops the daemon (exit 2)
with a message naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import NoDecode

from nodeapi.logs import LogFormat
from nodeapi.settings import ConfigError as ConfigError
from nodeapi.settings import EnvSettings, ca_file, checked, choice, integer, readable_file, seconds
from nodeapi.validation import MAX_CPUS, MAX_MEMORY_MB, parse_selector, validate_labels, validate_node_id
from nodemanager.runtime.sandbox import parse_capabilities

RuntimeKind = Literal["auto", "docker", "process"]
PullPolicy = Literal["if-not-present", "always", "never"]

RUNTIMES: tuple[RuntimeKind, ...] = ("auto", "docker", "process")
PULL_POLICIES: tuple[PullPolicy, ...] = ("if-not-present", "always", "never")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


# (name, default, meaning) for `--help`; the order is the order printed.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("API_SERVER_URL", "http://localhost:8080", "apiserver base URL"),
    ("API_SERVER_CA", "(system CA store)", "CA file (PEM) that verifies an https:// apiserver"),
    ("NODE_ID", "dev-node-01", "unique id of this node"),
    ("WORKSPACE_DIR", "/tmp/agents-workspaces", "per-run workspace directories live here"),
    ("NODE_LABELS", "(auto: os, arch)", "extra labels, k=v,k2=v2"),
    ("MAX_CONCURRENT", "number of CPUs (min 1)", "runs executed at once; reported as capacity"),
    ("NODE_CPUS", "(detected)", "CPUs runs may be given in all; capacity.cpus"),
    ("NODE_MEMORY_MB", "(detected)", "MiB of memory runs may be given in all; capacity.memory_mb"),
    ("NODE_JOIN_TOKEN", "(unset)", "token that registers the node; it then uses its own credential"),
    ("STATE_DIR", "$WORKSPACE_DIR/.nodemanager", "where the node keeps its credential (mode 0600)"),
    ("RUNTIME", "auto", "auto | docker | process (auto: docker when an engine answers)"),
    ("IMAGE_PULL_POLICY", "if-not-present", "if-not-present | always | never"),
    ("STOP_GRACE", "10", "seconds between SIGTERM and SIGKILL when stopping a run"),
    ("STOP_WAIT", "0", "on SIGTERM, seconds to wait for running runs to finish (0: leave them for adoption)"),
    ("WORKSPACE_RETENTION", "86400", "seconds a finished run's workspace is kept"),
    ("MIN_FREE_DISK_MB", "512", "below this much free space under WORKSPACE_DIR the node takes no new runs"),
    ("DOCKER_NETWORK", "host", "network of agent containers (host | none | a network name)"),
    ("ALLOW_CAPABILITIES", "(none)", "capabilities containers get beyond the default set, e.g. NET_RAW"),
    ("PROXY_PROBE_IMAGE", "busybox:latest", "image used for in-container proxy tests"),
    ("PROXY_TEST_CA_FILE", "(unset)", "extra CA certificates (PEM) trusted for proxy-test HTTPS targets"),
    ("CONTAINER_LABELS", "(none)", "extra labels put on every container, k=v,k2=v2"),
    ("LOG_LEVEL", "INFO", "CRITICAL | ERROR | WARNING | INFO | DEBUG"),
    ("METRICS_PORT", "(unset)", "serve Prometheus metrics on this port (unset: none)"),
    ("METRICS_HOST", "127.0.0.1", "address the metrics port listens on"),
    ("LOG_FORMAT", "auto", "auto (JSON lines when stderr is not a terminal) | json | console"),
)


def _api_server_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _node_id(node_id: str) -> str:
    try:
        return validate_node_id(node_id, "")
    except ValueError as exc:
        raise ValueError(str(exc).strip()) from None


def _labels(raw: str) -> dict[str, str]:
    try:
        labels = parse_selector(raw, "")
        validate_labels(labels, "")
    except ValueError as exc:
        raise ValueError(f"{str(exc).lstrip(': ')} (expected k=v,k2=v2)") from None
    return labels


def _cpus(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of CPUs, got {raw!r}") from None
    if not 0 < value <= MAX_CPUS:  # also refuses nan
        raise ValueError(f"must be above 0 and at most {MAX_CPUS:g}, got {raw!r}")
    return value


def default_max_concurrent() -> int:
    """One run per CPU: agents are mostly I/O bound, but a node should not promise more than it has."""
    return max(1, os.cpu_count() or 1)


class NodeConfig(EnvSettings):
    api_server_url: Annotated[str, checked(_api_server_url)] = Field(
        "http://localhost:8080", validation_alias="API_SERVER_URL"
    )
    api_server_ca: Annotated[Path | None, ca_file()] = Field(None, validation_alias="API_SERVER_CA")
    node_id: Annotated[str, checked(_node_id)] = Field("dev-node-01", validation_alias="NODE_ID")
    workspace_dir: Path = Field(Path("/tmp/agents-workspaces"), validation_alias="WORKSPACE_DIR")
    node_labels: Annotated[dict[str, str], NoDecode, checked(_labels)] = Field(
        default_factory=dict, validation_alias="NODE_LABELS"
    )
    max_concurrent: Annotated[int, integer(1, 10_000)] = Field(
        default_factory=default_max_concurrent, validation_alias="MAX_CONCURRENT"
    )
    # allocatable resources; None: what the runtime detects (runtime.allocatable())
    node_cpus: Annotated[float | None, checked(_cpus)] = Field(None, validation_alias="NODE_CPUS")
    node_memory_mb: Annotated[int | None, integer(1, MAX_MEMORY_MB)] = Field(
        None, validation_alias="NODE_MEMORY_MB"
    )
    node_join_token: str | None = Field(None, validation_alias="NODE_JOIN_TOKEN", repr=False)
    # where the node keeps its credential; default: WORKSPACE_DIR/.nodemanager
    state_dir: Path | None = Field(None, validation_alias="STATE_DIR")
    runtime: Annotated[RuntimeKind, choice(*RUNTIMES)] = Field("auto", validation_alias="RUNTIME")
    image_pull_policy: Annotated[PullPolicy, choice(*PULL_POLICIES)] = Field(
        "if-not-present", validation_alias="IMAGE_PULL_POLICY"
    )
    # on SIGTERM: 0 leaves runs running for the next start to adopt; N waits up to N seconds for them
    stop_wait: Annotated[float, seconds(7 * 86400.0, allow_zero=True)] = Field(
        0.0, validation_alias="STOP_WAIT"
    )
    stop_grace: Annotated[float, seconds(3600.0, allow_zero=True)] = Field(
        10.0, validation_alias="STOP_GRACE"
    )
    workspace_retention: Annotated[float, seconds(365 * 86400.0, allow_zero=True)] = Field(
        24 * 3600.0, validation_alias="WORKSPACE_RETENTION"
    )
    min_free_disk_mb: Annotated[int, integer(0, 10**9)] = Field(512, validation_alias="MIN_FREE_DISK_MB")
    docker_network: str = Field("host", validation_alias="DOCKER_NETWORK")
    allow_capabilities: Annotated[tuple[str, ...], NoDecode, checked(parse_capabilities)] = Field(
        (), validation_alias="ALLOW_CAPABILITIES"
    )
    proxy_probe_image: str = Field("busybox:latest", validation_alias="PROXY_PROBE_IMAGE")
    proxy_test_ca_file: Annotated[Path | None, readable_file()] = Field(
        None, validation_alias="PROXY_TEST_CA_FILE"
    )
    container_labels: Annotated[dict[str, str], NoDecode, checked(_labels)] = Field(
        default_factory=dict, validation_alias="CONTAINER_LABELS"
    )
    log_level: Annotated[str, choice(*LOG_LEVELS, upper=True)] = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: Annotated[LogFormat, choice("auto", "json", "console")] = Field(
        "auto", validation_alias="LOG_FORMAT"
    )
    metrics_port: Annotated[int | None, integer(1, 65535)] = Field(None, validation_alias="METRICS_PORT")
    metrics_host: str = Field("127.0.0.1", validation_alias="METRICS_HOST")

    @property
    def credential_path(self) -> Path:
        state_dir = self.state_dir if self.state_dir is not None else self.workspace_dir / ".nodemanager"
        return state_dir / f"node-token-{self.node_id}"
