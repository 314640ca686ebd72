"""The node status rule gives the same answer in Python and in SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import NODES
from server.node_status import StatusRule
from tests.support.scheduler_db import insert_rows, node_row

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CASES = {
    # id: (seconds since the last heartbeat or None, draining)
    "never": (None, False),
    "never-draining": (None, True),
    "fresh": (1.0, False),
    "fresh-draining": (1.0, True),
    "at-the-edge": (90.0, False),
    "just-too-old": (90.5, False),
    "old-draining": (300.0, True),
}


async def test_python_and_sql_agree(engine: AsyncEngine) -> None:
    rule = StatusRule(offline_after=90.0)
    rows = []
    for node_id, (age, draining) in CASES.items():
        heard = None if age is None else NOW - timedelta(seconds=age)
        rows.append({**node_row(node_id, draining=draining), "last_heartbeat_at": heard})
    await insert_rows(engine, NODES, rows)
    expected = {
        node_id: rule.of(None if age is None else NOW - timedelta(seconds=age), draining, NOW)
        for node_id, (age, draining) in CASES.items()
    }
    assert expected == {
        "never": "offline",
        "never-draining": "offline",
        "fresh": "online",
        "fresh-draining": "draining",
        "at-the-edge": "online",
        "just-too-old": "offline",
        "old-draining": "offline",
    }
    async with engine.connect() as connection:
        computed = dict((await connection.execute(select(NODES.c.id, rule.sql(NODES.c, NOW)))).all())
        assert computed == expected
        for status in ("online", "offline", "draining"):
            query = select(NODES.c.id).where(rule.sql_is(status, NODES.c, NOW))
            chosen = set((await connection.execute(query)).scalars())
            assert chosen == {node_id for node_id, value in expected.items() if value == status}
