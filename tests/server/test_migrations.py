"""The alembic migrations create exactly the tables of server/db/models.py, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlmodel import SQLModel

import server.db.models  # noqa: F401  (registers the tables)
from server.config import Settings
from server.db.engine import create_engine
from server.migrations import run_migrations


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def _migrate_twice_and_diff(database_url: str) -> list[Any]:
    engine = create_engine(Settings.from_env({"DATABASE_URL": database_url}))
    try:
        await run_migrations(engine)
        await run_migrations(engine)  # idempotent
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


def test_migrations_match_models(database_url: str) -> None:
    assert asyncio.run(_migrate_twice_and_diff(database_url)) == []
