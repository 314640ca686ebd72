"""Commands the server sends a node over the work channel (today: `test_proxy`)."""

from __future__ import annotations

import logging

import msgspec

from nodeapi import models as m
from nodemanager.config import NodeConfig
from nodemanager.proxycheck import check_proxy_config
from nodemanager.proxyprobe import probe_in_container
from nodemanager.runtime.base import Runtime
from nodemanager.workspace import Workspaces

log = logging.getLogger(__name__)

TEST_PROXY = "test_proxy"


async def run_command(
    command: m.NodeCommand, config: NodeConfig, runtime: Runtime, workspaces: Workspaces
) -> m.CommandResult:
    """The command's result; never raises (a failure is a result the server shows the admin)."""
    try:
        if command.type == TEST_PROXY:
            request = msgspec.convert(command.payload, m.ProxyTestRequest)
            result = await _test_proxy(command.id, request, config, runtime, workspaces)
            return m.CommandResult(ok=True, result=msgspec.to_builtins(result))
        return m.CommandResult(ok=False, error=f"unknown command type {command.type!r}")
    except msgspec.ValidationError as exc:
        return m.CommandResult(ok=False, error=f"invalid {command.type} payload: {exc}")
    except Exception as exc:
        log.exception("command %s (%s) failed", command.id, command.type)
        return m.CommandResult(ok=False, error=f"{command.type} failed on the node: {exc}")


async def _test_proxy(
    command_id: str, request: m.ProxyTestRequest, config: NodeConfig, runtime: Runtime, workspaces: Workspaces
) -> m.ProxyTestResult:
    if request.in_container:
        return await probe_in_container(
            request,
            runtime,
            workspaces,
            probe_id=f"proxytest-{command_id}",
            default_image=config.proxy_probe_image,
            labels=dict(config.container_labels),
            node_id=config.node_id,
        )
    return await check_proxy_config(
        request.proxy or m.ProxyConfig(),
        request.url,
        request.https_url,
        timeout=request.timeout,
        node_id=config.node_id,
    )
