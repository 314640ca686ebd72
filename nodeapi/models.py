"""Wire schemas of the HTTP API: the one copy shared by apiserver, nodemanager and nodectl.

Plain msgspec structs, so importing them costs a few milliseconds and pulls in no
server, database, Redis or Docker code. Unknown fields are ignored on decode, which
keeps older clients working against newer servers.

Every id has its syntax and every integer its range (msgspec `Meta`): the server refuses a
value outside them with 400 before any handler runs, and the OpenAPI schema states them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nodeapi.validation import (
    MAX_CAPACITY,
    MAX_CPUS,
    MAX_DEADLINE_SECONDS,
    MAX_ENV_VARS,
    MAX_EVENT_BATCH,
    MAX_EXIT_CODE,
    MAX_LABELS,
    MAX_MEMORY_MB,
    MAX_PIDS_LIMIT,
    MAX_RUNS_PER_EVENT_BATCH,
    MAX_SAFE_INT,
    MIN_EXIT_CODE,
    MIN_PIDS_LIMIT,
    NODE_ID_MAX_LENGTH,
    NODE_ID_PATTERN,
    RUN_ID_MAX_LENGTH,
    RUN_ID_PATTERN,
)

NodeStatus = Literal["online", "offline", "draining"]
RunStatus = Literal["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lost"]
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "lost"})
ACTIVE_RUN_STATUSES: frozenset[str] = frozenset({"scheduled", "running"})

ProxyTestReason = Literal[
    "ok", "dns", "refused", "timeout", "auth_required", "upstream_error", "tls_error", "bad_status", "error"
]


class Struct(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base for every wire struct."""


NodeId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=NODE_ID_MAX_LENGTH,
        pattern=NODE_ID_PATTERN,
        description="1-253 characters: a letter or digit, then letters, digits, '.', '_' or '-'",
    ),
]
RunId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=RUN_ID_MAX_LENGTH,
        pattern=RUN_ID_PATTERN,
        description="1-64 characters: a letter or digit, then letters, digits, '.', '_' or '-'",
    ),
]
Count = Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)]
Seq = Annotated[int, Meta(ge=1, le=MAX_SAFE_INT)]
Version = Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)]
Attempt = Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)]  # how often a run was placed
MaxConcurrent = Annotated[int, Meta(ge=1, le=MAX_CAPACITY)]
ExitCode = Annotated[int, Meta(ge=MIN_EXIT_CODE, le=MAX_EXIT_CODE)]
HttpStatus = Annotated[int, Meta(ge=0, le=999)]
Labels = Annotated[dict[str, str], Meta(max_length=MAX_LABELS)]
EnvVars = Annotated[dict[str, str], Meta(max_length=MAX_ENV_VARS)]


# --------------------------------------------------------------------------- nodes


Cpus = Annotated[float, Meta(gt=0, le=MAX_CPUS)]
MemoryMb = Annotated[int, Meta(ge=1, le=MAX_MEMORY_MB)]
DeadlineSeconds = Annotated[int, Meta(ge=1, le=MAX_DEADLINE_SECONDS)]
PidsLimit = Annotated[int, Meta(ge=MIN_PIDS_LIMIT, le=MAX_PIDS_LIMIT)]
# why a run ended: one value per terminal path, beside `exit_code` and the free-text `message`
RunReason = Literal[
    "succeeded",
    "exit_nonzero",
    "oom_killed",
    "deadline_exceeded",
    "cancelled",
    "node_lost",
    "start_failed",
    "image_missing",
]


class Capacity(Struct):
    max_concurrent: MaxConcurrent = 1
    # allocatable resources; None: not reported (then only max_concurrent bounds the node)
    cpus: Cpus | None = None
    memory_mb: MemoryMb | None = None


class Resources(Struct):
    """What a run asks for: placement counts it against the node's allocatable capacity, and the
    node enforces it as a limit (Docker: NanoCpus, Memory with no swap beyond it)."""

    cpus: Cpus | None = None
    memory_mb: MemoryMb | None = None


class ResourceUsage(Struct):
    """The summed requests of a node's active runs."""

    cpus: Annotated[float, Meta(ge=0)] = 0.0
    memory_mb: Count = 0


class Sandbox(Struct):
    """How tightly a run is confined beyond the defaults every run gets (no-new-privileges, a
    short capability list, a pids limit, never privileged, never the Docker socket)."""

    read_only_rootfs: bool = False  # the workspace and /tmp stay writable
    network: Literal["node", "none"] = "node"  # node: the node's DOCKER_NETWORK; none: no network
    pids_limit: PidsLimit | None = None  # None: the server's RUN_DEFAULT_PIDS_LIMIT


class NodeInfo(Struct):
    hostname: str | None = None
    os: str | None = None
    arch: str | None = None
    kernel: str | None = None
    agent_version: str | None = None
    python_version: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    cpus: Count | None = None
    memory_bytes: Count | None = None
    # how the runtime holds a run to its memory_mb: docker (the engine's cgroup), cgroup (a cgroup
    # v2 the nodemanager made), rlimit (RLIMIT_AS: address space, not resident memory), none
    memory_enforcement: Annotated[str, Meta(max_length=32)] | None = None


ConditionType = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ConditionMessage = Annotated[str, Meta(max_length=512)]


class ConditionReport(Struct):
    """One health check a node runs before each heartbeat (runtime, workspace, disk)."""

    type: ConditionType
    ok: bool
    message: ConditionMessage = ""


class NodeCondition(Struct):
    type: str
    ok: bool
    message: str = ""
    since: datetime | None = None  # when `ok` last changed (server's clock)


class HeartbeatRequest(Struct):
    node_id: NodeId
    labels: Labels = msgspec.field(default_factory=dict)
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    info: NodeInfo = msgspec.field(default_factory=NodeInfo)
    # every run the node holds: claimed or starting, running, waiting for a slot, or finishing
    active_runs: Annotated[list[RunId], Meta(max_length=MAX_CAPACITY)] = msgspec.field(default_factory=list)
    # the node's health checks; one failing keeps new runs away from it until it passes again
    conditions: Annotated[list[ConditionReport], Meta(max_length=16)] = msgspec.field(default_factory=list)
    # the placement (attempt) of each held run the node is executing, when it knows it
    run_attempts: Annotated[dict[RunId, Attempt], Meta(max_length=MAX_CAPACITY)] = msgspec.field(
        default_factory=dict
    )


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
    status_code: HttpStatus | None = None
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
    running: Count
    last_heartbeat_at: datetime | None
    created_at: datetime
    # whether it takes new runs now: online, every condition ok, not quarantined
    schedulable: bool = False
    # what the node reports of its health, plus `quarantine` while the server holds it back
    conditions: list[NodeCondition] = msgspec.field(default_factory=list)
    # the summed requests of its active runs (scheduled or running), against `capacity`
    requested: ResourceUsage = msgspec.field(default_factory=ResourceUsage)
    updated_at: datetime | None = None
    info: NodeInfo = msgspec.field(default_factory=NodeInfo)
    # bumped on every admin change (labels, status, env config); send back as If-Match
    resource_version: Version = 1
    last_proxy_test: ProxyTestResult | None = None


class NodePatch(Struct):
    """JSON merge patch on a node: `labels` values of null remove the key."""

    labels: Annotated[dict[str, str | None], Meta(max_length=MAX_LABELS)] | None = None
    status: Literal["online", "draining"] | None = None
    max_concurrent: MaxConcurrent | None = None
    # admin overrides of the allocatable resources the node reports (kept across heartbeats)
    cpus: Cpus | None = None
    memory_mb: MemoryMb | None = None
    resource_version: Version | None = None


class NodeChange(Struct):
    """What the live node stream (GET /api/v1/watch/nodes) sends of a node that changed: the
    fields a node list shows, as they are now."""

    id: str
    status: NodeStatus
    draining: bool
    schedulable: bool
    labels: dict[str, str]
    capacity: Capacity
    running: Count
    requested: ResourceUsage
    conditions: list[NodeCondition]
    last_heartbeat_at: datetime | None
    resource_version: Version


class NodeList(Struct):
    items: list[Node]
    total: Count
    limit: Count
    offset: Count
    # the live node stream's position when the list was read: GET /api/v1/watch/nodes?since=<it>
    # sends every change made after it
    stream_position: str | None = None


# --------------------------------------------------------------------------- env config


class ProxyConfig(Struct):
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None


class EnvConfig(Struct):
    """Reads show proxy passwords and `secret_env` values as `***` (unless revealed); a PUT that
    sends `***` back keeps the stored value."""

    proxy: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    env: EnvVars = msgspec.field(default_factory=dict)
    secret_env: EnvVars = msgspec.field(default_factory=dict)
    resource_version: Version | None = None
    updated_at: datetime | None = None


class ProxyTestRequest(Struct):
    """Targets: `urls` (http:// or https://, each fetched through the proxy its scheme selects),
    plus `url` and `https_url`; a request that names none gets the server's default targets."""

    proxy: ProxyConfig | None = None  # test this instead of the saved one
    urls: list[str] = msgspec.field(default_factory=list)
    url: str | None = None  # plain HTTP target
    https_url: str | None = None  # HTTPS target (CONNECT + TLS)
    timeout: Annotated[float, Meta(gt=0, le=60)] | None = None  # seconds, per step
    in_container: bool = False
    image: str | None = None  # image for in_container; default: the node's probe image


# --------------------------------------------------------------------------- runs


class RunCreate(Struct):
    image: str  # 1-512 characters, no white space (the schema says so; the server checks it)
    command: list[str] = msgspec.field(default_factory=list)
    env: EnvVars = msgspec.field(default_factory=dict)
    secret_env: EnvVars = msgspec.field(default_factory=dict)  # reads show `***`
    node_selector: Labels = msgspec.field(default_factory=dict)
    # set-based expressions, Kubernetes style: "gpu in (a,b)", "zone notin (x)", "ssd", "!spot"
    selector_expressions: list[str] = msgspec.field(default_factory=list)
    # seconds it may run once started; None: RUN_DEFAULT_DEADLINE (unset: none); ≤ RUN_MAX_DEADLINE
    deadline_seconds: DeadlineSeconds | None = None
    resources: Resources | None = None  # None or a field left out: the server's defaults
    sandbox: Sandbox | None = None


class Run(Struct):
    id: RunId
    status: RunStatus
    image: str
    command: list[str]
    env: dict[str, str]
    node_selector: dict[str, str]
    node_id: str | None
    exit_code: ExitCode | None
    created_at: datetime
    secret_env: dict[str, str] = msgspec.field(default_factory=dict)  # `***`, but for its node
    selector_expressions: list[str] = msgspec.field(default_factory=list)
    updated_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: Count = 0
    cancel_requested: bool = False
    container_id: str | None = None
    message: str | None = None  # latest reason: unschedulable, failure, ...
    # highest node-side event sequence number the server has stored (nodemanager resumes after it)
    last_node_seq: Count = 0
    # the limits in force, defaults applied
    deadline_seconds: DeadlineSeconds | None = None
    resources: Resources = msgspec.field(default_factory=Resources)
    sandbox: Sandbox = msgspec.field(default_factory=Sandbox)
    reason: RunReason | None = None  # set once the run is terminal


class RunList(Struct):
    items: list[Run]
    total: Count
    limit: Count
    offset: Count


class RunEvent(Struct):
    seq: Seq
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
    Types: claimed, started {container_id}, log {stream, text},
    exited {exit_code, oom_killed?: bool, deadline_exceeded?: bool},
    failed {reason: text, cause?: "image" | "run" | "node"}, cancelled {exit_code?}.
    The server derives the run's `reason` from them.
    """

    node_seq: Seq
    type: Annotated[str, Meta(min_length=1, max_length=32)]
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    at: datetime | None = None


class NodeEventBatch(Struct):
    node_id: NodeId
    events: Annotated[list[NodeEventIn], Meta(max_length=MAX_EVENT_BATCH)]
    # the placement these events are about (the run's `attempts` when the node was given it);
    # the server refuses events of an older placement. None: not checked (older nodes)
    attempt: Attempt | None = None


class NodeEventAck(Struct):
    run_id: str
    status: RunStatus
    last_node_seq: Count
    accepted: Count
    cancel_requested: bool = False
    # answers an empty batch only: the `ts` of the run's last stored log line
    last_log_ts: str | None = None
    # answer an empty batch only (a restarted node's probe): when the run started (server's clock)
    # and its deadline, from which the node computes the time it has left
    started_at: datetime | None = None
    deadline_seconds: DeadlineSeconds | None = None


class RunEvents(Struct):
    """One run's part of a node's event batch: what NodeEventBatch carries for one run."""

    run_id: RunId
    events: Annotated[list[NodeEventIn], Meta(max_length=MAX_EVENT_BATCH)]
    attempt: Attempt | None = None


class NodeEventsBatch(Struct):
    """Body of POST /api/v1/nodes/{id}/events: events of many runs placed on the node, each run's
    applied as a batch of its own would be (the node's credential speaks for every one)."""

    runs: Annotated[list[RunEvents], Meta(max_length=MAX_RUNS_PER_EVENT_BATCH)]


class RunEventsResult(Struct):
    """One run's answer: `ack` when its events were taken (status_code 200), else the status
    code and message POST /runs/{id}/node-events would have answered for it alone."""

    run_id: str
    status_code: int = 200
    ack: NodeEventAck | None = None
    detail: str | None = None
    extra: dict[str, Any] | None = None


class NodeEventsResults(Struct):
    results: list[RunEventsResult]


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
    id: Count
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class AuditList(Struct):
    items: list[AuditEntry]
    total: Count
    limit: Count
    offset: Count


class ErrorBody(Struct):
    """Every 4xx/5xx answer. `detail` is the human message."""

    status_code: Annotated[int, Meta(ge=400, le=599)]
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


class VersionInfo(Struct):
    """`GET /version`: the apiserver's version (nodeapi.version has the skew policy)."""

    version: str
