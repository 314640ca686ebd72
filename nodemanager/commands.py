"""Commands the server sends a node over the work channel (today: `test_proxy`)."""

from __future__ import annotations

import logging

import msgspec

from nodeapi import models as m
from nodemanager.config import NodeConfig
from nodemanager.runtime.base import Runtime

log = logging.getLogger(__name__)


class CommandUnsupported(Exception):
    """The node knows the command but cannot carry it out."""


async def run_command(command: m.NodeCommand, config: NodeConfig, runtime: Runtime) -> m.CommandResult:
    """The command's result; never raises (a failure is a result the server shows the admin)."""
    try:
        if command.type == "test_proxy":
            request = msgspec.convert(command.payload, m.ProxyTestRequest)
            result = await _test_proxy(request, config, runtime)
            return m.CommandResult(ok=True, result=msgspec.to_builtins(result))
        return m.CommandResult(ok=False, error=f"unknown command type {command.type!r}")
    except CommandUnsupported as exc:
        return m.CommandResult(ok=False, error=str(exc))
    except msgspec.ValidationError as exc:
        return m.CommandResult(ok=False, error=f"invalid {command.type} payload: {exc}")
    except Exception as exc:
        log.exception("command %s (%s) failed", command.id, command.type)
        return m.CommandResult(ok=False, error=f"{command.type} failed on the node: {exc}")


async def _test_proxy(request: m.ProxyTestRequest, config: NodeConfig, runtime: Runtime) -> m.ProxyTestResult:
    raise CommandUnsupported("this nodemanager cannot run proxy tests yet")
