"""SQL for runs: reads, and the conditional updates that move a run between statuses.

Every status change is an UPDATE ... WHERE status = <expected> (plus whatever else the
caller relies on), so two requests or two apiserver replicas racing on the same run
never both apply a transition: the loser sees rowcount 0 and re-reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from nodeapi.models import ACTIVE_RUN_STATUSES
from server.db.models import RUNS, NodeRow, RunEventRow, RunRow

ACTIVE = tuple(sorted(ACTIVE_RUN_STATUSES))


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


async def add(session: AsyncSession, row: RunRow) -> None:
    session.add(row)
    await session.flush()


async def add_many(session: AsyncSession, rows: Sequence[RunRow]) -> None:
    """New runs, written in one batched INSERT."""
    session.add_all(rows)
    await session.flush()


async def get_run(session: AsyncSession, run_id: str, *, for_update: bool = False) -> RunRow | None:
    stmt = select(RunRow).where(col(RunRow.id) == run_id)
    if for_update:
        stmt = stmt.with_for_update()  # row lock on PostgreSQL; SQLite serialises writers anyway
    row = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
    return row


async def get_runs(session: AsyncSession, run_ids: Sequence[str]) -> list[RunRow]:
    if not run_ids:
        return []
    stmt = select(RunRow).where(col(RunRow.id).in_(list(run_ids)))
    return list((await session.execute(stmt)).scalars())


async def list_runs(
    session: AsyncSession,
    *,
    statuses: Sequence[str] = (),
    node_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[RunRow], int]:
    """A page of runs, newest first, and the total matching the filters."""
    conditions: list[ColumnElement[bool]] = []
    if statuses:
        conditions.append(col(RunRow.status).in_(list(statuses)))
    if node_id is not None:
        conditions.append(col(RunRow.node_id) == node_id)
    where = and_(*conditions) if conditions else None
    page = select(RunRow).order_by(col(RunRow.created_at).desc(), col(RunRow.id).desc())
    count = select(func.count()).select_from(RunRow)
    if where is not None:
        page = page.where(where)
        count = count.where(where)
    rows = list((await session.execute(page.limit(limit).offset(offset))).scalars())
    total = int((await session.execute(count)).scalar_one())
    return rows, total


async def update_run(
    session: AsyncSession, run_id: str, expect: dict[str, Any], values: dict[str, Any]
) -> bool:
    """UPDATE runs SET values WHERE id = run_id AND every `expect` column equals its value.

    An `expect` value that is a tuple means IN (...). True when the row was changed.
    """
    conditions: list[ColumnElement[bool]] = [col(RunRow.id) == run_id]
    for name, expected in expect.items():
        column = RUNS.c[name]
        if isinstance(expected, tuple):
            conditions.append(column.in_(expected))
        elif expected is None:
            conditions.append(column.is_(None))
        else:
            conditions.append(column == expected)
    result = await session.execute(
        update(RunRow).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def mark_enqueued(session: AsyncSession, run_ids: Sequence[str]) -> None:
    if run_ids:
        await session.execute(
            update(RunRow)
            .where(col(RunRow.id).in_(list(run_ids)))
            .values(enqueued=True)
            .execution_options(synchronize_session=False)
        )


def _of_active_runs(node: Any, aggregate: Any) -> Any:
    return (
        select(aggregate)
        .select_from(RunRow)
        .where(col(RunRow.node_id) == node, col(RunRow.status).in_(ACTIVE))
        .scalar_subquery()
    )


def node_load(node: Any) -> dict[str, Any]:
    """A node's load columns as derived from its scheduled or running runs (scalar subqueries
    on `node`, a nodes id column): how many, and the sum of their resource requests."""
    return {
        "running": _of_active_runs(node, func.count()),
        "requested_cpu_millis": _of_active_runs(node, func.coalesce(func.sum(col(RunRow.cpu_millis)), 0)),
        "requested_memory_mb": _of_active_runs(node, func.coalesce(func.sum(col(RunRow.memory_mb)), 0)),
    }


async def recount_running(session: AsyncSession, node_id: str | None) -> None:
    """Set the node's load from its run rows, in the transaction that moved a run: it is derived,
    never kept by increments that could drift.

    The node's row is locked first, in a statement of its own: on PostgreSQL (READ COMMITTED) an
    UPDATE whose count subquery waited for that lock would still count from its snapshot taken
    before the wait, so two transactions ending two runs of one node at once each counted the
    other's run as active and the node kept a run it no longer had. Counted after the lock, the
    count sees every transaction that set the node's count before. (SQLite writes one at a time.)"""
    if node_id is None:
        return
    await session.execute(select(col(NodeRow.id)).where(col(NodeRow.id) == node_id).with_for_update())
    await session.execute(
        update(NodeRow)
        .where(col(NodeRow.id) == node_id)
        .values(**node_load(col(NodeRow.id)))
        .execution_options(synchronize_session=False)
    )


async def repair_running(session: AsyncSession) -> list[tuple[str, int]]:
    """Every node whose load differs from its run rows, set right: (node id, wrong count)."""
    load = node_load(col(NodeRow.id))
    wrong = (
        await session.execute(
            select(col(NodeRow.id), col(NodeRow.running)).where(
                or_(*(getattr(NodeRow, name) != derived for name, derived in load.items()))
            )
        )
    ).all()
    if wrong:
        node_ids = sorted(str(node_id) for node_id, _ in wrong)
        # locked first, then counted (see recount_running)
        await session.execute(select(col(NodeRow.id)).where(col(NodeRow.id).in_(node_ids)).with_for_update())
        await session.execute(
            update(NodeRow)
            .where(col(NodeRow.id).in_(node_ids))
            .values(**node_load(col(NodeRow.id)))
            .execution_options(synchronize_session=False)
        )
    return [(str(node_id), int(running)) for node_id, running in wrong]


async def pending_assignments(session: AsyncSession, node_id: str) -> list[RunRow]:
    """Runs placed on the node that it has not started yet, claimed or not: handed out until
    the node reports them started, so a node that crashed after claiming one gets it again."""
    stmt = (
        select(RunRow)
        .where(
            col(RunRow.node_id) == node_id,
            col(RunRow.status) == "scheduled",
            col(RunRow.cancel_requested).is_(False),
        )
        .order_by(col(RunRow.scheduled_at), col(RunRow.id))
    )
    return list((await session.execute(stmt)).scalars())


async def running_ids(session: AsyncSession, node_id: str) -> list[str]:
    stmt = (
        select(col(RunRow.id))
        .where(col(RunRow.node_id) == node_id, col(RunRow.status) == "running")
        .order_by(col(RunRow.id))
    )
    return [str(run_id) for run_id in (await session.execute(stmt)).scalars()]


async def cancel_requested_ids(session: AsyncSession, node_id: str) -> list[str]:
    stmt = (
        select(col(RunRow.id))
        .where(
            col(RunRow.node_id) == node_id,
            col(RunRow.status).in_(ACTIVE),
            col(RunRow.cancel_requested).is_(True),
        )
        .order_by(col(RunRow.id))
    )
    return [str(run_id) for run_id in (await session.execute(stmt)).scalars()]


async def active_runs_on_silent_nodes(
    session: AsyncSession, heard_before: datetime, limit: int
) -> list[RunRow]:
    """Scheduled or running runs whose node has not sent a heartbeat since `heard_before`
    (or whose node row is gone)."""
    stmt = (
        select(RunRow)
        .outerjoin(NodeRow, col(NodeRow.id) == col(RunRow.node_id))
        .where(
            col(RunRow.status).in_(ACTIVE),
            or_(
                col(NodeRow.id).is_(None),
                col(NodeRow.last_heartbeat_at).is_(None),
                col(NodeRow.last_heartbeat_at) < heard_before,
            ),
        )
        .order_by(col(RunRow.scheduled_at), col(RunRow.id))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def overdue_runs(session: AsyncSession, due_before: datetime, limit: int) -> list[RunRow]:
    """Running runs whose deadline passed before `due_before`."""
    stmt = (
        select(RunRow)
        .where(col(RunRow.status) == "running", col(RunRow.deadline_at) < due_before)
        .order_by(col(RunRow.deadline_at), col(RunRow.id))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def list_events(
    session: AsyncSession, run_id: str, *, after: int, event_type: str | None, limit: int
) -> list[RunEventRow]:
    stmt = select(RunEventRow).where(col(RunEventRow.run_id) == run_id, col(RunEventRow.seq) > after)
    if event_type:
        stmt = stmt.where(col(RunEventRow.type) == event_type)
    stmt = stmt.order_by(col(RunEventRow.seq)).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def last_log_ts(session: AsyncSession, run_id: str) -> str | None:
    """The runtime timestamp of the run's last stored `log` event, if it has one."""
    stmt = (
        select(col(RunEventRow.data))
        .where(col(RunEventRow.run_id) == run_id, col(RunEventRow.type) == "log")
        .order_by(col(RunEventRow.seq).desc())
        .limit(1)
    )
    data = (await session.execute(stmt)).scalar_one_or_none()
    ts = data.get("ts") if isinstance(data, dict) else None
    return ts if isinstance(ts, str) else None


async def mark_reported(session: AsyncSession, node_id: str, run_ids: list[str]) -> None:
    """The node listed these runs in its heartbeat: they are no longer missing there."""
    if run_ids:
        await session.execute(
            update(RunRow)
            .where(
                col(RunRow.id).in_(run_ids),
                col(RunRow.node_id) == node_id,
                col(RunRow.unreported_since).is_not(None),
            )
            .values(unreported_since=None)
            .execution_options(synchronize_session=False)
        )


async def unreported_runs(session: AsyncSession, node_id: str, reported: set[str]) -> list[RunRow]:
    """Runs placed on the node (scheduled or running) that its heartbeat did not list."""
    stmt = select(RunRow).where(col(RunRow.node_id) == node_id, col(RunRow.status).in_(ACTIVE))
    return [row for row in (await session.execute(stmt)).scalars() if row.id not in reported]


# ---------------------------------------------------------------------------- node event batches

EVENT_COLUMNS = (
    "id",
    "node_id",
    "status",
    "attempts",
    "last_node_seq",
    "last_event_seq",
    "cancel_requested",
    "claimed_at",
    "started_at",
    "deadline_seconds",
    "avoid_nodes",
    "log_bytes",
    "log_truncated",
)


async def lock_for_events(session: AsyncSession, run_ids: Sequence[str]) -> dict[str, Any]:
    """What applying node events needs of each run, locked (PostgreSQL; SQLite writes one at a
    time), in id order so that two batches never wait on each other crosswise."""
    if not run_ids:
        return {}
    stmt = (
        select(*(RUNS.c[name] for name in EVENT_COLUMNS))
        .where(RUNS.c.id.in_(sorted(set(run_ids))))
        .order_by(RUNS.c.id)
        .with_for_update()
    )
    return {row.id: row for row in (await session.execute(stmt)).all()}


GUARD_COLUMNS = ("status", "last_node_seq", "last_event_seq")


async def update_runs_guarded(
    session: AsyncSession, changes: Sequence[tuple[str, dict[str, Any], dict[str, Any]]]
) -> bool:
    """Per (run id, expected GUARD_COLUMNS values, new values): UPDATE ... WHERE the run still
    has the expected values; one executemany per distinct set of changed columns. False when any
    run changed meanwhile (the caller rolls back and reads again)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run_id, expect, values in changes:
        params = {"w_id": run_id, **{f"w_{k}": expect[k] for k in GUARD_COLUMNS}}
        params.update({f"v_{k}": v for k, v in values.items()})
        groups.setdefault(tuple(sorted(values)), []).append(params)
    per_row = not session.get_bind().dialect.supports_sane_multi_rowcount
    for names, rows in groups.items():
        stmt = (
            update(RUNS)
            .where(
                RUNS.c.id == bindparam("w_id"),
                *(RUNS.c[k] == bindparam(f"w_{k}", type_=RUNS.c[k].type) for k in GUARD_COLUMNS),
            )
            .values({name: bindparam(f"v_{name}", type_=RUNS.c[name].type) for name in names})
        )
        if per_row or len(rows) == 1:
            for params in rows:
                if _rowcount(await session.execute(stmt, params)) != 1:
                    return False
        elif _rowcount(await session.execute(stmt, rows)) != len(rows):
            return False
    return True
