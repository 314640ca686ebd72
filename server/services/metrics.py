"""What GET /metrics answers: the fleet gauges read now, then every metric in the text format."""

from __future__ import annotations

from prometheus_client import generate_latest

from server.metrics import Metrics
from server.repositories import fleet
from server.services.context import ServiceContext
from server.services.mappers import utc


class MetricsService:
    def __init__(self, ctx: ServiceContext, metrics: Metrics) -> None:
        self._ctx = ctx
        self._metrics = metrics

    def heartbeat_answered(self) -> None:
        self._metrics.heartbeats.inc()

    async def exposition(self) -> bytes:
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker() as session:
            states = await fleet.node_states(session, self._ctx.status_rule, now)
            runs = await fleet.run_statuses(session)
            oldest = utc(await fleet.oldest_queued_at(session))
        held_back = states.get("unhealthy", 0) + states.get("quarantined", 0)
        nodes = {
            "online": states.get("online", 0) + held_back,
            "draining": states.get("draining", 0),
            "offline": states.get("offline", 0),
        }
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        self._metrics.set_fleet(nodes, held_back, runs, age)
        return generate_latest(self._metrics.registry)
