"""Liveness and readiness probes (open, no token)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Response, get

from server.openapi import errors
from server.services.health import HealthService


class HealthController(Controller):
    include_in_schema = True
    tags = ["health"]

    @get("/healthz", media_type=MediaType.JSON)
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, opt=errors(503))
    async def readyz(self, health: HealthService) -> Response[dict[str, Any]]:
        checks = await health.readiness()
        failed = {name: reason for name, reason in checks.items() if reason != "ok"}
        if failed:
            detail = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
            body = {"status_code": 503, "detail": f"not ready: {detail}", "extra": checks}
            return Response(body, status_code=503, media_type=MediaType.JSON)
        return Response({"status": "ready", "checks": checks}, status_code=200, media_type=MediaType.JSON)
