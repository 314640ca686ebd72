"""How a node executes runs: one interface, DockerRuntime and ProcessRuntime.

A runtime knows nothing about the apiserver. The agent loop hands it a `RunSpec`,
and reads back `Handle`s, output and exit codes. Every implementation passes the
same test suite (tests/nodemanager/test_runtime.py).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

DEFAULT_PIDS_LIMIT = 1024  # processes and threads a run may have when the server sends no limit


class RuntimeError_(Exception):
    """Base of runtime errors (named with a trailing underscore to not shadow the builtin)."""


class ImageNotFound(RuntimeError_):
    """The image is not present and the pull policy forbids (or failed) pulling it."""


class RuntimeUnavailable(RuntimeError_):
    """The engine (Docker daemon) cannot be reached."""


class StartFailed(RuntimeError_):
    """The run could not be started: through its own fault (bad command, bad image config), or,
    with `cause="node"`, through the node's (a network it names is missing, the engine errs)."""

    def __init__(self, message: str, *, cause: str = "run") -> None:
        super().__init__(message)
        self.cause = cause


class RunNotFound(RuntimeError_):
    """The runtime knows no run with that id (never started here, or removed)."""


@dataclass(frozen=True)
class Limits:
    """What a run may use and reach; each runtime enforces what it can (docs/runtime.md)."""

    cpus: float | None = None
    memory_mb: int | None = None
    pids_limit: int = DEFAULT_PIDS_LIMIT
    read_only_rootfs: bool = False  # the workspace and /tmp stay writable
    no_network: bool = False  # loopback only, whatever DOCKER_NETWORK says


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    image: str
    command: list[str]
    env: dict[str, str]  # final environment: node env config + proxy vars + the run's own env
    workspace: Path  # host directory, mounted at /workspace in a container (the cwd for processes)
    labels: dict[str, str] = field(default_factory=dict)
    attempt: int | None = None  # the run's placement, kept with it so a restarted node knows it
    limits: Limits = field(default_factory=Limits)
    # kept with the run, like `attempt`, so a restarted node still enforces it (the supervisor does)
    deadline_seconds: int | None = None


@dataclass(frozen=True)
class Handle:
    run_id: str
    ref: str  # container id, or pid for processes
    running: bool
    attempt: int | None = None  # the placement it was started for (RunSpec.attempt)
    deadline_seconds: int | None = None  # RunSpec.deadline_seconds


@dataclass(frozen=True)
class RunState:
    running: bool
    started_at: datetime | None = None  # when the runtime started it (the node's clock, UTC)
    exit_code: int | None = None  # once it exited
    # the kernel killed a process of the run for its memory limit, as the engine or the cgroup
    # recorded it; never guessed from an exit code of 137
    oom_killed: bool = False


@dataclass(frozen=True)
class Allocatable:
    """What the runtime can give runs in all; None: unknown."""

    cpus: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class LogLine:
    stream: str  # "stdout" | "stderr"
    text: str
    ts: str | None = None  # RFC 3339 timestamp from the runtime, used to resume after a restart


class Runtime(abc.ABC):
    name: str
    # how a run is held to Limits.memory_mb (NodeInfo.memory_enforcement): docker, cgroup, rlimit, none
    memory_enforcement: str = "none"

    @abc.abstractmethod
    async def start(self, spec: RunSpec) -> Handle:
        """Create and start the run. Starting a run id that already exists raises StartFailed."""

    @abc.abstractmethod
    async def list(self) -> list[Handle]:
        """Every run of this node known to the runtime, running or exited and not yet removed."""

    @abc.abstractmethod
    async def wait(self, run_id: str) -> int:
        """Wait for the run to exit; its exit code."""

    @abc.abstractmethod
    def logs(self, run_id: str, since: str | None = None) -> AsyncIterator[LogLine]:
        """Output lines as they happen, until the run exits; `since` skips lines at or before that ts."""

    @abc.abstractmethod
    async def stop(self, run_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""

    @abc.abstractmethod
    async def remove(self, run_id: str) -> None:
        """Forget an exited run (remove the container)."""

    @abc.abstractmethod
    async def version(self) -> str: ...

    async def state(self, run_id: str) -> RunState:
        """Where the run stands; RunNotFound if the runtime does not know it."""
        for handle in await self.list():
            if handle.run_id == run_id:
                return RunState(running=handle.running)
        raise RunNotFound(f"no run {run_id} on this node")

    async def allocatable(self) -> Allocatable:
        """The CPUs and memory runs can use on this node, as the runtime sees them."""
        return Allocatable()

    async def close(self) -> None:
        return None
