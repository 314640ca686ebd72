"""SQL for the `env_configs` table (one row per node; absent = empty config)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import ENV_CONFIGS, EnvConfigRow

col: Any = ENV_CONFIGS.c


async def get(session: AsyncSession, node_id: str) -> Row[Any] | None:
    query = select(col.proxy, col.env, col.resource_version, col.updated_at).where(col.node_id == node_id)
    return (await session.execute(query)).first()


async def upsert(
    session: AsyncSession, node_id: str, proxy: dict[str, str | None], env: dict[str, str], now: datetime
) -> Row[Any]:
    values = {"node_id": node_id, "proxy": proxy, "env": env, "resource_version": 1, "updated_at": now}
    insert: Any = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(EnvConfigRow).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[col.node_id],
        set_={
            "proxy": stmt.excluded.proxy,
            "env": stmt.excluded.env,
            "updated_at": stmt.excluded.updated_at,
            "resource_version": col.resource_version + 1,
        },
    ).returning(col.proxy, col.env, col.resource_version, col.updated_at)
    return (await session.execute(stmt)).one()


async def delete_for_node(session: AsyncSession, node_id: str) -> None:
    await session.execute(delete(EnvConfigRow).where(col.node_id == node_id))
