"""Run events with per-run, gap-free sequence numbers.

The next seq is reserved by bumping `runs.last_event_seq` in the same statement that
reads it back (UPDATE ... RETURNING), so concurrent writers of one run serialise on
the row lock (PostgreSQL) or the write lock (SQLite), and a rolled-back transaction
gives its numbers back. Works on SQLite (3.35+) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

import server.db.models  # noqa: F401  (registers the tables)
from server.db.models import RUN_EVENTS, RUNS

Executor = AsyncSession | AsyncConnection
# (type, data, at)
EventSpec = tuple[str, Mapping[str, Any], datetime]


async def append_run_events(db: Executor, run_id: str, events: Sequence[EventSpec]) -> list[int]:
    """Append `events` to run `run_id` in the caller's transaction; returns their seqs.

    Raises LookupError when the run does not exist. The caller commits.
    """
    if not events:
        return []
    bumped = await db.execute(
        update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(last_event_seq=RUNS.c.last_event_seq + len(events))
        .returning(RUNS.c.last_event_seq)
    )
    last = bumped.scalar_one_or_none()
    if last is None:
        raise LookupError(f"run {run_id!r} not found")
    first = int(last) - len(events) + 1
    await insert_event_rows(
        db, [event_row(run_id, first + offset, *event) for offset, event in enumerate(events)]
    )
    return list(range(first, first + len(events)))


def event_row(run_id: str, seq: int, kind: str, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "type": kind, "at": at, "data": dict(data)}


async def insert_event_rows(db: Executor, rows: list[dict[str, Any]]) -> None:
    """Insert prepared rows (seqs already reserved) in one executemany."""
    if rows:
        await db.execute(insert(RUN_EVENTS), rows)


async def record_events(
    db: Executor, run_id: str, events: Sequence[tuple[str, Mapping[str, Any]]], at: datetime
) -> None:
    """Append `events` (type, data) with the next per-run seqs, all stamped `at`."""
    await append_run_events(db, run_id, [(kind, data, at) for kind, data in events])
