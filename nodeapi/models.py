"""Wire schemas of the HTTP API: the one copy shared by apiserver, nodemanager and nodectl.

Plain msgspec structs, so importing them costs a few milliseconds and pulls in no
server, database, Redis or Docker code. Unknown fields are ignored on decode, which
keeps older clients working against newer servers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

NodeStatus = Literal["online", "offline", "draining"]
RunStatus = Literal["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lost"]
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "lost"})
ACTIVE_RUN_STATUSES: frozenset[str] = frozenset({"scheduled", "running"})

ProxyTestReason = Literal[
    "ok", "dns", "refused", "timeout", "auth_required", "upstream_error", "tls_error", "bad_status", "error"
]


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base for every wire struct."""


# --------------------------------------------------------------------------- nodes


class Capacity(Struct):
    max_concurrent: int = 1


class NodeInfo(Struct):
    hostname: str | None = None
    os: str | None = None
    arch: str | None = None
    kernel: str | None = None
    agent_version: str | None = None
    python_version: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    cpus: int | None = None
    memory_bytes: int | None = None


class HeartbeatRequest(Struct):
    node_id: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    info: NodeInfo = msgspec.field(default_factory=NodeInfo)
    # every run the node holds: claimed or starting, running, waiting for a slot, or finishing
    active_runs: list[str] = msgspec.field(default_factory=list)
    # the placement (attempt) of each held run the node is executing, when it knows it
    run_attempts: dict[str, int] = msgspec.field(default_factory=dict)


class HeartbeatResponse(Struct, omit_defaults=True):
    node_id: str
    status: NodeStatus
    heartbeat_interval: float
    offline_after: float
    # runs the node reported that the server wants stopped (cancelled, lost, unknown); always sent
    stop_runs: list[str]
    # only in the answer that registers the node (or gives it a new credential): its bearer token
    node_token: str | None = None


class ProxyTestStep(Struct):
    name: str  # "connect" | "http" | "https"
    ok: bool
    latency_ms: float | None = None
    detail: str | None = None
    status_code: int | None = None
    skipped: bool = False  # not attempted (an earlier step failed, HTTPS in a container); `ok` is false
    target: str | None = None  # the URL an http or https step fetched


class ProxyTestResult(Struct):
    ok: bool
    reason: ProxyTestReason
    message: str
    proxy: str | None = None  # credentials masked
    target_http: str | None = None  # the first plain HTTP target
    target_https: str | None = None  # the first HTTPS target
    targets: list[str] = msgspec.field(default_factory=list)  # every target, in the order tested
    in_container: bool = False
    steps: list[ProxyTestStep] = msgspec.field(default_factory=list)
    node_id: str | None = None
    tested_at: datetime | None = None


class Node(Struct):
    id: str
    status: NodeStatus
    draining: bool
    labels: dict[str, str]
    capacity: Capacity
    running: int
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime | None = None
    info: NodeInfo = msgspec.field(default_factory=NodeInfo)
    # bumped on every admin change (labels, status, env config); send back as If-Match
    resource_version: int = 1
    last_proxy_test: ProxyTestResult | None = None


class NodePatch(Struct):
    """JSON merge patch on a node: `labels` values of null remove the key."""

    labels: dict[str, str | None] | None = None
    status: Literal["online", "draining"] | None = None
    max_concurrent: int | None = None
    resource_version: int | None = None


class NodeList(Struct):
    items: list[Node]
    total: int
    limit: int
    offset: int


# --------------------------------------------------------------------------- env config


class ProxyConfig(Struct):
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None


class EnvConfig(Struct):
    """Reads show proxy passwords and `secret_env` values as `***` (unless revealed); a PUT that
    sends `***` back keeps the stored value."""

    proxy: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    secret_env: dict[str, str] = msgspec.field(default_factory=dict)
    resource_version: int | None = None
    updated_at: datetime | None = None


class ProxyTestRequest(Struct):
    """Targets: `urls` (http:// or https://, each fetched through the proxy its scheme selects),
    plus `url` and `https_url`; a request that names none gets the server's default targets."""

    proxy: ProxyConfig | None = None  # test this instead of the saved one
    urls: list[str] = msgspec.field(default_factory=list)
    url: str | None = None  # plain HTTP target
    https_url: str | None = None  # HTTPS target (CONNECT + TLS)
    timeout: float | None = None  # seconds, per step
    in_container: bool = False
    image: str | None = None  # image for in_container; default: the node's probe image


# --------------------------------------------------------------------------- runs


class RunCreate(Struct):
    image: str
    command: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    secret_env: dict[str, str] = msgspec.field(default_factory=dict)  # reads show `***`
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    # set-based expressions, Kubernetes style: "gpu in (a,b)", "zone notin (x)", "ssd", "!spot"
    selector_expressions: list[str] = msgspec.field(default_factory=list)


class Run(Struct):
    id: str
    status: RunStatus
    image: str
    command: list[str]
    env: dict[str, str]
    node_selector: dict[str, str]
    node_id: str | None
    exit_code: int | None
    created_at: datetime
    secret_env: dict[str, str] = msgspec.field(default_factory=dict)  # `***`, but for its node
    selector_expressions: list[str] = msgspec.field(default_factory=list)
    updated_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    container_id: str | None = None
    message: str | None = None  # latest reason: unschedulable, failure, ...
    # highest node-side event sequence number the server has stored (nodemanager resumes after it)
    last_node_seq: int = 0


class RunList(Struct):
    items: list[Run]
    total: int
    limit: int
    offset: int


class RunEvent(Struct):
    seq: int
    type: str
    at: datetime
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class RunEventList(Struct):
    items: list[RunEvent]
    run_id: str
    status: RunStatus


# --------------------------------------------------------------------------- node <-> server work channel


class NodeEventIn(Struct):
    """One event reported by a node for a run.

    `node_seq` is per run and strictly increasing on the node; the server ignores
    any event whose node_seq it has already stored, so retries never duplicate.
    Types: claimed, started {container_id}, log {stream, text}, exited {exit_code},
    failed {reason}, cancelled {exit_code?}.
    """

    node_seq: int
    type: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    at: datetime | None = None


class NodeEventBatch(Struct):
    node_id: str
    events: list[NodeEventIn]
    # the placement these events are about (the run's `attempts` when the node was given it);
    # the server refuses events of an older placement. None: not checked (older nodes)
    attempt: int | None = None


class NodeEventAck(Struct):
    run_id: str
    status: RunStatus
    last_node_seq: int
    accepted: int
    cancel_requested: bool = False
    # answers an empty batch only: the `ts` of the run's last stored log line
    last_log_ts: str | None = None


class Assignment(Struct):
    """A run the scheduler placed on the node, with what the node needs to start it."""

    run: Run
    env_config: EnvConfig


class NodeCommand(Struct):
    id: str
    type: str  # "test_proxy"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class WorkResponse(Struct):
    """Answer of the long-poll GET /api/v1/nodes/{id}/work."""

    assignments: list[Assignment] = msgspec.field(default_factory=list)
    cancel_runs: list[str] = msgspec.field(default_factory=list)
    commands: list[NodeCommand] = msgspec.field(default_factory=list)
    draining: bool = False
    # runs the server has as `running` here: a restarted node reports those it has no
    # container for as failed
    running_runs: list[str] = msgspec.field(default_factory=list)


class CommandResult(Struct):
    ok: bool
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------- console sign-in


class LoginRequest(Struct):
    token: str


class SessionInfo(Struct):
    """Who the caller is. `csrf_token` (console sessions only) goes back in `X-CSRF-Token` on
    every change made through the session cookie."""

    role: Literal["admin", "viewer", "node", "anonymous"]
    protected_mode: bool = False
    csrf_token: str | None = None
    expires_at: datetime | None = None


# --------------------------------------------------------------------------- misc


class AuditEntry(Struct):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class AuditList(Struct):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


class ErrorBody(Struct):
    """Every 4xx/5xx answer. `detail` is the human message."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None
