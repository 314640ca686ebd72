"""/api/v1/runs: the admin API for runs, and the node-events endpoint nodes report to."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from nodeapi import models as m
from server.auth import actor_of, admin_guard, caller_node, node_guard, read_guard
from server.controllers.params import EventSeq, NodeIdFilter, Offset, RunId, existing_run_id
from server.openapi import errors
from server.services.node_events import NodeEventService
from server.services.runs import DEFAULT_EVENTS_LIMIT, DEFAULT_LIMIT, MAX_EVENTS_WAIT, MAX_LIMIT, RunService

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description=f"page size (max {MAX_LIMIT})")]


class RunController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]

    @post(
        "/",
        guards=[admin_guard],
        status_code=201,
        opt=errors(409),
        responses={
            200: ResponseSpec(m.Run, description="an Idempotency-Key repeat: the run the first request made")
        },
    )
    async def create_run(
        self,
        runs: RunService,
        request: Request[None, None, State],
        data: m.RunCreate,
        idempotency_key: Annotated[
            str | None,
            Parameter(
                header="Idempotency-Key",
                required=False,
                min_length=1,
                max_length=255,
                pattern=r"^[\x21-\x7e]+$",
                description="a repeat with the same key and body answers the run the first request "
                "made (200, Idempotent-Replayed: true); the same key with another body answers 409",
            ),
        ] = None,
    ) -> Response[m.Run]:
        """Queue a run; the scheduler places it on a matching node."""
        run, created = await runs.create(data, actor_of(request), idempotency_key)
        if created:
            return Response(run, status_code=201)
        return Response(run, status_code=200, headers={"Idempotent-Replayed": "true"})

    @get("/", guards=[read_guard])
    async def list_runs(
        self,
        runs: RunService,
        status: Annotated[
            str | None, Parameter(max_length=200, description="status, or several: a,b")
        ] = None,
        node_id: NodeIdFilter = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> m.RunList:
        """Newest first."""
        return await runs.list(status, node_id, limit, offset)

    @get("/{run_id:str}", guards=[read_guard])
    async def get_run(self, runs: RunService, run_id: RunId) -> m.Run:
        return await runs.get(existing_run_id(run_id))

    @post("/{run_id:str}/cancel", guards=[admin_guard], status_code=200, opt=errors(409))
    async def cancel_run(self, runs: RunService, request: Request[None, None, State], run_id: RunId) -> m.Run:
        """Queued: cancelled at once. Scheduled or running: the node is told to stop it. Finished: 409."""
        return await runs.cancel(existing_run_id(run_id), actor_of(request))

    @get("/{run_id:str}/events", guards=[read_guard])
    async def run_events(
        self,
        runs: RunService,
        run_id: RunId,
        after: EventSeq = 0,
        event_type: Annotated[str | None, Parameter(query="type", max_length=32)] = None,
        wait: Annotated[
            float,
            Parameter(ge=0, le=MAX_EVENTS_WAIT, description="long-poll: seconds to wait for new events"),
        ] = 0.0,
        limit: Limit = DEFAULT_EVENTS_LIMIT,
    ) -> m.RunEventList:
        return await runs.events(existing_run_id(run_id), after, event_type, wait, limit)

    @post("/{run_id:str}/node-events", guards=[node_guard], status_code=200, opt=errors(409))
    async def node_events(
        self,
        node_events: NodeEventService,
        request: Request[None, None, State],
        run_id: RunId,
        data: m.NodeEventBatch,
    ) -> m.NodeEventAck:
        """Events a node reports for a run placed on it (403 for any other run); retried batches
        are stored once."""
        return await node_events.ingest(existing_run_id(run_id), data, caller_node(request))
