"""What a node says about itself in heartbeats: automatic labels and host facts."""

from __future__ import annotations

import logging
import os
import platform
import socket
from importlib import metadata

from nodeapi import models as m
from nodemanager.runtime.base import Runtime, RuntimeError_

log = logging.getLogger(__name__)

# platform.machine() spellings to Go's GOARCH names, which container images use.
_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def goarch(machine: str | None = None) -> str:
    raw = (machine if machine is not None else platform.machine()).lower()
    return _GOARCH.get(raw, raw or "unknown")


def goos() -> str:
    return platform.system().lower() or "unknown"


def node_labels() -> dict[str, str]:
    """Labels every node reports; NODE_LABELS adds to (and may override) them."""
    return {"os": goos(), "arch": goarch()}


def agent_version() -> str:
    try:
        return metadata.version("agent-nodes")
    except metadata.PackageNotFoundError:
        return "unknown"


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


async def node_info(runtime: Runtime) -> m.NodeInfo:
    try:
        runtime_version: str | None = await runtime.version()
    except RuntimeError_ as exc:
        log.warning("cannot read the %s runtime's version: %s", runtime.name, exc)
        runtime_version = None
    return m.NodeInfo(
        hostname=socket.gethostname(),
        os=goos(),
        arch=goarch(),
        kernel=platform.release(),
        agent_version=agent_version(),
        python_version=platform.python_version(),
        runtime=runtime.name,
        runtime_version=runtime_version,
        cpus=os.cpu_count(),
        memory_bytes=memory_bytes(),
        memory_enforcement=runtime.memory_enforcement,
    )
