"""Plugs runs, the scheduler, the node work channel and node commands into the app.

`install(state)` is listed in `server.app.EXTENSIONS`. It builds the run queue
(REDIS_URL or the embedded queue), one `RunContext` shared by the run-side services,
and registers background services (queue, scheduler, lost-run reaper) and node hooks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from litestar.datastructures import State

from nodeapi import models as m
from server.config import ConfigError
from server.queue import make_queue
from server.queue.base import RunQueue
from server.services.commands import CommandService, ProxyTestTargets
from server.services.node_events import NodeEventService
from server.services.reaper import LostRunReaper
from server.services.run_context import RunContext
from server.services.run_reconcile import runs_to_stop
from server.services.runs import RunService
from server.services.work import WorkService

log = logging.getLogger("server.runs")


@dataclass
class RunServices:
    ctx: RunContext
    runs: RunService
    node_events: NodeEventService
    work: WorkService
    commands: CommandService
    reaper: LostRunReaper


class QueueService:
    """Connects the queue at start-up (the server starts even while Redis is down)."""

    def __init__(self, queue: RunQueue) -> None:
        self._queue = queue

    async def start(self) -> None:
        try:
            await self._queue.start()
        except Exception as exc:  # the scheduler and the outbox retry; never block start-up
            log.warning("run queue not reachable at start-up, will retry: %s", exc)

    async def stop(self) -> None:
        await self._queue.close()


def install(state: State) -> None:
    settings = state.settings
    try:
        targets = ProxyTestTargets.from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    queue = make_queue(settings.redis_url)
    ctx = RunContext(settings=settings, sessionmaker=state.sessionmaker, queue=queue)
    services = RunServices(
        ctx=ctx,
        runs=RunService(ctx),
        node_events=NodeEventService(ctx),
        work=WorkService(ctx),
        commands=CommandService(ctx, targets),
        reaper=LostRunReaper(ctx),
    )
    state.queue = queue
    state.run_context = ctx
    state.run_services = services
    state.services.append(QueueService(queue))
    _install_scheduler(state, ctx)
    state.services.append(services.reaper)
    hooks = state.node_hooks
    hooks.reconcile.append(runs_to_stop)

    watch = _NodeWatch()

    async def after_heartbeat(node: m.Node) -> None:
        if watch.changed(node):
            ctx.wake_scheduler()

    async def after_admin_change(node: m.Node) -> None:
        watch.changed(node)
        ctx.wake_scheduler()
        ctx.node_work.notify(node.id)  # the work answer carries `draining`

    hooks.after_heartbeat.append(after_heartbeat)
    hooks.after_admin_change.append(after_admin_change)


class _NodeWatch:
    """Remembers what each node looked like to the scheduler, so a heartbeat wakes it only
    when a node appeared, came back, or changed labels, capacity or draining."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[object, ...]] = {}

    def changed(self, node: m.Node) -> bool:
        # `running` stays out: a slot freed by a run ending wakes the scheduler where that is recorded
        shape = (node.status, tuple(sorted(node.labels.items())), node.capacity.max_concurrent)
        previous = self._seen.get(node.id)
        self._seen[node.id] = shape
        return previous != shape


def _install_scheduler(state: State, ctx: RunContext) -> None:
    from server.scheduler.loop import Scheduler

    def on_assigned(assigned: list[tuple[str, str]]) -> None:
        for run_id, node_id in assigned:
            ctx.node_work.notify(node_id)
            ctx.run_updates.notify(run_id)

    scheduler = Scheduler(
        state.sessionmaker, ctx.queue, offline_after=state.settings.offline_after, on_assigned=on_assigned
    )
    ctx.wake_scheduler = scheduler.wake
    state.scheduler = scheduler
    state.services.append(scheduler)
