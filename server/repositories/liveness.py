"""SQL of node liveness (server.services.liveness): last-seen times written in batches, what the
liveness store is primed with at start, and the runs the server expects on many nodes at once.

A batch is one statement however many nodes it holds, its text fixed per dialect (so it is
prepared once): PostgreSQL joins the table with `unnest` of two arrays, SQLite with `json_each`
of one JSON array. Neither builds a CASE per row. A time never moves back: a row already holding
a newer heartbeat (the database path of a later one, another replica) keeps it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import NODES, RUNS
from server.repositories.nodes import ACTIVE_RUN_STATUSES

_WRITE_SEEN = {
    "postgresql": """
        UPDATE nodes SET last_heartbeat_at = heard.at
        FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:ats AS TIMESTAMPTZ[])) AS heard(id, at)
        WHERE nodes.id = heard.id AND (nodes.last_heartbeat_at IS NULL OR nodes.last_heartbeat_at < heard.at)
    """,
    "sqlite": """
        UPDATE nodes SET last_heartbeat_at = heard.at
        FROM (
            SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at FROM json_each(:heard)
        ) AS heard
        WHERE nodes.id = heard.id AND (nodes.last_heartbeat_at IS NULL OR nodes.last_heartbeat_at < heard.at)
    """,
}

_ACTIVE_RUNS_OF = {
    "postgresql": "node_id = ANY(CAST(:ids AS VARCHAR[]))",
    "sqlite": "node_id IN (SELECT value FROM json_each(:ids))",
}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


@functools.cache
def _sqlite_time() -> Any:
    """SQLAlchemy's text form of a datetime on SQLite, so batched times compare with stored ones."""
    dialect = sqlite.dialect()
    return NODES.c.last_heartbeat_at.type.dialect_impl(dialect).bind_processor(dialect)


async def write_last_seen(session: AsyncSession, heard: Sequence[tuple[str, datetime]]) -> None:
    """Raise each node's last_heartbeat_at to its time in `heard` (node id, aware UTC datetime)."""
    if not heard:
        return
    dialect = _dialect(session)
    statement = text(_WRITE_SEEN[dialect])
    if dialect == "postgresql":
        params: dict[str, Any] = {"ids": [node_id for node_id, _ in heard], "ats": [at for _, at in heard]}
    else:
        as_text = _sqlite_time()
        params = {"heard": msgspec.json.encode([(node_id, as_text(at)) for node_id, at in heard]).decode()}
    await session.execute(statement, params)


async def active_runs_of(session: AsyncSession, node_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The runs scheduled or running on each of the nodes: {node id: {run id: attempts}}."""
    if not node_ids:
        return {}
    dialect = _dialect(session)
    runs = RUNS.c
    query = select(runs.node_id, runs.id, runs.attempts).where(
        text(_ACTIVE_RUNS_OF[dialect]), runs.status.in_(ACTIVE_RUN_STATUSES)
    )
    ids: Any = list(node_ids) if dialect == "postgresql" else msgspec.json.encode(list(node_ids)).decode()
    expected: dict[str, dict[str, int]] = {}
    for node_id, run_id, attempts in (await session.execute(query, {"ids": ids})).all():
        expected.setdefault(node_id, {})[run_id] = attempts
    return expected


async def liveness_rows(session: AsyncSession) -> Sequence[Any]:
    """(id, last_heartbeat_at, report_digest, draining) of every node."""
    nodes = NODES.c
    query = select(nodes.id, nodes.last_heartbeat_at, nodes.report_digest, nodes.draining)
    return (await session.execute(query)).all()


async def newest_heartbeat(session: AsyncSession) -> datetime | None:
    newest: datetime | None = (await session.execute(select(func.max(NODES.c.last_heartbeat_at)))).scalar()
    return newest
