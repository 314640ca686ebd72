"""The apiserver's object graph, built once per process from its settings.

Everything a request or a background task needs is created here and handed on explicitly:
controllers receive the services through Litestar's dependency injection (server.app), and
the background services (wake bus, leader lease, queue connection, liveness flush, scheduler,
lost-run reaper) start and stop with the application's lifespan in the order listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.auth import Auth
from server.clock import SystemClock
from server.config import Settings
from server.db.engine import create_engine, create_sessionmaker
from server.identity import Authenticator
from server.leader import make_lease
from server.liveness import make_liveness_store
from server.metrics import Metrics
from server.node_status import StatusRule
from server.queue import make_queue
from server.queue.base import RunQueue
from server.scheduler.loop import Scheduler
from server.secrets import SecretBox
from server.services.audit import AuditService
from server.services.commands import CommandService, ProxyTestTargets
from server.services.context import ServiceContext
from server.services.env_config import EnvConfigService
from server.services.health import HealthService
from server.services.liveness import Liveness
from server.services.metrics import MetricsService
from server.services.node_events import NodeEventService
from server.services.node_feed import NodeFeed, TimeSweep
from server.services.nodes import NodeService
from server.services.reaper import LostRunReaper
from server.services.retention import RetentionSweeper
from server.services.runs import RunService
from server.services.work import WorkService
from server.sessions import SessionSigner
from server.wake import make_wake_bus

log = logging.getLogger("server.components")


class BackgroundService(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Services:
    """What the controllers use; each is injected by the name of its field."""

    nodes: NodeService
    env_config: EnvConfigService
    runs: RunService
    node_events: NodeEventService
    work: WorkService
    commands: CommandService
    audit: AuditService
    health: HealthService
    metrics: MetricsService


@dataclass
class Components:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    context: ServiceContext
    services: Services
    auth: Auth
    metrics: Metrics
    background: list[BackgroundService] = field(default_factory=list)


class QueueConnection:
    """Connects the queue at start-up; the server starts even while Redis is down."""

    def __init__(self, queue: RunQueue) -> None:
        self._queue = queue

    async def start(self) -> None:
        try:
            await self._queue.start()
        except Exception as exc:  # the scheduler and the outbox retry; never block start-up
            log.warning("run queue not reachable at start-up, will retry: %s", exc)

    async def stop(self) -> None:
        await self._queue.close()


SCHEDULER_TOPIC = "scheduler"
NODES_TOPIC = "nodes"


def _wake_everything(context: ServiceContext, scheduler: Scheduler) -> Callable[[], None]:
    """After the wake bus lost its connection: every waiter re-reads, the scheduler reloads."""

    def wake() -> None:
        for notifier in (context.node_work, context.run_updates, context.command_results):
            notifier.notify_all()
        context.node_feed.reset()  # live node views reload what they show
        scheduler.nodes_changed()

    return wake


def build_components(settings: Settings) -> Components:
    targets = ProxyTestTargets(settings.proxy_test_url, settings.proxy_test_https_url)
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    queue = make_queue(settings.redis_url)
    secrets = SecretBox(settings.secrets_keys)
    authenticator = Authenticator(settings, sessionmaker)
    bus = make_wake_bus(settings.redis_url)
    node_work, run_updates = bus.notifier("node_work"), bus.notifier("run_updates")
    command_results = bus.notifier("command_results")
    node_feed = NodeFeed(bus)

    def on_assigned(assigned: list[tuple[str, str]]) -> None:
        for run_id, node_id in assigned:
            node_work.notify(node_id)
            run_updates.notify(run_id)
            node_feed.changed(node_id)  # its load

    clock = SystemClock()
    status_rule = StatusRule(settings.offline_after)  # one, so the restart hold applies everywhere
    metrics = Metrics()
    scheduler = Scheduler(
        sessionmaker,
        queue,
        offline_after=settings.offline_after,
        start_failure_cooldown=settings.start_failure_cooldown,
        on_assigned=on_assigned,
        clock=clock,
        status_rule=status_rule,
        metrics=metrics,
        on_reasons=run_updates.notify_each,
    )
    # what wakes the scheduler on one replica wakes it on every one (a slot freed, a node changed)
    bus.attach(SCHEDULER_TOPIC, lambda _: scheduler.wake())
    bus.attach(NODES_TOPIC, lambda _: scheduler.nodes_changed())

    def wake_scheduler() -> None:
        scheduler.wake()
        bus.publish(SCHEDULER_TOPIC, "")

    def nodes_changed() -> None:
        scheduler.nodes_changed()
        bus.publish(NODES_TOPIC, "")

    context = ServiceContext(
        settings=settings,
        sessionmaker=sessionmaker,
        queue=queue,
        secrets=secrets,
        wake_scheduler=wake_scheduler,
        nodes_changed=nodes_changed,
        run_updates=run_updates,
        node_work=node_work,
        command_results=command_results,
        clock=clock,
        shared_status_rule=status_rule,
        node_feed=node_feed,
    )
    bus.on_reconnect(_wake_everything(context, scheduler))
    lease = make_lease(settings.redis_url, settings.leader_lease)
    lease.on_change(lambda held: metrics.leader.set(1 if held else 0))
    liveness = Liveness(context, make_liveness_store(settings.redis_url))
    reaper = LostRunReaper(context, liveness, lease=lease)
    metrics_service = MetricsService(context, metrics)
    nodes = NodeService(context, authenticator, liveness, metrics_service.heartbeat_answered)
    sweep = TimeSweep(node_feed, nodes.turned_between, clock.now)
    services = Services(
        nodes=nodes,
        env_config=EnvConfigService(context),
        runs=RunService(context),
        node_events=NodeEventService(context),
        work=WorkService(context),
        commands=CommandService(context, targets),
        audit=AuditService(context),
        health=HealthService(engine, queue),
        metrics=metrics_service,
    )
    return Components(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        context=context,
        services=services,
        auth=Auth(settings, authenticator, SessionSigner(settings)),
        metrics=metrics,
        # liveness before the scheduler: its first snapshot already sees the restart hold
        background=[
            bus,
            lease,
            QueueConnection(queue),
            liveness,
            scheduler,
            reaper,
            sweep,
            RetentionSweeper(context, lease),
        ],
    )
