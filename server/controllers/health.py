"""Liveness and readiness probes (open, no token)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from sqlalchemy import text

log = logging.getLogger("server.health")
PROBE_TIMEOUT = 3.0


class HealthController(Controller):
    include_in_schema = True
    tags = ["health"]

    @get("/healthz", media_type=MediaType.JSON)
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON)
    async def readyz(self, state: State) -> Response[dict[str, Any]]:
        checks: dict[str, str] = {}
        checks["database"] = await _probe(_database_ok(state), "database")
        queue = state.get("queue")
        if queue is not None and hasattr(queue, "ping"):
            checks["queue"] = await _probe(_queue_ok(queue), "queue")
        failed = {name: reason for name, reason in checks.items() if reason != "ok"}
        if failed:
            detail = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
            body = {"status_code": 503, "detail": f"not ready: {detail}", "extra": checks}
            return Response(body, status_code=503, media_type=MediaType.JSON)
        return Response({"status": "ready", "checks": checks}, status_code=200, media_type=MediaType.JSON)


async def _database_ok(state: State) -> bool:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


async def _queue_ok(queue: Any) -> bool:
    return bool(await queue.ping())


async def _probe(check: Any, name: str) -> str:
    try:
        ok = await asyncio.wait_for(check, PROBE_TIMEOUT)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except Exception as exc:
        log.warning("%s probe failed: %s", name, exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok" if ok else "not answering"
