"""SQL of retention: finished runs with their events, old audit entries and idempotency keys,
each deleted a bounded number of rows at a time (server.services.retention decides when)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi.models import TERMINAL_RUN_STATUSES
from server.db.models import AUDIT_LOG, IDEMPOTENCY_KEYS, RUN_EVENTS, RUNS

TERMINAL = sorted(TERMINAL_RUN_STATUSES)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def expired_run_ids(session: AsyncSession, finished_before: datetime, limit: int) -> list[str]:
    """Up to `limit` runs that ended before `finished_before`, oldest first (every end of a run
    sets `finished_at`; the index on it keeps this a range scan)."""
    stmt = (
        select(RUNS.c.id)
        .where(RUNS.c.finished_at < finished_before, RUNS.c.status.in_(TERMINAL))
        .order_by(RUNS.c.finished_at)
        .limit(limit)
    )
    return [str(run_id) for run_id in (await session.execute(stmt)).scalars()]


async def delete_run_events(session: AsyncSession, run_ids: Sequence[str], limit: int) -> int:
    """Delete up to `limit` events (log lines included) of these runs; how many."""
    some = select(RUN_EVENTS.c.id).where(RUN_EVENTS.c.run_id.in_(list(run_ids))).limit(limit)
    result = await session.execute(delete(RUN_EVENTS).where(RUN_EVENTS.c.id.in_(some.scalar_subquery())))
    return _count(result)


async def delete_runs(session: AsyncSession, run_ids: Sequence[str], finished_before: datetime) -> list[str]:
    """Delete these runs if they are still finished before the cutoff (an id is never reused, so
    nothing can have brought one back; the guard is cheap), with the idempotency keys that
    named them; the ids deleted."""
    deleted = await session.execute(
        delete(RUNS)
        .where(
            RUNS.c.id.in_(list(run_ids)),
            RUNS.c.status.in_(TERMINAL),
            RUNS.c.finished_at < finished_before,
        )
        .returning(RUNS.c.id)
    )
    gone = [str(run_id) for run_id in deleted.scalars()]
    if gone:
        await session.execute(delete(IDEMPOTENCY_KEYS).where(IDEMPOTENCY_KEYS.c.run_id.in_(gone)))
    return gone


async def delete_audit_before(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` audit entries older than `cutoff`, oldest first; how many."""
    old = select(AUDIT_LOG.c.id).where(AUDIT_LOG.c.at < cutoff).order_by(AUDIT_LOG.c.at).limit(limit)
    result = await session.execute(delete(AUDIT_LOG).where(AUDIT_LOG.c.id.in_(old.scalar_subquery())))
    return _count(result)
