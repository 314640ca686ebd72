"""What nodes poll and answer (work channel, command results), and the proxy test admins start."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from nodeapi import models as m
from server.auth import admin_guard, caller_node, node_guard
from server.controllers.params import CommandId, NodeId, existing_command_id, existing_node_id
from server.openapi import errors
from server.services.commands import DEFAULT_WAIT, MAX_WAIT, CommandService
from server.services.node_events import NodeEventService
from server.services.work import MAX_WORK_WAIT, WorkService


class NodeWorkController(Controller):
    path = "/api/v1/nodes"
    tags = ["node work channel"]

    @get("/{node_id:str}/work", guards=[node_guard])
    async def poll_work(
        self,
        work: WorkService,
        node_id: NodeId,
        wait: Annotated[
            float, Parameter(ge=0, le=MAX_WORK_WAIT, description="long-poll: seconds to wait for work")
        ] = 20.0,
    ) -> m.WorkResponse:
        """Runs to start (until claimed), runs to cancel, commands; waits while there is nothing new."""
        return await work.poll(existing_node_id(node_id), wait)

    @post("/{node_id:str}/events", guards=[node_guard], status_code=200)
    async def node_events(
        self,
        node_events: NodeEventService,
        request: Request[None, None, State],
        node_id: NodeId,
        data: m.NodeEventsBatch,
    ) -> m.NodeEventsResults:
        """Events of many runs placed on the node, in one transaction; each run is answered on its
        own, with the ack or the status its own POST /runs/{id}/node-events would have got."""
        node = existing_node_id(node_id)
        return await node_events.ingest_results(caller_node(request) or node, data)

    @post("/{node_id:str}/env-config/test-proxy", guards=[admin_guard], status_code=200, opt=errors(409, 504))
    async def test_proxy(
        self,
        commands: CommandService,
        node_id: NodeId,
        data: m.ProxyTestRequest | None = None,
        wait: Annotated[
            float, Parameter(gt=0, le=MAX_WAIT, description="seconds to wait for the node's answer")
        ] = DEFAULT_WAIT,
    ) -> m.ProxyTestResult:
        """Run a proxy check on the node (its saved proxy, or the one in the body). 409 when the
        node is offline, 504 when it does not answer in time; otherwise 200 with `ok` and `reason`."""
        return await commands.test_proxy(existing_node_id(node_id), data, wait)

    @post("/{node_id:str}/commands/{command_id:str}/result", guards=[node_guard], status_code=204)
    async def command_result(
        self, commands: CommandService, node_id: NodeId, command_id: CommandId, data: m.CommandResult
    ) -> None:
        """A node's answer to a command; posting it again changes nothing."""
        await commands.store_result(existing_node_id(node_id), existing_command_id(command_id), data)
