"""/api/v1/nodes: heartbeat (node credentials), registry and env config (admin; viewer reads)."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import Parameter

from nodeapi import models as m
from server.auth import actor_of, admin_guard, join_guard, principal_of, read_guard
from server.controllers.params import NodeId, Offset, existing_node_id, parse_if_match
from server.errors import Forbidden
from server.openapi import errors
from server.services.env_config import EnvConfigService
from server.services.nodes import DEFAULT_LIMIT, MAX_LIMIT, NodeService

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description=f"page size (max {MAX_LIMIT})")]
IfMatch = Annotated[
    str | None,
    Parameter(
        header="If-Match",
        required=False,
        pattern=r'^\s*(\*|(W/)?"?[0-9]{1,16}"?)?\s*$',
        description='the resource_version the change is based on: 7, "7" or W/"7" (409 when stale)',
    ),
]


class NodeController(Controller):
    path = "/api/v1/nodes"
    tags = ["nodes"]

    @post("/heartbeat", guards=[join_guard], status_code=200, opt=errors(409, 429))
    async def heartbeat(
        self,
        nodes: NodeService,
        request: Request[None, None, State],
        data: m.HeartbeatRequest,
    ) -> m.HeartbeatResponse:
        """Report liveness, labels and capacity. With the join token it registers a new node id and
        answers its `node_token` (once); from then on the node sends that token."""
        # one injected service: Litestar resolves two or more in a task group, a cost per request
        return await nodes.heartbeat(data, principal_of(request))

    @get("/", guards=[read_guard])
    async def list_nodes(
        self,
        nodes: NodeService,
        status: Literal["online", "offline", "draining"] | None = None,
        selector: Annotated[str | None, Parameter(max_length=4096, description="k=v,k2=v2")] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
        q: Annotated[
            str | None, Parameter(max_length=253, description="only nodes whose id contains this text")
        ] = None,
    ) -> m.NodeList:
        """Nodes in id order, one page (`limit`, `offset`) of those that match every filter given."""
        return await nodes.list(status, selector, limit, offset, search=q)

    @get("/{node_id:str}", guards=[read_guard])
    async def get_node(self, nodes: NodeService, node_id: NodeId) -> m.Node:
        return await nodes.get(existing_node_id(node_id))

    @patch("/{node_id:str}", guards=[admin_guard], opt=errors(409))
    async def patch_node(
        self,
        nodes: NodeService,
        request: Request[None, None, State],
        node_id: NodeId,
        data: m.NodePatch,
        if_match: IfMatch,
    ) -> m.Node:
        """JSON merge patch: labels (null removes a key, sticky across heartbeats), status, max_concurrent."""
        return await nodes.patch(existing_node_id(node_id), data, actor_of(request), parse_if_match(if_match))

    @delete("/{node_id:str}/credential", guards=[admin_guard], status_code=204)
    async def reset_credential(
        self, nodes: NodeService, request: Request[None, None, State], node_id: NodeId
    ) -> None:
        """Void the node's credential; its next heartbeat with the join token registers it again."""
        await nodes.reset_credential(existing_node_id(node_id), actor_of(request))

    @delete("/{node_id:str}", guards=[admin_guard], status_code=204, opt=errors(409))
    async def delete_node(
        self, nodes: NodeService, request: Request[None, None, State], node_id: NodeId
    ) -> None:
        """409 while runs are scheduled or running on the node."""
        await nodes.delete(existing_node_id(node_id), actor_of(request))

    @get("/{node_id:str}/runs", guards=[read_guard])
    async def node_runs(
        self,
        nodes: NodeService,
        node_id: NodeId,
        status: Literal["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lost"]
        | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> m.RunList:
        return await nodes.runs(existing_node_id(node_id), status, limit, offset)

    @get("/{node_id:str}/env-config", guards=[read_guard])
    async def get_env_config(
        self,
        env_config: EnvConfigService,
        request: Request[None, None, State],
        node_id: NodeId,
        reveal: Annotated[
            bool, Parameter(description="show proxy passwords and secret_env values (admin only, audited)")
        ] = False,
    ) -> m.EnvConfig:
        """Proxy passwords and `secret_env` values read as `***` unless an admin asks `reveal=true`."""
        if reveal and principal_of(request).role != "admin":
            raise Forbidden("only an admin may reveal secrets")
        return await env_config.get(existing_node_id(node_id), reveal=reveal, actor=actor_of(request))

    @put("/{node_id:str}/env-config", guards=[admin_guard], opt=errors(409))
    async def put_env_config(
        self,
        env_config: EnvConfigService,
        request: Request[None, None, State],
        node_id: NodeId,
        data: m.EnvConfig,
        if_match: IfMatch,
    ) -> m.EnvConfig:
        """Replace the proxy settings and env vars the node injects into every new container."""
        return await env_config.replace(
            existing_node_id(node_id), data, actor_of(request), parse_if_match(if_match)
        )
