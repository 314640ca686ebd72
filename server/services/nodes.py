"""Node registry: heartbeats (auto-registration), listing, admin changes, deletion.

Status is never stored: it is derived when read (server.node_status), so no timer has to
flip nodes offline.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast, get_args

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi import validation
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyRequests
from server.identity import Authenticator, Principal, new_node_token, token_hash
from server.liveness import Report
from server.repositories import env_config as env_repo
from server.repositories import nodes as repo
from server.services.audit import record
from server.services.context import ServiceContext
from server.services.liveness import Liveness, held_runs, report_of
from server.services.mappers import condition_rows, node_from_columns, run_to_wire
from server.services.node_feed import FeedEvent
from server.services.ratelimit import TokenBuckets
from server.services.run_limits import cpu_millis_of_capacity
from server.services.run_reconcile import reconcile

log = logging.getLogger("server.nodes")

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_UPDATE_ATTEMPTS = 5
MAX_INFO_STRING = 256


def _invalid(exc: ValueError) -> InvalidInput:
    return InvalidInput(str(exc))


class _SchedulerView:
    """What each node looked like to the scheduler, so that a heartbeat wakes it only when a
    node appeared, came back, or changed labels, capacity or draining."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[object, ...]] = {}

    def changed(self, node: m.Node) -> bool:
        # `running` stays out: a slot freed by a run ending wakes the scheduler where that is recorded
        shape = (
            node.status,
            node.schedulable,
            tuple(sorted(node.labels.items())),
            node.capacity.max_concurrent,
            node.capacity.cpus,
            node.capacity.memory_mb,
        )
        previous = self._seen.get(node.id)
        self._seen[node.id] = shape
        return previous != shape


class NodeService:
    def __init__(
        self,
        ctx: ServiceContext,
        authenticator: Authenticator,
        liveness: Liveness,
        on_answered: Callable[[], None] = lambda: None,
    ) -> None:
        self._ctx = ctx
        self._on_answered = on_answered  # each heartbeat answered (the heartbeats counter of /metrics)
        self._authenticator = authenticator
        self._liveness = liveness
        self._scheduler_view = _SchedulerView()
        settings = ctx.settings
        self._heartbeat_rate = TokenBuckets(settings.heartbeat_rate_burst, settings.heartbeat_rate_per_second)

    async def heartbeat(self, req: m.HeartbeatRequest, caller: Principal) -> m.HeartbeatResponse:
        """Liveness and what the node reports. With the join token it registers a new node id (or
        gives a node without a credential one) and answers its `node_token`, once.

        A heartbeat that changes nothing but liveness is taken by the liveness store and
        answered at once (server.services.liveness); any other goes through the database."""
        try:
            validation.validate_node_id(req.node_id)
            validation.validate_labels(req.labels)
            validation.validate_capacity(req.capacity.max_concurrent)
        except ValueError as exc:
            raise _invalid(exc) from exc
        if caller.role == "node" and not caller.trusted and caller.node_id != req.node_id:
            raise Forbidden(
                f"a node token acts only for its own node ({caller.node_id}), not {req.node_id!r}"
            )
        wait = self._heartbeat_rate.take(req.node_id)
        if wait is not None:
            raise TooManyRequests(
                f"too many heartbeats for node {req.node_id!r}: at most {self._heartbeat_rate.burst} at "
                f"once and {self._heartbeat_rate.per_second:g} a second (HEARTBEAT_RATE_BURST, "
                f"HEARTBEAT_RATE_PER_SECOND); retry in {wait:.1f} s",
                retry_after=wait,
            )
        now = self._ctx.clock.now()
        report = report_of(req)
        if caller.role != "join":
            known = await self._liveness.heard(req.node_id, report, held_runs(req), now)
            if known is not None:
                return self._reply(req.node_id, "draining" if known.draining else "online", [], None)
        return await self._store_heartbeat(req, caller, report, now)

    async def liveness_heartbeat(
        self, req: m.HeartbeatRequest, caller: Principal
    ) -> m.HeartbeatResponse | None:
        """The heartbeat's answer when it changes nothing but liveness (server.controllers.
        heartbeat_lane); None, with nothing changed: it needs `heartbeat()` (a change, a refusal,
        a registration)."""
        if caller.role != "node" or (not caller.trusted and caller.node_id != req.node_id):
            return None
        try:
            validation.validate_node_id(req.node_id)
            validation.validate_labels(req.labels)
            validation.validate_capacity(req.capacity.max_concurrent)
        except ValueError:
            return None
        if self._heartbeat_rate.take(req.node_id) is not None:
            return None  # refused: heartbeat() refuses it again, with its Retry-After
        now = self._ctx.clock.now()
        known = await self._liveness.heard(req.node_id, report_of(req), held_runs(req), now)
        if known is None:
            self._heartbeat_rate.give_back(req.node_id)
            return None
        return self._reply(req.node_id, "draining" if known.draining else "online", [], None)

    async def _store_heartbeat(
        self, req: m.HeartbeatRequest, caller: Principal, report: Report, now: datetime
    ) -> m.HeartbeatResponse:
        info = _clean_info(msgspec.to_builtins(req.info))
        node_token = None
        async with self._ctx.sessionmaker.begin() as session:
            if caller.role == "join":
                node_token = await self._register(session, req.node_id, caller, now)
            previous = await repo.stored_conditions(session, req.node_id) if req.conditions else []
            conditions = condition_rows(list(req.conditions), previous, now)
            reported = repo.ReportedState(
                labels=dict(req.labels),
                max_concurrent=req.capacity.max_concurrent,
                cpu_millis=cpu_millis_of_capacity(req.capacity.cpus),
                memory_mb=req.capacity.memory_mb,
                info=info,
                conditions=conditions,
                digest=report.stored(),
            )
            row = await repo.upsert_heartbeat(session, req.node_id, reported, now)
            if node_token is not None and not await repo.claim_credential(
                session, req.node_id, token_hash(node_token), now
            ):
                raise Conflict(f"node {req.node_id!r} was registered concurrently; retry with its node token")
            reconciled = await reconcile(
                session,
                req.node_id,
                list(req.active_runs),
                dict(req.run_attempts),
                now,
                self._ctx.settings.reconcile_grace,
                self._ctx.settings.run_max_attempts,
            )
        node = node_from_columns(row, self._ctx.status_rule, now)
        await self._liveness.recorded(req.node_id, report if reconciled.agreed else None, now, node.draining)
        if reconciled.requeued:
            await self._ctx.publish(reconciled.requeued)
        for run_id in (*reconciled.requeued, *reconciled.ended):
            self._ctx.run_updates.notify(run_id)
        if self._scheduler_view.changed(node):
            self._ctx.nodes_changed()
            self._ctx.node_feed.changed(req.node_id)
        elif reconciled.changed:
            self._ctx.wake_scheduler()
            self._ctx.node_feed.changed(req.node_id)  # its load
        return self._reply(req.node_id, node.status, reconciled.stop_runs, node_token)

    def _reply(
        self, node_id: str, status: m.NodeStatus, stop_runs: list[str], node_token: str | None
    ) -> m.HeartbeatResponse:
        self._on_answered()
        settings = self._ctx.settings
        return m.HeartbeatResponse(
            node_id=node_id,
            status=status,
            heartbeat_interval=settings.heartbeat_interval,
            offline_after=settings.offline_after,
            stop_runs=stop_runs,
            node_token=node_token,
        )

    async def _register(self, session: AsyncSession, node_id: str, caller: Principal, now: datetime) -> str:
        """A new credential for a node id that has none (new, reset by an admin, or from before
        node credentials existed: trust on first use); Conflict for one that has its own."""
        claimed = await repo.credential_claimed(session, node_id)
        if claimed:
            raise Conflict(
                f"node {node_id!r} is already registered and has its own credential: the join token "
                "cannot act for it. If the node lost its state directory, an admin runs "
                f"`nodectl nodes reset-credential {node_id}` (or deletes the node) and the node "
                "registers again at its next heartbeat"
            )
        action = "node.register" if claimed is None else "node.claim_credential"
        await record(session, caller.actor, action, "node", node_id, {})
        return new_node_token()

    async def reset_credential(self, node_id: str, actor: str) -> None:
        """Void the node's credential: the next heartbeat with the join token registers it again."""
        async with self._ctx.sessionmaker.begin() as session:
            if not await repo.void_credential(session, node_id):
                raise NotFound(f"node {node_id!r} not found")
            await record(session, actor, "node.reset_credential", "node", node_id, {})
        self._authenticator.forget_node(node_id)

    async def list(
        self,
        status: str | None,
        selector: str | None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        search: str | None = None,
    ) -> m.NodeList:
        if status and status not in get_args(m.NodeStatus):
            raise InvalidInput(f"status must be one of online, offline, draining; got {status!r}")
        try:
            labels = validation.parse_selector(selector) if selector else {}
        except ValueError as exc:
            raise _invalid(exc) from exc
        now, rule = self._ctx.clock.now(), self._ctx.status_rule
        position = self._ctx.node_feed.position  # before the read: a change after it is streamed
        async with self._ctx.sessionmaker() as session:
            rows, total = await repo.list_nodes(
                session,
                status=cast(m.NodeStatus, status) if status else None,
                selector=labels,
                rule=rule,
                now=now,
                limit=limit,
                offset=offset,
                search=search or None,
            )
        seen = await self._liveness.last_seen([row[0] for row in rows])
        items = [node_from_columns(row, rule, now, seen.get(row[0])) for row in rows]
        return m.NodeList(items=items, total=total, limit=limit, offset=offset, stream_position=position)

    async def get(self, node_id: str) -> m.Node:
        async with self._ctx.sessionmaker() as session:
            row = await repo.get_node(session, node_id)
        if row is None:
            raise NotFound(f"node {node_id!r} not found")
        seen = await self._liveness.last_seen([node_id])
        return node_from_columns(row, self._ctx.status_rule, self._ctx.clock.now(), seen.get(node_id))

    async def changes(self, node_ids: Sequence[str]) -> dict[str, object]:
        """What the live node stream sends of each of `node_ids` that exists (m.NodeChange)."""
        now, rule = self._ctx.clock.now(), self._ctx.status_rule
        async with self._ctx.sessionmaker() as session:
            rows = await repo.get_nodes(session, node_ids)
        seen = await self._liveness.last_seen([row[0] for row in rows])
        changes: dict[str, object] = {}
        for row in rows:
            node = node_from_columns(row, rule, now, seen.get(row[0]))
            changes[node.id] = m.NodeChange(
                id=node.id,
                status=node.status,
                draining=node.draining,
                schedulable=node.schedulable,
                labels=node.labels,
                capacity=node.capacity,
                running=node.running,
                requested=node.requested,
                conditions=node.conditions,
                last_heartbeat_at=node.last_heartbeat_at,
                resource_version=node.resource_version,
            )
        return changes

    def watch(self, last_event_id: str | None) -> AsyncIterator[FeedEvent]:
        """The live node stream's events (server.services.node_feed)."""
        return self._ctx.node_feed.follow(self.changes, last_event_id)

    async def turned_between(self, start: datetime, end: datetime) -> Sequence[str]:
        """Nodes that turned offline (their last heartbeat passed NODE_OFFLINE_AFTER) or whose
        quarantine ended in [start, end): the live stream's time sweep."""
        silence = timedelta(seconds=self._ctx.settings.offline_after)
        async with self._ctx.sessionmaker() as session:
            silent = await repo.heartbeats_between(session, start - silence, end - silence)
            released = await repo.quarantines_ending_between(session, start, end)
        return list(dict.fromkeys([*silent, *released]))

    async def runs(self, node_id: str, status: str | None, limit: int, offset: int) -> m.RunList:
        async with self._ctx.sessionmaker() as session:
            if not await repo.exists(session, node_id):
                raise NotFound(f"node {node_id!r} not found")
            rows, total = await repo.runs_of_node(session, node_id, status, limit, offset)
        return m.RunList(items=[run_to_wire(row) for row in rows], total=total, limit=limit, offset=offset)

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
            async with self._ctx.sessionmaker.begin() as session:
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
                _check_label_counts(values)
                values["updated_at"] = self._ctx.clock.now()
                if await repo.update_admin_fields(session, node_id, current.resource_version, values):
                    await record(session, actor, "node.update", "node", node_id, _patch_details(patch))
                    break
            if expected is not None:
                raise Conflict(f"node {node_id!r} was changed meanwhile; reload and retry")
        else:
            raise Conflict(f"node {node_id!r} is being changed concurrently; retry")
        await self._liveness.invalidate([node_id])  # its heartbeat answer says whether it is draining
        node = await self.get(node_id)
        self._scheduler_view.changed(node)
        self._ctx.nodes_changed()
        self._ctx.node_work.notify(node_id)  # the work answer carries `draining`
        self._ctx.node_feed.changed(node_id)
        return node

    async def delete(self, node_id: str, actor: str) -> None:
        async with self._ctx.sessionmaker.begin() as session:
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
        self._authenticator.forget_node(node_id)
        await self._liveness.forget(node_id)
        self._ctx.node_feed.changed(node_id)


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
    if patch.cpus is not None:
        values["cpu_millis"] = values["cpu_millis_override"] = cpu_millis_of_capacity(patch.cpus)
    if patch.memory_mb is not None:
        values["memory_mb"] = values["memory_mb_override"] = patch.memory_mb
    return values


def _check_label_counts(values: dict[str, Any]) -> None:
    """The labels a PATCH leaves: at most MAX_LABELS in effect, and at most twice that many
    admin entries (settings and removals of reported labels)."""
    if "labels" not in values:
        return
    limit = validation.MAX_LABELS
    if len(values["labels"]) > limit:
        raise InvalidInput(
            f"labels: the node would have {len(values['labels'])} labels; at most {limit} are allowed "
            "(those it reports and those set by PATCH together)"
        )
    if len(values["label_overrides"]) > 2 * limit:
        raise InvalidInput(f"labels: at most {2 * limit} labels may be set or removed by PATCH in all")


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
