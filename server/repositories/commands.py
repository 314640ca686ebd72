"""SQL for node commands (proxy tests): pending -> delivered -> done | expired."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from server.db.models import NodeCommandRow


def _changed(result: Any) -> bool:
    return cast(CursorResult[Any], result).rowcount == 1


async def get(session: AsyncSession, command_id: str) -> NodeCommandRow | None:
    stmt = select(NodeCommandRow).where(col(NodeCommandRow.id) == command_id)
    row = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
    return row


async def deliverable(session: AsyncSession, node_id: str, now: datetime) -> list[NodeCommandRow]:
    """The node's unanswered commands (pending ones now marked delivered): handed out again until
    the node's result is stored or the command expires, so none is lost with a lost answer."""
    stmt = (
        select(NodeCommandRow)
        .where(
            col(NodeCommandRow.node_id) == node_id,
            col(NodeCommandRow.state).in_(["pending", "delivered"]),
        )
        .order_by(col(NodeCommandRow.created_at), col(NodeCommandRow.id))
    )
    rows = list((await session.execute(stmt)).scalars())
    if any(row.state == "pending" for row in rows):
        await session.execute(
            update(NodeCommandRow)
            .where(col(NodeCommandRow.node_id) == node_id, col(NodeCommandRow.state) == "pending")
            .values(state="delivered", delivered_at=now)
            .execution_options(synchronize_session=False)
        )
    return rows


async def complete(session: AsyncSession, command_id: str, result: dict[str, Any], now: datetime) -> bool:
    """Store the node's answer once; a repeated post changes nothing."""
    outcome = await session.execute(
        update(NodeCommandRow)
        .where(col(NodeCommandRow.id) == command_id, col(NodeCommandRow.state) != "done")
        .values(state="done", result=result, completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(outcome)


async def expire(session: AsyncSession, command_id: str, now: datetime) -> bool:
    """Give up on a command nobody answered; False when the answer arrived meanwhile."""
    outcome = await session.execute(
        update(NodeCommandRow)
        .where(col(NodeCommandRow.id) == command_id, col(NodeCommandRow.state).in_(["pending", "delivered"]))
        .values(state="expired", completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(outcome)


async def add(session: AsyncSession, command: NodeCommandRow) -> None:
    session.add(command)
    await session.flush()


async def set_payload(session: AsyncSession, command_id: str, payload: dict[str, Any]) -> None:
    await session.execute(
        update(NodeCommandRow)
        .where(col(NodeCommandRow.id) == command_id)
        .values(payload=payload)
        .execution_options(synchronize_session=False)
    )
