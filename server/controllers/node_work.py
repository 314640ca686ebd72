"""What nodes poll and answer (work channel, command results), and the proxy test admins start."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter

from nodeapi import models as m
from server.auth import admin_guard, node_guard
from server.controllers.params import CommandId, NodeId, existing_command_id, existing_node_id
from server.openapi import errors
from server.services.commands import DEFAULT_WAIT, MAX_WAIT, CommandService
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
