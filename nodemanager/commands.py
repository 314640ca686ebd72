"""Commands the server sends a node over the work channel (today: `test_proxy`)."""

from __future__ import annotations

import logging

import msgspec

from nodeapi import models as m
from nodemanager.config import NodeConfig
from nodemanager.proxycheck import check_proxy_config, mask_proxy_url, targets_of
from nodemanager.runtime.base import Runtime

log = logging.getLogger(__name__)

TEST_PROXY = "test_proxy"


async def run_command(command: m.NodeCommand, config: NodeConfig, runtime: Runtime) -> m.CommandResult:
    """The command's result; never raises (a failure is a result the server shows the admin)."""
    try:
        if command.type == TEST_PROXY:
            request = msgspec.convert(command.payload, m.ProxyTestRequest)
            result = await run_proxy_test(request, config, runtime)
            return m.CommandResult(ok=True, result=msgspec.to_builtins(result))
        return m.CommandResult(ok=False, error=f"unknown command type {command.type!r}")
    except msgspec.ValidationError as exc:
        return m.CommandResult(ok=False, error=f"invalid {command.type} payload: {exc}")
    except Exception as exc:
        # an unexpected error's message might quote the payload, which holds proxy passwords:
        # only its type is logged and answered; the traceback only at DEBUG, for developers
        log.error("command %s (%s) failed: %s", command.id, command.type, type(exc).__name__)
        log.debug("command %s failed", command.id, exc_info=True)
        return m.CommandResult(ok=False, error=f"{command.type} failed on the node ({type(exc).__name__})")


async def run_proxy_test(
    request: m.ProxyTestRequest, config: NodeConfig, runtime: Runtime
) -> m.ProxyTestResult:
    proxy = request.proxy or m.ProxyConfig()
    targets = targets_of(request.urls, request.url, request.https_url)
    if request.in_container:
        # imported here: the docker SDK is needed only by this variant
        from nodemanager.proxycheck_container import check_proxy_in_container
        from nodemanager.runtime.docker import DockerRuntime

        if not isinstance(runtime, DockerRuntime):
            return m.ProxyTestResult(
                ok=False,
                reason="error",
                message="the in-container proxy test needs the Docker runtime; this node runs processes",
                proxy=mask_proxy_url(proxy.http_proxy or proxy.https_proxy),
                in_container=True,
                node_id=config.node_id,
            )
        return await check_proxy_in_container(
            runtime,
            request.image or config.proxy_probe_image,
            proxy,
            targets,
            timeout=request.timeout,
            node_id=config.node_id,
            network_mode=config.docker_network,
            labels=dict(config.container_labels),
        )
    return await check_proxy_config(
        proxy,
        targets,
        timeout=request.timeout,
        ca_file=str(config.proxy_test_ca_file) if config.proxy_test_ca_file else None,
        node_id=config.node_id,
    )
