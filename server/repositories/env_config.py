"""SQL for the `env_configs` table (one row per node; absent = empty config)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import ENV_CONFIGS, EnvConfigRow

col: Any = ENV_CONFIGS.c


COLUMNS = (col.proxy, col.env, col.secrets, col.resource_version, col.updated_at)


async def get(session: AsyncSession, node_id: str) -> Any:
    """The node's config row (proxy, env, secrets, resource_version, updated_at), or None."""
    return (await session.execute(select(*COLUMNS).where(col.node_id == node_id))).first()


async def upsert(
    session: AsyncSession,
    node_id: str,
    proxy: dict[str, str | None],
    env: dict[str, str],
    secrets: dict[str, Any],
    now: datetime,
) -> Row[Any]:
    """`proxy` with masked passwords; `secrets` the sealed credentials and secret env."""
    values = {
        "node_id": node_id,
        "proxy": proxy,
        "env": env,
        "secrets": secrets,
        "resource_version": 1,
        "updated_at": now,
    }
    insert: Any = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(EnvConfigRow).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[col.node_id],
        set_={
            "proxy": stmt.excluded.proxy,
            "env": stmt.excluded.env,
            "secrets": stmt.excluded.secrets,
            "updated_at": stmt.excluded.updated_at,
            "resource_version": col.resource_version + 1,
        },
    ).returning(*COLUMNS)
    return (await session.execute(stmt)).one()


async def delete_for_node(session: AsyncSession, node_id: str) -> None:
    await session.execute(delete(EnvConfigRow).where(col.node_id == node_id))
