"""One asyncio task per run: start (or adopt) it, stream its output, wait for it, report the end.

The supervisor only finishes once the server has acknowledged the run's final event; then the
container is removed and the workspace marked finished (kept for the retention period).
Cancelling the supervisor's task (daemon shutdown) leaves the container running on purpose:
the next daemon adopts it.

A run's deadline counts from its start; when it passes, the run is stopped like a cancelled one
(SIGTERM, SIGKILL after STOP_GRACE) and ends `exited` with `deadline_exceeded`. Whichever of a
cancel and the deadline comes first decides how the run is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from nodeapi import models as m
from nodemanager.loops import retrying
from nodemanager.reporter import EventsRejected, RunReporter
from nodemanager.runtime.base import (
    ImageNotFound,
    Limits,
    RunSpec,
    Runtime,
    RuntimeError_,
    RuntimeUnavailable,
    StartFailed,
)
from nodemanager.workspace import Workspaces

log = logging.getLogger(__name__)

LOG_DRAIN_TIMEOUT = 5.0  # seconds the output stream may lag behind the exit
WAIT_ATTEMPTS = 6  # tries of waiting for the exit, and of reading the output
WAIT_RETRY_CEILING = 10.0
OUTPUT_RETRY_CEILING = 2.0  # a reopened stream must catch up within LOG_DRAIN_TIMEOUT after the exit
PROXY_VARIABLES = (("http_proxy", "HTTP_PROXY"), ("https_proxy", "HTTPS_PROXY"), ("no_proxy", "NO_PROXY"))


def container_env(env_config: m.EnvConfig, run: m.Run) -> dict[str, str]:
    """The environment of a run: the node's env config, its proxy settings, its secret env, then
    the run's own env and secret env.

    Later layers win: the proxy fields are the explicit setting, so they beat a same-named
    variable in the node's env; the run's env is the most specific, so it beats the node's (a run
    may set its own NO_PROXY). Proxy values are injected in both cases, since some tools (busybox
    wget, curl) read only the lower-case names. Secret values reach only the container.
    AGENTNODES_RUN_ID and AGENTNODES_ATTEMPT tell the agent which run and placement it is.
    """
    env = dict(env_config.env)
    for attribute, upper in PROXY_VARIABLES:
        value = getattr(env_config.proxy, attribute)
        if value:
            env[upper] = value
            env[attribute] = value
    env.update(env_config.secret_env)
    env.update(run.env)
    env.update(run.secret_env)
    # who the agent is, for its own logs and for idempotent side effects (set last: authoritative)
    env["AGENTNODES_RUN_ID"] = run.id
    env["AGENTNODES_ATTEMPT"] = str(run.attempts)
    return env


def run_limits(run: m.Run) -> Limits:
    """What the runtime holds the run to; the server has applied its defaults, a missing pids
    limit falls back to the runtime's."""
    sandbox = run.sandbox
    pids = {} if sandbox.pids_limit is None else {"pids_limit": sandbox.pids_limit}
    return Limits(
        cpus=run.resources.cpus,
        memory_mb=run.resources.memory_mb,
        read_only_rootfs=sandbox.read_only_rootfs,
        no_network=sandbox.network == "none",
        **pids,
    )


@dataclass(frozen=True)
class Adoption:
    """What the daemon learnt about a run that was already in the runtime when it started."""

    status: str  # the run's status on the server
    container_ref: str
    resume_logs_after: str | None  # ts of the last stored log line
    # when it started as the server recorded it; None: the runtime's record. The deadline counts from it
    started_at: datetime | None = None


StopReason = Literal["cancel", "deadline"]


class RunSupervisor:
    def __init__(
        self,
        run_id: str,
        runtime: Runtime,
        reporter: RunReporter,
        workspaces: Workspaces,
        stop_grace: float,
        *,
        attempt: int | None = None,
        deadline_seconds: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.attempt = attempt  # the placement this node executes (fencing); None if unknown
        self.reporter = reporter
        self.deadline_seconds = deadline_seconds
        self._runtime = runtime
        self._workspaces = workspaces
        self._stop_grace = stop_grace
        self._stop_reason: StopReason | None = None
        self._started = False
        self._stop_task: asyncio.Task[None] | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._last_log_ts: str | None = None

    # control ---------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Stop the run (SIGTERM, SIGKILL after the grace period); it ends as `cancelled`."""
        if self._stop_reason is not None:
            return
        log.info("run %s: cancel requested", self.run_id)
        self._request_stop("cancel")

    def _request_stop(self, reason: StopReason) -> None:
        self._stop_reason = reason
        if self._started and self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(), name=f"stop:{self.run_id}")

    def _arm_deadline(self, started_at: datetime | None) -> None:
        """Stop the run once `deadline_seconds` have passed since `started_at` (None: now)."""
        if self.deadline_seconds is None or self._deadline_timer is not None:
            return
        elapsed = 0.0 if started_at is None else max(0.0, time.time() - started_at.timestamp())
        remaining = self.deadline_seconds - elapsed
        self._deadline_timer = asyncio.get_running_loop().call_later(
            max(0.0, remaining), self._deadline_passed
        )

    def _deadline_passed(self) -> None:
        if self._stop_reason is not None:
            return
        log.warning("run %s: deadline of %ss passed; stopping it", self.run_id, self.deadline_seconds)
        self._request_stop("deadline")

    # entry points -------------------------------------------------------------
    async def execute(self, spec: RunSpec) -> None:
        """A fresh assignment: claim it, start it, follow it to the end."""
        claimed = self.reporter.emit("claimed", {})
        try:
            await self.reporter.wait_acked(claimed)
        except EventsRejected as exc:
            log.warning("run %s: not claimed: %s", self.run_id, exc)
            return
        if self.reporter.server_status in m.TERMINAL_RUN_STATUSES:
            log.info(
                "run %s: already %s on the server; not starting it", self.run_id, self.reporter.server_status
            )
            return
        if self._stop_reason == "cancel" or self.reporter.cancel_requested:
            await self._finish("cancelled", {})
            return
        try:
            await asyncio.to_thread(self._workspaces.create, self.run_id)
        except OSError as exc:  # the node's fault (disk full, permissions), not the run's
            log.warning("run %s: cannot create its workspace: %s", self.run_id, exc)
            await self._finish("failed", {"reason": f"cannot create the workspace: {exc}", "cause": "node"})
            return
        try:
            handle = await self._runtime.start(spec)
        except (ImageNotFound, StartFailed, RuntimeUnavailable) as exc:
            if isinstance(exc, StartFailed) and await self._exists():
                log.warning("run %s: already in the runtime, following it instead: %s", self.run_id, exc)
                self._started = True
                self._arm_deadline(await self._started_in_runtime())
                await self._follow(None)
                return
            log.warning("run %s: cannot start: %s", self.run_id, exc)
            await self._finish("failed", {"reason": str(exc), "cause": _start_failure_cause(exc)})
            return
        except (RuntimeError_, OSError) as exc:  # anything else the runtime or the host refused
            log.warning("run %s: cannot start: %s", self.run_id, exc)
            await self._finish("failed", {"reason": f"cannot start: {exc}", "cause": "node"})
            return
        self._started = True
        self._arm_deadline(None)
        self.reporter.emit("started", {"container_id": handle.ref})
        await self._follow(None)

    async def adopt(self, adoption: Adoption) -> None:
        """A run found in the runtime at start-up: report what the server missed, then follow it."""
        self._started = True
        self._arm_deadline(adoption.started_at or await self._started_in_runtime())
        if adoption.status == "scheduled":
            self.reporter.emit("started", {"container_id": adoption.container_ref})
        await self._follow(adoption.resume_logs_after)

    async def fail_after_crash(self, exc: Exception) -> None:
        """This supervisor hit a bug: report the run failed unless its end was reported already."""
        if self.reporter.finishing:
            return
        await self._finish(
            "failed", {"reason": f"the nodemanager failed running it ({type(exc).__name__})", "cause": "node"}
        )

    async def finish_without_start(self, type_: str, data: dict[str, object]) -> None:
        """Report a run's end although nothing runs (cancelled before start, container gone)."""
        await self._finish(type_, data)

    # following a started run ------------------------------------------------------
    async def _follow(self, since: str | None) -> None:
        self._started = True
        if self._stop_reason is not None and self._stop_task is None:
            self._request_stop(self._stop_reason)
        self._last_log_ts = since
        pump = asyncio.create_task(self._pump_logs(), name=f"logs:{self.run_id}")
        try:
            exit_code = await self._wait()
            self._disarm_deadline()
            await self._drain(pump)
        finally:
            self._disarm_deadline()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if exit_code is None:
            await self._finish("failed", {"reason": "the runtime lost track of the run's container"})
        elif self._stop_reason == "cancel":
            await self._finish("cancelled", {"exit_code": exit_code})
        elif self._stop_reason == "deadline":
            await self._finish("exited", {"exit_code": exit_code, "deadline_exceeded": True})
        elif await self._oom_killed():
            await self._finish("exited", {"exit_code": exit_code, "oom_killed": True})
        else:
            await self._finish("exited", {"exit_code": exit_code})

    async def _started_in_runtime(self) -> datetime:
        """When the runtime started the run; now if it cannot say (the run then gets its full time)."""
        try:
            started_at = (await self._runtime.state(self.run_id)).started_at
        except RuntimeError_ as exc:
            log.warning("run %s: cannot read when it started: %s", self.run_id, exc)
            started_at = None
        return started_at or datetime.now(UTC)

    def _disarm_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()

    async def _oom_killed(self) -> bool:
        """What the engine or the cgroup recorded; an exit code of 137 alone proves nothing."""
        try:
            return (await self._runtime.state(self.run_id)).oom_killed
        except RuntimeError_ as exc:
            log.warning("run %s: cannot read whether it was OOM-killed: %s", self.run_id, exc)
            return False

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        """Let the output stream catch up with the exit; a reader held back by the reporter
        waits as long as it takes, one that the runtime never ends is cut off."""
        while not pump.done():
            try:
                await asyncio.wait_for(asyncio.shield(pump), LOG_DRAIN_TIMEOUT)
            except TimeoutError:
                if not self.reporter.paused:
                    log.warning("run %s: output still streaming after exit; cut off", self.run_id)
                    return

    async def _wait(self) -> int | None:
        """The run's exit code; None when its container is gone or waiting keeps failing."""
        try:
            return await self._wait_while_present()
        except RuntimeError_ as exc:
            log.error("run %s: cannot wait for the container: %s", self.run_id, exc)
            return None

    @retrying(RuntimeError_, ceiling=WAIT_RETRY_CEILING, attempts=WAIT_ATTEMPTS)
    async def _wait_while_present(self) -> int | None:
        try:
            return await self._runtime.wait(self.run_id)
        except RuntimeError_ as exc:
            if await self._exists():
                raise
            log.error("run %s: its container is gone: %s", self.run_id, exc)
            return None

    async def _pump_logs(self) -> None:
        try:
            await self._forward_output()
        except RuntimeError_ as exc:
            log.error("run %s: output stream lost: %s", self.run_id, exc)

    @retrying(RuntimeError_, ceiling=OUTPUT_RETRY_CEILING, attempts=WAIT_ATTEMPTS)
    async def _forward_output(self) -> None:
        """The run's output to the reporter; a broken stream (engine restart) is reopened after
        the last line seen."""
        async for line in self._runtime.logs(self.run_id, since=self._last_log_ts):
            await self.reporter.log(line.stream, line.text, line.ts)
            if line.ts is not None:
                self._last_log_ts = line.ts

    async def _stop(self) -> None:
        try:
            await self._runtime.stop(self.run_id, self._stop_grace)
        except RuntimeError_ as exc:
            log.error("run %s: stopping failed: %s", self.run_id, exc)

    async def _exists(self) -> bool:
        try:
            handles = await self._runtime.list()
        except RuntimeError_:
            return True  # unknown: assume it does, never start twice
        return any(h.run_id == self.run_id for h in handles)

    async def _finish(self, type_: str, data: dict[str, object]) -> None:
        self.reporter.emit(type_, dict(data))
        try:
            await self.reporter.finished()
        except EventsRejected as exc:
            log.warning("run %s: final event %s refused: %s", self.run_id, type_, exc)
        log.info("run %s: %s %s", self.run_id, type_, data)
        if self._stop_task is not None:
            await self._stop_task
        if self._started:
            try:
                await self._runtime.remove(self.run_id)
            except RuntimeError_ as exc:
                log.warning("run %s: removing the container failed: %s", self.run_id, exc)
        await asyncio.to_thread(self._workspaces.mark_finished, self.run_id)


def _start_failure_cause(exc: RuntimeError_) -> str:
    """Whose fault a failed start is: the image's (missing), the run's (e.g. its command), or the
    node's (its runtime is unavailable or refuses); the server places a run again elsewhere after
    a node's fault."""
    if isinstance(exc, ImageNotFound):
        return "image"
    if isinstance(exc, RuntimeUnavailable):
        return "node"
    if isinstance(exc, StartFailed):
        return exc.cause
    return "run"
