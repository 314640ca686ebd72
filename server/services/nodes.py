"""Node registry: heartbeats (auto-registration), listing, admin changes, deletion.

Status is never stored: it is derived from `last_heartbeat_at` and `draining` when read
(see docs/architecture.md), so no timer has to flip nodes offline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodeapi import models as m
from nodeapi import validation
from server.config import Settings
from server.errors import Conflict, InvalidInput, NotFound
from server.repositories import env_config as env_repo
from server.repositories import nodes as repo
from server.services.audit import record
from server.services.mappers import node_from_columns, now_utc

log = logging.getLogger("server.nodes")

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_UPDATE_ATTEMPTS = 5
MAX_INFO_STRING = 256

# (session, node_id, active_runs the node reported) -> run ids the node must stop; runs in the
# heartbeat's transaction. Filled by the runs service.
ReconcileHook = Callable[[AsyncSession, str, list[str]], Awaitable[list[str]]]
# called after a committed change (heartbeat, admin change): wake the scheduler, long-polls, ...
NodeHook = Callable[[m.Node], Awaitable[None]]


@dataclass
class NodeHooks:
    reconcile: list[ReconcileHook] = field(default_factory=list)
    after_heartbeat: list[NodeHook] = field(default_factory=list)
    after_admin_change: list[NodeHook] = field(default_factory=list)

    async def notify(self, hooks: list[NodeHook], node: m.Node) -> None:
        for hook in hooks:
            try:
                await hook(node)
            except Exception:
                log.exception("node hook %r failed for %s", hook, node.id)


def _invalid(exc: ValueError) -> InvalidInput:
    return InvalidInput(str(exc))


class NodeService:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, hooks: NodeHooks):
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._hooks = hooks

    def offline_before(self, now: datetime | None = None) -> datetime:
        return (now or now_utc()) - timedelta(seconds=self._settings.offline_after)

    async def heartbeat(self, req: m.HeartbeatRequest) -> m.HeartbeatResponse:
        try:
            validation.validate_node_id(req.node_id)
            validation.validate_labels(req.labels)
            validation.validate_capacity(req.capacity.max_concurrent)
        except ValueError as exc:
            raise _invalid(exc) from exc
        now = now_utc()
        info = _clean_info(msgspec.to_builtins(req.info))
        async with self._sessionmaker.begin() as session:
            row = await repo.upsert_heartbeat(
                session, req.node_id, dict(req.labels), req.capacity.max_concurrent, info, now
            )
            stop_runs: list[str] = []
            for reconcile in self._hooks.reconcile:
                stop_runs.extend(await reconcile(session, req.node_id, list(req.active_runs)))
        node = node_from_columns(row, self.offline_before(now))
        await self._hooks.notify(self._hooks.after_heartbeat, node)
        return m.HeartbeatResponse(
            node_id=req.node_id,
            status=node.status,
            heartbeat_interval=self._settings.heartbeat_interval,
            offline_after=self._settings.offline_after,
            stop_runs=sorted(set(stop_runs)),
        )

    async def list(
        self, status: str | None, selector: str | None, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> m.NodeList:
        offline_before = self.offline_before()
        conditions = []
        if status:
            if status not in ("online", "offline", "draining"):
                raise InvalidInput(f"status must be one of online, offline, draining; got {status!r}")
            conditions.append(repo.status_condition(status, offline_before))
        if selector:
            try:
                conditions.extend(repo.selector_condition(validation.parse_selector(selector)))
            except ValueError as exc:
                raise _invalid(exc) from exc
        async with self._sessionmaker() as session:
            rows, total = await repo.list_nodes(session, conditions, limit, offset)
        items = [node_from_columns(row, offline_before) for row in rows]
        return m.NodeList(items=items, total=total, limit=limit, offset=offset)

    async def get(self, node_id: str) -> m.Node:
        async with self._sessionmaker() as session:
            row = await repo.get_node(session, node_id)
        if row is None:
            raise NotFound(f"node {node_id!r} not found")
        return node_from_columns(row, self.offline_before())

    async def patch(self, node_id: str, patch: m.NodePatch, actor: str, if_match: int | None) -> m.Node:
        expected = patch.resource_version if patch.resource_version is not None else if_match
        try:
            if patch.labels:
                validation.validate_labels(patch.labels)
            if patch.max_concurrent is not None:
                validation.validate_capacity(patch.max_concurrent, "max_concurrent")
        except ValueError as exc:
            raise _invalid(exc) from exc
        for _ in range(MAX_UPDATE_ATTEMPTS):
            async with self._sessionmaker.begin() as session:
                current = await repo.get_for_update(session, node_id)
                if current is None:
                    raise NotFound(f"node {node_id!r} not found")
                if expected is not None and expected != current.resource_version:
                    raise Conflict(
                        f"node {node_id!r} was changed meanwhile (resource_version is "
                        f"{current.resource_version}, the edit was based on {expected}); reload and retry",
                        extra={"resource_version": current.resource_version},
                    )
                values = _patch_values(patch, current.reported_labels, current.label_overrides)
                values["updated_at"] = now_utc()
                if await repo.update_admin_fields(session, node_id, current.resource_version, values):
                    await record(session, actor, "node.update", "node", node_id, _patch_details(patch))
                    break
            if expected is not None:
                raise Conflict(f"node {node_id!r} was changed meanwhile; reload and retry")
        else:
            raise Conflict(f"node {node_id!r} is being changed concurrently; retry")
        node = await self.get(node_id)
        await self._hooks.notify(self._hooks.after_admin_change, node)
        return node

    async def delete(self, node_id: str, actor: str) -> None:
        async with self._sessionmaker.begin() as session:
            # delete first: on PostgreSQL the row lock makes a concurrent placement on this node wait
            # and then find no row, so no run can land between the check and the delete
            if not await repo.delete_node(session, node_id):
                raise NotFound(f"node {node_id!r} not found")
            active = await repo.active_run_ids(session, node_id)
            if active:
                await session.rollback()
                shown = ", ".join(active[:10]) + (" ..." if len(active) > 10 else "")
                raise Conflict(
                    f"node {node_id!r} has active runs (scheduled or running): {shown}; "
                    "drain it and wait for them to finish, or cancel them",
                    extra={"active_runs": active},
                )
            await env_repo.delete_for_node(session, node_id)
            await record(session, actor, "node.delete", "node", node_id, {})


def _patch_values(patch: m.NodePatch, reported: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if patch.labels:
        new_overrides = {**overrides, **patch.labels}
        values["label_overrides"] = new_overrides
        values["labels"] = effective_labels(reported, new_overrides)
    if patch.status is not None:
        values["draining"] = patch.status == "draining"
    if patch.max_concurrent is not None:
        values["max_concurrent"] = patch.max_concurrent
        values["max_concurrent_override"] = patch.max_concurrent
    return values


def _clean_info(info: dict[str, Any]) -> dict[str, Any]:
    """Informational fields only: drop empty ones, cut long strings, drop NULs PostgreSQL refuses."""
    return {
        key: value.replace("\x00", "")[:MAX_INFO_STRING] if isinstance(value, str) else value
        for key, value in info.items()
        if value is not None
    }


def effective_labels(reported: dict[str, str], overrides: dict[str, str | None]) -> dict[str, str]:
    """JSON merge patch of the overrides onto the reported labels: None removes a key."""
    merged = {**reported, **overrides}
    return {key: value for key, value in merged.items() if value is not None}


def _patch_details(patch: m.NodePatch) -> dict[str, Any]:
    details = msgspec.to_builtins(patch)
    return {key: value for key, value in details.items() if value is not None and key != "resource_version"}
