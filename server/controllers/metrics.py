"""GET /metrics: Prometheus text format; a viewer or admin token when tokens are set."""

from __future__ import annotations

from litestar import Controller, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from server.auth import read_guard
from server.services.metrics import MetricsService


class MetricsController(Controller):
    tags = ["health"]

    @get("/metrics", guards=[read_guard], media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, metrics: MetricsService) -> Response[bytes]:
        """Nodes and runs by status, the queue, heartbeats, placement passes and HTTP requests."""
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
