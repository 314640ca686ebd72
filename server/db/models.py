"""ORM rows (SQLModel tables). Never sent on the wire: services map them to nodeapi.models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


def _json(**kw: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False, **kw))


def _json_added_later() -> Any:
    """A JSON column added by a migration to tables with rows: empty ({}) unless set."""
    return _json(server_default=text("'{}'"))


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index))


class NodeRow(SQLModel, table=True):
    __tablename__ = "nodes"

    id: str = Field(primary_key=True, max_length=253)
    # what the node last reported, what the admin overrode (value None = removed), and the merge of both
    reported_labels: dict[str, str] = _json()
    label_overrides: dict[str, str | None] = _json()
    labels: dict[str, str] = _json()
    max_concurrent: int = Field(default=1)
    # set by an admin PATCH; wins over the capacity the node reports in later heartbeats
    max_concurrent_override: int | None = Field(default=None)
    # counter of runs scheduled or running here; changed only by conditional UPDATEs
    running: int = Field(default=0)
    # allocatable resources (None: not reported, not a limit): an admin override wins over the
    # node's report, as for max_concurrent; CPUs in thousandths, so sums compare exactly in SQL
    cpu_millis: int | None = Field(default=None)
    cpu_millis_override: int | None = Field(default=None)
    memory_mb: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    memory_mb_override: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # the summed requests of its active runs, set with `running` from the run rows
    requested_cpu_millis: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    requested_memory_mb: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default=text("0"))
    )
    draining: bool = Field(default=False, index=True)
    info: dict[str, Any] = _json()
    last_heartbeat_at: datetime | None = _ts(index=True)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime | None = _ts()
    resource_version: int = Field(default=1)
    last_proxy_test: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # what the node reports of its health: [{type, ok, message, since}] (since: when `ok` last changed)
    conditions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=text("'[]'"))
    )
    # every reported condition ok (kept beside them so placement need not read the JSON)
    healthy: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})
    # start failures in a row that were the node's fault; past a threshold it is quarantined
    start_failures: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    quarantined_at: datetime | None = _ts()
    quarantined_until: datetime | None = _ts()
    quarantine_level: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    # sha256 of the node's credential (never the token itself); NULL: the join token may claim one
    token_hash: str | None = Field(default=None, max_length=64, unique=True)
    token_issued_at: datetime | None = _ts()
    # digests of its last stored report (server.liveness.Report.stored: labels, capacity, info,
    # condition states and runs; then the conditions' messages): a heartbeat repeating them
    # changes only the node's liveness
    report_digest: str | None = Field(default=None, max_length=64)


class EnvConfigRow(SQLModel, table=True):
    __tablename__ = "env_configs"

    node_id: str = Field(primary_key=True, max_length=253)
    # proxy URLs with their passwords masked; the real ones are in `secrets`
    proxy: dict[str, str | None] = _json()
    env: dict[str, str] = _json()
    # {"names": secret_env names, "sealed": (server.secrets) {"proxy": full URLs, "secret_env": values}}
    secrets: dict[str, Any] = _json_added_later()
    resource_version: int = Field(default=1)
    updated_at: datetime | None = _ts()


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_node_status", "node_id", "status"),)

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(index=True, max_length=16)
    image: str = Field(max_length=512)
    command: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    env: dict[str, str] = _json()
    # {"names": [...], "sealed": server.secrets-sealed {NAME: value}}; reaches only the node that runs it
    secret_env: dict[str, Any] = _json_added_later()
    node_selector: dict[str, str] = _json()
    selector_expressions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    node_id: str | None = Field(default=None, max_length=253)
    exit_code: int | None = None
    created_at: datetime = _ts(nullable=False, index=True)
    updated_at: datetime | None = _ts()
    scheduled_at: datetime | None = _ts()
    claimed_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts(index=True)  # retention finds expired runs by it
    # nodes this run failed to start on through their fault: {node id: ISO time}; avoided for a while
    avoid_nodes: dict[str, str] = _json_added_later()
    # first heartbeat of its node that did not list the run (two-way reconciliation); None: listed
    unreported_since: datetime | None = _ts()
    attempts: int = Field(default=0)
    # limits, defaults applied at creation: CPUs in thousandths, memory in MiB (None: no request)
    cpu_millis: int | None = Field(default=None)
    memory_mb: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    deadline_seconds: int | None = Field(default=None)
    # started_at + deadline_seconds, set when it starts; the reaper ends it if its node does not
    deadline_at: datetime | None = _ts()
    sandbox: dict[str, Any] = _json_added_later()
    # why it ended (nodeapi.models.RunReason); None while active
    reason: str | None = Field(default=None, max_length=32)
    cancel_requested: bool = Field(default=False)
    container_id: str | None = Field(default=None, max_length=128)
    message: str | None = Field(default=None, max_length=2000)
    # next per-run event seq is last_event_seq + 1 (bumped with a conditional UPDATE)
    last_event_seq: int = Field(default=0)
    # BIGINT on PostgreSQL (node_seq goes up to 2^53); SQLite's INTEGER holds 64 bits already
    last_node_seq: int = Field(
        default=0,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False, default=0),
    )
    # bytes of log text stored (RUN_MAX_LOG_BYTES); once over, later log events are dropped
    log_bytes: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default=text("0"))
    )
    log_truncated: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, default=False, server_default=text("false"))
    )
    # outbox: False until the run id is known to be on the queue
    enqueued: bool = Field(default=False, index=True)


class RunEventRow(SQLModel, table=True):
    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_run_events_run_seq"),)

    # BIGINT on PostgreSQL; plain INTEGER on SQLite, where only that autoincrements
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    run_id: str = Field(max_length=64, index=True)
    seq: int
    type: str = Field(max_length=32)
    at: datetime = _ts(nullable=False)
    data: dict[str, Any] = _json()


class NodeCommandRow(SQLModel, table=True):
    __tablename__ = "node_commands"

    id: str = Field(primary_key=True, max_length=64)
    node_id: str = Field(max_length=253, index=True)
    type: str = Field(max_length=32)
    payload: dict[str, Any] = _json()
    # pending -> delivered -> done | expired
    state: str = Field(default="pending", max_length=16, index=True)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts(nullable=False)
    delivered_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False, index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target_type: str = Field(max_length=32)
    target_id: str = Field(max_length=253, index=True)
    details: dict[str, Any] = _json()


class IdempotencyKeyRow(SQLModel, table=True):
    """A run create request's Idempotency-Key: a repeat with the same body answers the same run."""

    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)  # sha256 of the request body as decoded
    run_id: str = Field(max_length=64)
    created_at: datetime = _ts(nullable=False, index=True)


def _table(row: type[SQLModel]) -> Table:
    return cast(Table, row.__table__)  # type: ignore[attr-defined]  # set by SQLModel at class creation


# Core table handles, for the repositories' SQL (one place, instead of a lookup per module)
NODES = _table(NodeRow)
ENV_CONFIGS = _table(EnvConfigRow)
RUNS = _table(RunRow)
RUN_EVENTS = _table(RunEventRow)
AUDIT_LOG = _table(AuditRow)
IDEMPOTENCY_KEYS = _table(IdempotencyKeyRow)
