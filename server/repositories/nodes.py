"""SQL for the `nodes` table. Statements only: transactions belong to the caller (services)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, Row, and_, bindparam, cast, delete, func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi.models import NodeStatus
from server.db.models import NODES, RUNS, NodeRow, RunRow
from server.node_status import StatusRule

col: Any = NODES.c
# the columns the wire Node needs, in the order services.mappers.node_from_columns takes them
NODE_FIELDS = (
    "id",
    "labels",
    "max_concurrent",
    "running",
    "draining",
    "info",
    "last_heartbeat_at",
    "created_at",
    "updated_at",
    "resource_version",
    "last_proxy_test",
    "conditions",
    "healthy",
    "quarantined_at",
    "quarantined_until",
    "cpu_millis",
    "memory_mb",
    "requested_cpu_millis",
    "requested_memory_mb",
)
# fetched as plain Core rows (no ORM identity-map cost)
NODE_COLUMNS: tuple[Any, ...] = tuple(col[name] for name in NODE_FIELDS)
ACTIVE_RUN_STATUSES = ("scheduled", "running")


def selector_condition(selector: dict[str, str]) -> list[ColumnElement[bool]]:
    return [col.labels[key].as_string() == value for key, value in selector.items()]


async def list_nodes(
    session: AsyncSession,
    *,
    status: NodeStatus | None,
    selector: dict[str, str],
    rule: StatusRule,
    now: datetime,
    limit: int,
    offset: int,
    search: str | None = None,
) -> tuple[Sequence[Any], int]:
    conditions = selector_condition(selector)
    if status is not None:
        conditions.append(rule.sql_is(status, col, now))
    if search:
        conditions.append(col.id.contains(search, autoescape=True))
    where = and_(true(), *conditions)
    total = (await session.execute(select(func.count()).select_from(NodeRow).where(where))).scalar_one()
    if total <= offset:
        return [], total
    query = select(*NODE_COLUMNS).where(where).order_by(col.id).limit(limit).offset(offset)
    rows = (await session.execute(query)).all()
    return rows, total


async def get_node(session: AsyncSession, node_id: str) -> Row[Any] | None:
    return (await session.execute(select(*NODE_COLUMNS).where(col.id == node_id))).first()


async def get_nodes(session: AsyncSession, node_ids: Sequence[str]) -> Sequence[Any]:
    """The rows of those of `node_ids` that exist (NODE_FIELDS order), in no particular order."""
    if not node_ids:
        return []
    return (await session.execute(select(*NODE_COLUMNS).where(col.id.in_(list(node_ids))))).all()


async def heartbeats_between(session: AsyncSession, start: datetime, end: datetime) -> list[str]:
    """Ids of the nodes whose last heartbeat is in [start, end): with end = now - offline_after,
    those that turned offline since the sweep whose end was `start` (uses the heartbeat index)."""
    query = select(col.id).where(col.last_heartbeat_at >= start, col.last_heartbeat_at < end)
    return list((await session.execute(query)).scalars())


async def quarantines_ending_between(session: AsyncSession, start: datetime, end: datetime) -> list[str]:
    """Ids of the nodes whose quarantine ends in [start, end)."""
    query = select(col.id).where(col.quarantined_until >= start, col.quarantined_until < end)
    return list((await session.execute(query)).scalars())


async def get_for_update(session: AsyncSession, node_id: str) -> Row[Any] | None:
    """Locks the row on PostgreSQL until commit, so a heartbeat cannot slip its reported labels in
    between this read and the admin UPDATE (SQLite already serialises writers)."""
    query = select(col.label_overrides, col.reported_labels, col.resource_version).where(col.id == node_id)
    return (await session.execute(query.with_for_update())).first()


async def still_silent(session: AsyncSession, node_id: str | None, cutoff: datetime) -> bool:
    """True when the node sent no heartbeat since `cutoff` (or is gone); locks its row on PostgreSQL."""
    query = select(col.last_heartbeat_at).where(col.id == node_id).with_for_update()
    row = (await session.execute(query)).first()
    if row is None or row.last_heartbeat_at is None:
        return True
    heartbeat = row.last_heartbeat_at
    if heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    return bool(heartbeat < cutoff)


@dataclass(frozen=True)
class ReportedState:
    """What a heartbeat says of the node."""

    labels: dict[str, str]
    max_concurrent: int
    cpu_millis: int | None
    memory_mb: int | None
    info: dict[str, Any]
    conditions: list[dict[str, Any]]
    digest: str  # of all the above and the runs it holds (server.services.liveness.report_of)


_UPSERT_COLUMNS = (
    "id", "reported_labels", "label_overrides", "labels", "max_concurrent", "running", "draining",
    "info", "last_heartbeat_at", "created_at", "updated_at", "resource_version", "conditions", "healthy",
    "cpu_millis", "memory_mb", "report_digest",
)  # fmt: skip


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    """The heartbeat upsert, built once per dialect with bind parameters: building it per call
    (the `excluded` alias copies every column) cost more than running it."""
    values = {name: bindparam(name, type_=col[name].type) for name in _UPSERT_COLUMNS}
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(NODES).values(values)
        merged: Any = cast(
            func.jsonb_strip_nulls(
                cast(stmt.excluded.reported_labels, postgresql.JSONB).op("||")(
                    cast(col.label_overrides, postgresql.JSONB)
                )
            ),
            JSON,
        )
    else:
        stmt = sqlite.insert(NODES).values(values)
        merged = func.json_patch(stmt.excluded.reported_labels, col.label_overrides)
    return stmt.on_conflict_do_update(
        index_elements=[col.id],
        set_={
            "reported_labels": stmt.excluded.reported_labels,
            "labels": merged,
            "max_concurrent": func.coalesce(col.max_concurrent_override, stmt.excluded.max_concurrent),
            "cpu_millis": func.coalesce(col.cpu_millis_override, stmt.excluded.cpu_millis),
            "memory_mb": func.coalesce(col.memory_mb_override, stmt.excluded.memory_mb),
            "info": stmt.excluded.info,
            "last_heartbeat_at": stmt.excluded.last_heartbeat_at,
            "conditions": stmt.excluded.conditions,
            "healthy": stmt.excluded.healthy,
            "report_digest": stmt.excluded.report_digest,
        },
    ).returning(*NODE_COLUMNS)


async def upsert_heartbeat(
    session: AsyncSession, node_id: str, reported: ReportedState, now: datetime
) -> Row[Any]:
    """Insert on first sight, else replace the reported part; draining and overrides are kept.

    The effective labels are recomputed in the same statement from the stored overrides
    (SQLite json_patch and PostgreSQL `||` + jsonb_strip_nulls are both JSON merge patch on a
    flat object), so a concurrent PATCH can never be lost.
    """
    params = {
        "id": node_id,
        "reported_labels": reported.labels,
        "label_overrides": {},
        "labels": reported.labels,
        "max_concurrent": reported.max_concurrent,
        "cpu_millis": reported.cpu_millis,
        "memory_mb": reported.memory_mb,
        "running": 0,
        "draining": False,
        "info": reported.info,
        "last_heartbeat_at": now,
        "created_at": now,
        "updated_at": now,
        "resource_version": 1,
        "conditions": reported.conditions,
        "healthy": all(condition.get("ok") for condition in reported.conditions),
        "report_digest": reported.digest,
    }
    stmt = _upsert_statement(session.get_bind().dialect.name)
    return (await session.execute(stmt, params)).one()


async def update_admin_fields(
    session: AsyncSession, node_id: str, expected_version: int, values: dict[str, Any]
) -> bool:
    """Apply an admin change if nobody changed the node meanwhile; bumps resource_version."""
    stmt = (
        update(NodeRow)
        .where(col.id == node_id, col.resource_version == expected_version)
        .values(**values, resource_version=col.resource_version + 1)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount)


async def bump_version(session: AsyncSession, node_id: str, now: datetime) -> bool:
    stmt = (
        update(NodeRow)
        .where(col.id == node_id)
        .values(resource_version=col.resource_version + 1, updated_at=now)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount)


async def delete_node(session: AsyncSession, node_id: str) -> bool:
    result: Any = await session.execute(delete(NodeRow).where(col.id == node_id))
    return bool(result.rowcount)


async def exists(session: AsyncSession, node_id: str) -> bool:
    return (await session.execute(select(col.id).where(col.id == node_id))).first() is not None


async def active_run_ids(session: AsyncSession, node_id: str, limit: int = 20) -> list[str]:
    runs = RUNS.c
    query = (
        select(runs.id)
        .where(runs.node_id == node_id, runs.status.in_(ACTIVE_RUN_STATUSES))
        .order_by(runs.created_at)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def runs_of_node(
    session: AsyncSession, node_id: str, status: str | None, limit: int, offset: int
) -> tuple[Sequence[RunRow], int]:
    runs = RUNS.c
    conditions = [runs.node_id == node_id]
    if status is not None:
        conditions.append(runs.status == status)
    total = (await session.execute(select(func.count()).select_from(RunRow).where(*conditions))).scalar_one()
    query = (
        select(RunRow)
        .where(*conditions)
        .order_by(runs.created_at.desc(), runs.id)
        .limit(limit)
        .offset(offset)
    )
    return (await session.execute(query)).scalars().all(), total


async def set_last_proxy_test(session: AsyncSession, node_id: str, result: dict[str, Any]) -> None:
    await session.execute(update(NodeRow).where(col.id == node_id).values(last_proxy_test=result))


async def node_of_token(session: AsyncSession, hashed: str) -> str | None:
    row = (await session.execute(select(col.id).where(col.token_hash == hashed))).first()
    return None if row is None else str(row.id)


async def credential_claimed(session: AsyncSession, node_id: str) -> bool | None:
    """None: no such node; else whether it holds a credential (locks its row on PostgreSQL)."""
    query = select(col.token_hash).where(col.id == node_id).with_for_update()
    row = (await session.execute(query)).first()
    return None if row is None else row.token_hash is not None


async def has_credential(session: AsyncSession, node_id: str) -> bool:
    """Whether the node holds a credential (can use the node API outside protected mode)."""
    query = select(col.token_hash).where(col.id == node_id)
    return (await session.execute(query)).scalar_one_or_none() is not None


async def claim_credential(session: AsyncSession, node_id: str, hashed: str, now: datetime) -> bool:
    """Give the node a credential unless it has one; False when it already has."""
    stmt = (
        update(NodeRow)
        .where(col.id == node_id, col.token_hash.is_(None))
        .values(token_hash=hashed, token_issued_at=now)
    )
    result: Any = await session.execute(stmt)
    return bool(result.rowcount)


async def void_credential(session: AsyncSession, node_id: str) -> bool:
    """Forget the node's credential; False for an unknown node."""
    stmt = update(NodeRow).where(col.id == node_id).values(token_hash=None, token_issued_at=None)
    result: Any = await session.execute(stmt)
    return bool(result.rowcount)


async def stored_conditions(session: AsyncSession, node_id: str) -> list[dict[str, Any]]:
    row = (await session.execute(select(col.conditions).where(col.id == node_id))).first()
    return list(row.conditions or []) if row is not None else []


async def record_start(session: AsyncSession, node_id: str) -> None:
    """A run started on the node: its run of start failures is over."""
    await session.execute(
        update(NodeRow)
        .where(col.id == node_id, (col.start_failures > 0) | (col.quarantine_level > 0))
        .values(start_failures=0, quarantine_level=0)
    )


async def record_start_failure(
    session: AsyncSession, node_id: str, now: datetime, threshold: int, backoff: float, max_backoff: float
) -> datetime | None:
    """Count a start failure that was the node's fault; at `threshold` in a row the node is
    quarantined for `backoff` seconds, doubling with each quarantine (up to `max_backoff`).
    The end of the quarantine it entered, if it did."""
    row = (
        await session.execute(
            select(col.start_failures, col.quarantine_level).where(col.id == node_id).with_for_update()
        )
    ).first()
    if row is None:
        return None
    failures, level = row.start_failures + 1, row.quarantine_level
    until = None
    if failures >= threshold:
        until = now + timedelta(seconds=min(max_backoff, backoff * 2**level))
        failures, level = 0, level + 1
    values: dict[str, Any] = {"start_failures": failures, "quarantine_level": level}
    if until is not None:
        values.update(quarantined_at=now, quarantined_until=until)
    await session.execute(update(NodeRow).where(col.id == node_id).values(**values))
    return until
