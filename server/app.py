"""The Litestar application factory.

Other parts of the server plug in at two places below, one line each:
- `ROUTE_HANDLERS`: controllers / routers.
- `EXTENSIONS`: `install(state)` functions run once per app. They may set `state.queue`
  (an object with `async ping()`, checked by /readyz), append background services
  (objects with `async start()` / `async stop()`) to `state.services`, and register
  node hooks on `state.node_hooks`. Services start after migrations, in list order,
  and stop in reverse order.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler

from server.config import Settings
from server.controllers.audit import AuditController
from server.controllers.console import console_router
from server.controllers.health import HealthController
from server.controllers.node_work import NodeWorkController
from server.controllers.nodes import NodeController
from server.controllers.runs import RunController
from server.db.engine import create_engine, create_sessionmaker
from server.errors import EXCEPTION_HANDLERS
from server.migrations import run_migrations
from server.runs_extension import install as install_runs
from server.services.nodes import NodeHooks

log = logging.getLogger("server.app")


class BackgroundService(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    HealthController,
    NodeController,
    NodeWorkController,
    RunController,
    AuditController,
    console_router,
]
EXTENSIONS: list[Callable[[State], None]] = [install_runs]


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncGenerator[None, None]:
    state = app.state
    await run_migrations(state.engine)
    started: list[BackgroundService] = []
    try:
        for service in state.services:
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
        await state.engine.dispose()


def create_app(
    settings: Settings | None = None, extra_handlers: Sequence[ControllerRouterHandler] = ()
) -> Litestar:
    settings = settings or Settings.from_env()
    engine = create_engine(settings)
    state = State(
        {
            "settings": settings,
            "engine": engine,
            "sessionmaker": create_sessionmaker(engine),
            "services": [],
            "node_hooks": NodeHooks(),
            "queue": None,
        }
    )
    for install in EXTENSIONS:
        install(state)
    return Litestar(
        route_handlers=[*ROUTE_HANDLERS, *extra_handlers],
        state=state,
        lifespan=[_lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_size,
        openapi_config=OpenAPIConfig(title="agent-nodes apiserver", version="1", path="/schema"),
        logging_config=None,
        debug=False,
    )
