"""SQL for the Idempotency-Keys of run creation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import IDEMPOTENCY_KEYS

col = IDEMPOTENCY_KEYS.c


async def find(session: AsyncSession, key: str, created_after: datetime) -> tuple[str, str] | None:
    """(fingerprint, run id) of a key used since `created_after`."""
    row = (
        await session.execute(
            select(col.fingerprint, col.run_id).where(col.key == key, col.created_at >= created_after)
        )
    ).first()
    return None if row is None else (str(row.fingerprint), str(row.run_id))


async def add(
    session: AsyncSession, key: str, fingerprint: str, run_id: str, now: datetime, expired_before: datetime
) -> None:
    """Record the key in the transaction that creates its run; an expired use of it is replaced.
    A concurrent use of the same key makes the insert fail (IntegrityError) and the caller retry."""
    await session.execute(delete(IDEMPOTENCY_KEYS).where(col.key == key, col.created_at < expired_before))
    values = {"key": key, "fingerprint": fingerprint, "run_id": run_id, "created_at": now}
    await session.execute(insert(IDEMPOTENCY_KEYS).values(**values))


async def delete_older_than(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Forget up to `limit` keys created before `cutoff`; how many."""
    old = select(col.key).where(col.created_at < cutoff).limit(limit).scalar_subquery()
    result = await session.execute(delete(IDEMPOTENCY_KEYS).where(col.key.in_(old)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
