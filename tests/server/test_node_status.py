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


async def test_the_restart_hold_keeps_statuses_in_python_and_sql(engine: AsyncEngine) -> None:
    """After a restart, until one offline window has passed, no node goes offline on a time at or
    after the cutoff of the last stored heartbeats: the server was away, not the nodes."""
    rule = StatusRule(offline_after=90.0)
    last_stored = NOW - timedelta(seconds=200)  # the newest heartbeat before the restart
    rule.hold(last_stored - timedelta(seconds=90), until=NOW + timedelta(seconds=60))
    ages = {"online-at-the-crash": 210.0, "offline-before-the-crash": 300.0, "heard-since": 1.0}
    await insert_rows(
        engine,
        NODES,
        [{**node_row(n), "last_heartbeat_at": NOW - timedelta(seconds=a)} for n, a in ages.items()],
    )
    expected = {
        "online-at-the-crash": "online",
        "offline-before-the-crash": "offline",
        "heard-since": "online",
    }
    assert {n: rule.of(NOW - timedelta(seconds=a), False, NOW) for n, a in ages.items()} == expected
    async with engine.connect() as connection:
        assert dict((await connection.execute(select(NODES.c.id, rule.sql(NODES.c, NOW)))).all()) == expected
    # runs wait for a node to be heard again: the placement forms do not hold
    placing = {
        "online-at-the-crash": "offline",
        "offline-before-the-crash": "offline",
        "heard-since": "online",
    }
    async with engine.connect() as connection:
        query = select(NODES.c.id, rule.sql_state(NODES.c, NOW, placing=True))
        assert dict((await connection.execute(query)).all()) == placing
        query = select(NODES.c.id).where(rule.sql_schedulable(NODES.c, NOW))
        assert set((await connection.execute(query)).scalars()) == {"heard-since"}
    stale = NOW - timedelta(seconds=210)
    assert not rule.schedulable("online", True, None, NOW, stale)
    assert rule.schedulable("online", True, None, NOW, NOW - timedelta(seconds=1))
    after = NOW + timedelta(seconds=60)  # the hold is over: stale times count again
    assert rule.of(NOW - timedelta(seconds=210), False, after) == "offline"
    assert rule.of(after - timedelta(seconds=1), False, after) == "online"
