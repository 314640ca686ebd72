"""The Litestar application: routes, the services they get injected, and the lifespan that
migrates the database and runs the background services (server.components)."""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.types import ControllerRouterHandler

from server.auth import AUTH_KEY
from server.components import BackgroundService, Components, Services, build_components
from server.config import Settings
from server.controllers.audit import AuditController
from server.controllers.console import console_router
from server.controllers.health import HealthController
from server.controllers.heartbeat_lane import heartbeat_lane
from server.controllers.metrics import MetricsController
from server.controllers.node_work import NodeWorkController
from server.controllers.nodes import NodeController
from server.controllers.runs import RunController
from server.controllers.session import SessionController
from server.controllers.version import version
from server.controllers.watch import WatchController
from server.edge import guard_edge, stamp_version
from server.errors import EXCEPTION_HANDLERS
from server.migrations import SchemaNewerThanCode, run_migrations
from server.observability import observe_requests
from server.openapi import document_errors, openapi_config, state_container_rules

log = logging.getLogger("server.app")

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    HealthController,
    MetricsController,
    NodeController,
    NodeWorkController,
    RunController,
    AuditController,
    SessionController,
    WatchController,
    version,
    console_router,
]


def _lifespan(components: Components) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncGenerator[None, None]:
        try:
            await run_migrations(components.engine)
        except SchemaNewerThanCode as exc:  # said plainly, before uvicorn's traceback of the failed start
            log.error("cannot start: %s", exc)
            raise
        components.context.secrets.warn_if_plain()
        started: list[BackgroundService] = []
        try:
            for service in components.background:
                await service.start()
                started.append(service)
            # the many long-lived objects of start-up (routes, ORM metadata) need no more GC scans;
            # that keeps full collections short while big node lists are built
            gc.freeze()
            yield
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("stopping %r failed", service)
            await components.engine.dispose()

    return lifespan


def _dependencies(services: Services) -> dict[str, Provide]:
    """One singleton per service, injected into handlers by the name of its `Services` field."""

    def provider(service: object) -> Callable[[], object]:
        def provide() -> object:
            return service

        return provide

    return {
        field.name: Provide(provider(getattr(services, field.name)), use_cache=True, sync_to_thread=False)
        for field in dataclasses.fields(services)
    }


def create_app(
    settings: Settings | None = None,
    *,
    components: Components | None = None,
    extra_handlers: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    components = components or build_components(settings or Settings.from_env())
    app = Litestar(
        route_handlers=[*ROUTE_HANDLERS, *extra_handlers],
        dependencies=_dependencies(components.services),
        state=State({AUTH_KEY: components.auth}),  # what the guards read (server.auth)
        lifespan=[_lifespan(components)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=components.settings.max_body_size,
        openapi_config=openapi_config(title="agent-nodes apiserver", version="1"),
        logging_config=None,
        debug=False,
    )
    # before routing: a raw path with an encoded '/' or NUL reaches no handler (server.edge);
    # unchanged heartbeats answered before routing (server.controllers.heartbeat_lane);
    # every answer, that refusal included, states the version; outermost, the request id and
    # count, so refused requests are counted and traceable too
    lane = heartbeat_lane(
        app.asgi_handler, components.services.nodes, components.auth, components.settings.max_body_size
    )
    app.asgi_handler = observe_requests(stamp_version(guard_edge(lane)), components.metrics)
    document_errors(app)
    state_container_rules(app)
    return app
