"""Execution runtimes of a node; `make_runtime` picks one from RUNTIME."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from nodemanager.runtime.base import (
    Allocatable,
    Handle,
    ImageNotFound,
    Limits,
    LogLine,
    RunNotFound,
    RunSpec,
    RunState,
    Runtime,
    RuntimeError_,
    RuntimeUnavailable,
    StartFailed,
)

log = logging.getLogger(__name__)

RuntimeKind = Literal["auto", "docker", "process"]
PROCESS_STATE_DIR = ".process-runtime"  # inside the workspace root; never a valid run id

__all__ = [
    "PROCESS_STATE_DIR",
    "Allocatable",
    "Handle",
    "ImageNotFound",
    "Limits",
    "LogLine",
    "RunNotFound",
    "RunSpec",
    "RunState",
    "Runtime",
    "RuntimeError_",
    "RuntimeKind",
    "RuntimeUnavailable",
    "StartFailed",
    "make_runtime",
]


async def make_runtime(
    kind: str,
    node_id: str,
    workspace_root: Path | str,
    pull_policy: str = "if-not-present",
    *,
    docker_url: str | None = None,
    network_mode: str = "host",
    ping_timeout: float = 2.0,
    extra_capabilities: Iterable[str] = (),
) -> Runtime:
    """The runtime for RUNTIME=`kind`.

    `docker` fails with RuntimeUnavailable when the engine does not answer; `auto` then
    falls back to `process`, with a warning. `docker_url` overrides DOCKER_HOST.
    `extra_capabilities` (ALLOW_CAPABILITIES) are granted to containers beyond the default set.
    """
    if kind not in ("auto", "docker", "process"):
        raise ValueError(f"RUNTIME must be auto, docker or process, not {kind!r}")
    if kind in ("auto", "docker"):
        from nodemanager.runtime.docker import DockerRuntime, check_pull_policy

        policy = check_pull_policy(pull_policy)
        try:
            return await DockerRuntime.connect(
                node_id,
                base_url=docker_url,
                ping_timeout=ping_timeout,
                pull_policy=policy,
                network_mode=network_mode,
                extra_capabilities=extra_capabilities,
            )
        except RuntimeUnavailable as exc:
            if kind == "docker":
                raise
            log.warning(
                "RUNTIME=auto: no Docker engine answered (%s); running runs as local processes, "
                "without isolation (see docs/runtime.md)",
                exc,
            )
    from nodemanager.runtime.cgroups import RunCgroups
    from nodemanager.runtime.process import ProcessRuntime

    cgroups = await asyncio.to_thread(RunCgroups.set_up)
    return ProcessRuntime(node_id, Path(workspace_root) / PROCESS_STATE_DIR, cgroups=cgroups)
