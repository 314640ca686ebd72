"""SQL for the append-only `audit_log` table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import AUDIT_LOG, AuditRow

col = AUDIT_LOG.c


async def add(
    session: AsyncSession,
    at: datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any],
) -> None:
    await session.execute(
        insert(AuditRow).values(
            at=at, actor=actor, action=action, target_type=target_type, target_id=target_id, details=details
        )
    )


async def add_many(session: AsyncSession, entries: Sequence[dict[str, Any]]) -> None:
    """Entries (at, actor, action, target_type, target_id, details) in one executemany."""
    if entries:
        await session.execute(insert(AUDIT_LOG), list(entries))


async def page(
    session: AsyncSession, limit: int, offset: int, target_id: str | None, action: str | None
) -> tuple[Sequence[Any], int]:
    conditions = []
    if target_id is not None:
        conditions.append(col.target_id == target_id)
    if action is not None:
        conditions.append(col.action == action)
    total = (
        await session.execute(select(func.count()).select_from(AuditRow).where(*conditions))
    ).scalar_one()
    query = (
        select(col.id, col.at, col.actor, col.action, col.target_type, col.target_id, col.details)
        .where(*conditions)
        .order_by(col.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return (await session.execute(query)).all(), total
