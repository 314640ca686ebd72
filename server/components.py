"""The apiserver's object graph, built once per process from its settings.

Everything a request or a background task needs is created here and handed on explicitly:
controllers receive the services through Litestar's dependency injection (server.app), and
the background services (queue connection, liveness flush, scheduler, lost-run reaper) start and stop with
the application's lifespan in the order listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.auth import Auth
from server.clock import SystemClock
from server.config import Settings
from server.db.engine import create_engine, create_sessionmaker
from server.identity import Authenticator
from server.liveness import make_liveness_store
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
from server.services.node_events import NodeEventService
from server.services.nodes import NodeService
from server.services.notifier import Notifier
from server.services.reaper import LostRunReaper
from server.services.runs import RunService
from server.services.work import WorkService
from server.sessions import SessionSigner

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


@dataclass
class Components:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    context: ServiceContext
    services: Services
    auth: Auth
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


def build_components(settings: Settings) -> Components:
    targets = ProxyTestTargets(settings.proxy_test_url, settings.proxy_test_https_url)
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    queue = make_queue(settings.redis_url)
    secrets = SecretBox(settings.secrets_keys)
    authenticator = Authenticator(settings, sessionmaker)
    node_work, run_updates = Notifier(), Notifier()

    def on_assigned(assigned: list[tuple[str, str]]) -> None:
        for run_id, node_id in assigned:
            node_work.notify(node_id)
            run_updates.notify(run_id)

    clock = SystemClock()
    status_rule = StatusRule(settings.offline_after)  # one, so the restart hold applies everywhere
    scheduler = Scheduler(
        sessionmaker,
        queue,
        offline_after=settings.offline_after,
        start_failure_cooldown=settings.start_failure_cooldown,
        on_assigned=on_assigned,
        clock=clock,
        status_rule=status_rule,
    )
    context = ServiceContext(
        settings=settings,
        sessionmaker=sessionmaker,
        queue=queue,
        secrets=secrets,
        wake_scheduler=scheduler.wake,
        nodes_changed=scheduler.nodes_changed,
        run_updates=run_updates,
        node_work=node_work,
        clock=clock,
        shared_status_rule=status_rule,
    )
    liveness = Liveness(context, make_liveness_store(settings.redis_url))
    reaper = LostRunReaper(context, liveness)
    services = Services(
        nodes=NodeService(context, authenticator, liveness),
        env_config=EnvConfigService(context),
        runs=RunService(context),
        node_events=NodeEventService(context),
        work=WorkService(context),
        commands=CommandService(context, targets),
        audit=AuditService(context),
        health=HealthService(engine, queue),
    )
    return Components(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        context=context,
        services=services,
        auth=Auth(settings, authenticator, SessionSigner(settings)),
        # liveness first: the scheduler's first snapshot already sees the restart hold
        background=[QueueConnection(queue), liveness, scheduler, reaper],
    )
