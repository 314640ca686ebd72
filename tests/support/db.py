"""Direct database access for tests (seed rows the API cannot create yet, inspect state)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from server.config import async_database_url
from server.db.models import NodeRow, RunRow


async def _execute(database_url: str, statements: Sequence[Any]) -> None:
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(statement)
    finally:
        await engine.dispose()


def execute(database_url: str, *statements: Any) -> None:
    asyncio.run(_execute(database_url, statements))


def insert_run(database_url: str, run_id: str, node_id: str | None, status: str) -> None:
    now = datetime.now(UTC)
    execute(
        database_url,
        insert(RunRow).values(
            id=run_id,
            status=status,
            image="busybox",
            command=["true"],
            env={},
            node_selector={},
            selector_expressions=[],
            node_id=node_id,
            created_at=now,
            attempts=0,
            cancel_requested=False,
            last_event_seq=0,
            last_node_seq=0,
            enqueued=True,
        ),
    )


def set_run_status(database_url: str, run_id: str, status: str) -> None:
    execute(database_url, update(RunRow).where(RunRow.id == run_id).values(status=status))  # type: ignore[arg-type]


def insert_nodes(database_url: str, count: int, labels_of: Any = None) -> None:
    """Bulk-insert `count` fresh nodes node-00000..; `labels_of(i)` gives each node's labels."""
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        labels = labels_of(i) if labels_of else {"os": "linux", "rack": f"r{i % 10}"}
        rows.append(
            {
                "id": f"node-{i:05d}",
                "reported_labels": labels,
                "label_overrides": {},
                "labels": labels,
                "max_concurrent": 4,
                "running": 0,
                "draining": False,
                "info": {"hostname": f"host-{i}", "os": "linux", "arch": "x86_64"},
                "last_heartbeat_at": now,
                "created_at": now,
                "updated_at": now,
                "resource_version": 1,
            }
        )
    execute(database_url, *_chunks(rows))


def _chunks(rows: list[dict[str, Any]], size: int = 500) -> list[Any]:
    return [insert(NodeRow).values(rows[i : i + size]) for i in range(0, len(rows), size)]


async def _scalar(database_url: str, statement: Any) -> Any:
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as connection:
            return (await connection.execute(statement)).scalar()
    finally:
        await engine.dispose()


def last_heartbeat_at(database_url: str, node_id: str) -> datetime | None:
    """The node's last_heartbeat_at as the database holds it (UTC)."""
    nodes = NodeRow.__table__.c  # type: ignore[attr-defined]
    value = asyncio.run(_scalar(database_url, select(nodes.last_heartbeat_at).where(nodes.id == node_id)))
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def clone_node(database_url: str, source_id: str, node_ids: Sequence[str], heard_at: datetime) -> None:
    """Copy the row of `source_id` (registered through the API) to each of `node_ids`, and set
    every node's last heartbeat to `heard_at`: a fleet that was heartbeating (bench/fleet.py)."""
    nodes = NodeRow.__table__  # type: ignore[attr-defined]
    columns = [column for column in nodes.c if column.name not in ("id", "last_heartbeat_at", "token_hash")]
    copy = select(
        bindparam("new_id"), bindparam("heard_at", type_=nodes.c.last_heartbeat_at.type), *columns
    ).where(nodes.c.id == source_id)
    statement = insert(nodes).from_select(["id", "last_heartbeat_at", *[c.name for c in columns]], copy)
    rows = [{"new_id": node_id, "heard_at": heard_at} for node_id in node_ids]

    async def run() -> None:
        engine = create_async_engine(async_database_url(database_url))
        try:
            async with engine.begin() as connection:
                for start in range(0, len(rows), 5000):
                    await connection.execute(statement, rows[start : start + 5000])
                await connection.execute(update(nodes).values(last_heartbeat_at=heard_at))
        finally:
            await engine.dispose()

    asyncio.run(run())
