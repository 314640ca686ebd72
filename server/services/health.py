"""Readiness: whether the database and the run queue answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.engine import ping
from server.queue.base import RunQueue

log = logging.getLogger("server.health")
PROBE_TIMEOUT = 3.0


class HealthService:
    def __init__(self, engine: AsyncEngine, queue: RunQueue) -> None:
        self._engine = engine
        self._queue = queue

    async def readiness(self) -> dict[str, str]:
        """Per backend: "ok" or why not."""
        return {
            "database": await _probe(self._database_ok(), "database"),
            "queue": await _probe(self._queue.ping(), "queue"),
        }

    async def _database_ok(self) -> bool:
        await ping(self._engine)
        return True


async def _probe(check: Awaitable[bool], name: str) -> str:
    try:
        ok = await asyncio.wait_for(check, PROBE_TIMEOUT)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except Exception as exc:
        log.warning("%s probe failed: %s", name, exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok" if ok else "not answering"
