"""Audit log of admin changes: who changed what, with secrets masked before storing."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi.masking import mask_url_password
from server.errors import InvalidInput
from server.repositories import audit as repo
from server.services.context import ServiceContext
from server.services.mappers import now_utc, utc

SECRET_HINTS = ("password", "secret", "token", "passwd", "credential", "apikey", "api_key", "private")
MASK = "***"


def mask_secrets(value: Any, key: str = "") -> Any:
    """Recursively mask URL passwords and values of secret-looking keys (env vars, proxies)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if any(hint in key.lower() for hint in SECRET_HINTS):
            return MASK
        return mask_url_password(value) if "@" in value else value
    return value


async def record(
    session: AsyncSession, actor: str, action: str, target_type: str, target_id: str, details: dict[str, Any]
) -> None:
    """Add an entry inside the caller's transaction, so it commits (or not) with the change."""
    await repo.add(session, now_utc(), actor, action, target_type, target_id, mask_secrets(details))


async def record_many(
    session: AsyncSession, actor: str, action: str, target_type: str, items: list[tuple[str, dict[str, Any]]]
) -> None:
    """`record` for many targets of one action at once: (target id, details) each."""
    at = now_utc()
    await repo.add_many(
        session,
        [
            {
                "at": at,
                "actor": actor,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "details": mask_secrets(details),
            }
            for target_id, details in items
        ],
    )


class AuditService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def list(
        self, limit: int, offset: int, target_id: str | None = None, action: str | None = None
    ) -> m.AuditList:
        for name, value in (("target_id", target_id), ("action", action)):
            if value is not None and "\x00" in value:
                raise InvalidInput(f"{name} must not contain NUL characters")
        async with self._ctx.sessionmaker() as session:
            rows, total = await repo.page(session, limit, offset, target_id, action)
        items = [
            m.AuditEntry(
                id=row.id,
                at=utc(row.at),  # type: ignore[arg-type]
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                details=row.details or {},
            )
            for row in rows
        ]
        return m.AuditList(items=items, total=total, limit=limit, offset=offset)
