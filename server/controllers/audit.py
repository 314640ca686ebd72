"""/api/v1/audit: who changed what (admin token)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from nodeapi import models as m
from server.auth import read_guard
from server.controllers.params import Offset
from server.services.audit import AuditService


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    guards = [read_guard]

    @get("/")
    async def list_audit(
        self,
        audit: AuditService,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Offset = 0,
        target_id: Annotated[str | None, Parameter(max_length=1024)] = None,
        action: Annotated[str | None, Parameter(max_length=64)] = None,
    ) -> m.AuditList:
        """Newest first."""
        return await audit.list(limit, offset, target_id, action)
