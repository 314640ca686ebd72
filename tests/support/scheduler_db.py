"""Seed and inspect scheduler tables directly (async, on an engine the test owns)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from server.config import Settings
from server.db.engine import create_engine
from server.db.models import NODES, RUN_EVENTS, RUNS

__all__ = ["NODES", "RUNS", "RUN_EVENTS"]


async def fresh_engine(database_url: str) -> AsyncEngine:
    engine = create_engine(Settings.from_env({"DATABASE_URL": database_url}))
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all)
    return engine


def node_row(
    node_id: str,
    *,
    max_concurrent: int = 2,
    running: int = 0,
    draining: bool = False,
    seen_ago: float = 1.0,
    labels: Mapping[str, str] | None = None,
    cpu_millis: int | None = None,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "cpu_millis": cpu_millis,
        "memory_mb": memory_mb,
        "id": node_id,
        "reported_labels": dict(labels or {}),
        "label_overrides": {},
        "labels": dict(labels or {}),
        "max_concurrent": max_concurrent,
        "running": running,
        "draining": draining,
        "info": {},
        "last_heartbeat_at": now - timedelta(seconds=seen_ago),
        "created_at": now,
        "resource_version": 1,
    }


def run_row(
    run_id: str,
    *,
    selector: Mapping[str, str] | None = None,
    expressions: Iterable[str] = (),
    enqueued: bool = True,
    age: float = 5.0,
    running_on: str | None = None,
    cpu_millis: int | None = None,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    """A queued run, or with `running_on` one running on that node (load the node counts)."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    return {
        "cpu_millis": cpu_millis,
        "memory_mb": memory_mb,
        "id": run_id,
        "status": "running" if running_on else "queued",
        "node_id": running_on,
        "image": "busybox",
        "command": ["true"],
        "env": {},
        "node_selector": dict(selector or {}),
        "selector_expressions": list(expressions),
        "created_at": created,
        "attempts": 0,
        "cancel_requested": False,
        "last_event_seq": 0,
        "last_node_seq": 0,
        "enqueued": enqueued,
    }


async def insert_rows(engine: AsyncEngine, table: Any, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(table), rows)


async def runs_by_id(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(RUNS))
        return {row.id: row for row in rows}


async def nodes_by_id(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(NODES))
        return {row.id: row for row in rows}


async def events_of(engine: AsyncEngine, run_id: str | None = None) -> list[Any]:
    query = select(RUN_EVENTS).order_by(RUN_EVENTS.c.run_id, RUN_EVENTS.c.seq)
    if run_id is not None:
        query = query.where(RUN_EVENTS.c.run_id == run_id)
    async with engine.connect() as connection:
        return list(await connection.execute(query))
