"""Fleet-wide counts for /metrics: nodes by state, runs by status, the oldest queued run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import NODES, RUNS
from server.node_status import StatusRule


async def node_states(session: AsyncSession, rule: StatusRule, now: datetime) -> dict[str, int]:
    """Nodes per scheduling state: online, draining, offline, unhealthy, quarantined."""
    state = rule.sql_state(NODES.c, now).label("state")
    rows = await session.execute(select(state, func.count()).group_by(state))
    return {str(name): int(count) for name, count in rows.all()}


async def run_statuses(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(RUNS.c.status, func.count()).group_by(RUNS.c.status))
    return {str(status): int(count) for status, count in rows.all()}


async def oldest_queued_at(session: AsyncSession) -> datetime | None:
    value = (
        await session.execute(select(func.min(RUNS.c.created_at)).where(RUNS.c.status == "queued"))
    ).scalar()
    return value if isinstance(value, datetime) else None
