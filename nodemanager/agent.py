"""The node daemon: heartbeats, the work long-poll, one supervisor per run, cleanup.

Start-up adopts what the runtime already runs for this node before any new work is taken,
so a restarted daemon never starts a run twice. Stopping the daemon leaves containers
running (the next daemon adopts them) and gives pending events a short deadline to reach
the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nodeapi import models as m
from nodeapi.client import AsyncClient, Calls
from nodeapi.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from nodeapi.retry import is_transient
from nodemanager.commands import run_command
from nodemanager.conditions import check_conditions
from nodemanager.config import NodeConfig
from nodemanager.credentials import Credentials
from nodemanager.loops import DEFAULT_CEILING, retried, retry_hook, retrying, service_loop, until_stopped
from nodemanager.metrics import NodeMetrics
from nodemanager.nodeinfo import node_info, node_labels
from nodemanager.reporter import EventShipper, RunReporter
from nodemanager.runtime.base import Handle, RunSpec, Runtime, RuntimeError_
from nodemanager.supervisor import Adoption, RunSupervisor, container_env, run_limits
from nodemanager.workspace import Workspaces

log = logging.getLogger(__name__)

WORK_WAIT = 20.0
WORK_RETRY_CEILING = 10.0  # seconds; new runs wait on this after an outage, heartbeats back off to 30
COMMAND_RESULT_ATTEMPTS = 5
COMMAND_RETRY_CEILING = 5.0  # an admin waits for the answer
DEFAULT_HEARTBEAT_INTERVAL = 30.0
CLEANUP_INTERVAL = 300.0
SHUTDOWN_FLUSH_DEADLINE = 3.0
FORGOTTEN_RUNS_KEPT = 10_000  # ids of finished runs remembered, so a re-sent assignment is ignored


class Agent:
    def __init__(
        self,
        config: NodeConfig,
        runtime: Runtime,
        client: AsyncClient,
        credentials: Credentials,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.client = client
        self.credentials = credentials
        self.shipper = EventShipper(client, config.node_id)
        self.workspaces = Workspaces(config.workspace_dir)
        self.metrics = metrics or NodeMetrics()
        self.supervisors: dict[str, RunSupervisor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backlog: deque[m.Assignment] = deque()  # assigned beyond MAX_CONCURRENT (server raced us)
        self._finished: OrderedDict[str, int | None] = OrderedDict()  # run id -> its ended attempt
        self._heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self._info: m.NodeInfo | None = None
        self._capacity = m.Capacity(max_concurrent=config.max_concurrent)
        # runs in the runtime at start-up, listed in heartbeats until adopted: the server counts
        # the time a run goes unlisted, and the node was only down, not rid of them
        self._found: dict[str, int | None] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._abandoning: set[str] = set()
        self._commands: OrderedDict[str, None] = OrderedDict()  # ids of commands taken on
        self._vanished_check_pending = False

    # lifecycle -------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Adopt, then serve until `stop` is set; containers are left running on the way out."""
        self._info = await node_info(self.runtime)
        self._capacity = await self._detect_capacity()
        await self._until_done(self._note_found_runs, stop)
        await self._until_done(self._heartbeat, stop)  # registers the node
        await self._until_done(self._adopt_existing, stop)
        self._found.clear()
        if stop.is_set():
            return
        log.info(
            "node %s ready: %d runs adopted, capacity %d runs, %s CPUs, %s MiB (memory held by %s)",
            self.config.node_id,
            len(self.supervisors),
            self._capacity.max_concurrent,
            self._capacity.cpus,
            self._capacity.memory_mb,
            self.runtime.memory_enforcement,
        )
        stopped = asyncio.Event()  # set once the daemon stops heartbeating (after any STOP_WAIT)
        heartbeat = asyncio.create_task(
            service_loop(
                "heartbeat", self._heartbeat, backoff_ceiling=self._heartbeat_retry_ceiling, stop=stopped
            ),
            name="heartbeat",
        )
        loops = [
            asyncio.create_task(
                service_loop("work", self._poll_work, backoff_ceiling=WORK_RETRY_CEILING, stop=stop),
                name="work",
            ),
            asyncio.create_task(service_loop("cleanup", self._cleanup, stop=stop), name="cleanup"),
        ]
        try:
            await stop.wait()
            for task in loops:  # no new work from here on
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self.config.stop_wait > 0:
                await self._wait_for_runs(self.config.stop_wait)
        finally:
            stopped.set()
            for task in (heartbeat, *loops):
                task.cancel()
            await asyncio.gather(heartbeat, *loops, return_exceptions=True)
            await self._shutdown()

    async def _note_found_runs(self) -> None:
        self._found = {handle.run_id: handle.attempt for handle in await self.runtime.list() if handle.run_id}

    async def _detect_capacity(self) -> m.Capacity:
        """MAX_CONCURRENT, and the CPUs and memory runs can have: NODE_CPUS and NODE_MEMORY_MB, else
        what the runtime detects."""
        detected = await self.runtime.allocatable()
        return m.Capacity(
            max_concurrent=self.config.max_concurrent,
            cpus=self.config.node_cpus if self.config.node_cpus is not None else detected.cpus,
            memory_mb=self.config.node_memory_mb
            if self.config.node_memory_mb is not None
            else detected.memory_mb,
        )

    async def _wait_for_runs(self, seconds: float) -> None:
        """STOP_WAIT: let the running runs finish (heartbeats go on meanwhile); runs still waiting
        for a slot are given back (the server queues them again once the node stops listing them)."""
        self._backlog.clear()
        log.info("stopping: waiting up to %gs for %d run(s) to finish", seconds, len(self.supervisors))
        deadline = asyncio.get_running_loop().time() + seconds
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(
                list(self._tasks.values()), timeout=min(1.0, deadline - asyncio.get_running_loop().time())
            )
        if self._tasks:
            log.warning(
                "stopping with %d run(s) still running after %gs; they are adopted on restart",
                len(self._tasks),
                seconds,
            )

    async def _until_done(self, step: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        """`step`, retried on any server or runtime error until it succeeds or `stop` is set."""
        on = retry_hook(lambda exc: isinstance(exc, ApiError | RuntimeError_), DEFAULT_CEILING)
        await until_stopped(stop, retried(step, on, ceiling=DEFAULT_CEILING)())

    async def _shutdown(self) -> None:
        """Leave containers running; give pending events a short deadline."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        reporters = [s.reporter for s in self.supervisors.values()]
        flushed = await asyncio.gather(*(r.flush(SHUTDOWN_FLUSH_DEADLINE) for r in reporters))
        unsent = sum(r.pending for r, ok in zip(reporters, flushed, strict=True) if not ok)
        for reporter in reporters:
            await reporter.close()
        await self.shipper.close()
        if unsent:
            log.warning("stopping with %d events unsent; the next start re-reads them", unsent)
        log.info("stopped; %d runs keep running and will be adopted on restart", len(self.supervisors))

    # heartbeat -------------------------------------------------------------------
    def _heartbeat_retry_ceiling(self) -> float:
        """A failed heartbeat is tried again at least as often as heartbeats are sent: the server
        gives a node that went silent while it was down (or unreachable) `offline_after` plus
        RUN_LOST_GRACE to be heard again once it is back, and with short intervals a backoff that
        grew to 30 s outlasts that, so a healthy node's runs would be declared lost."""
        return min(DEFAULT_CEILING, self._heartbeat_interval)

    async def _heartbeat(self) -> float:
        request = m.HeartbeatRequest(
            node_id=self.config.node_id,
            labels={**node_labels(), **self.config.node_labels},
            capacity=self._capacity,
            info=self._info or m.NodeInfo(),
            active_runs=sorted({*self.supervisors, *(a.run.id for a in self._backlog), *self._found}),
            conditions=await check_conditions(
                self.runtime, self.config.workspace_dir, self.config.min_free_disk_mb
            ),
            run_attempts={
                run_id: attempt
                for run_id, attempt in (
                    *self._found.items(),
                    *((run_id, supervisor.attempt) for run_id, supervisor in self.supervisors.items()),
                )
                if attempt is not None
            },
        )
        self.metrics.heartbeat_built(request, waiting=len(self._backlog))
        try:
            reply = await self._send_heartbeat(request)
        except Exception:
            self.metrics.heartbeats.labels(result="error").inc()
            raise
        self.metrics.heartbeats.labels(result="ok").inc()
        if reply.node_token:
            self.credentials.store(reply.node_token)
            self.client.set_token(reply.node_token)
        self._heartbeat_interval = max(1.0, reply.heartbeat_interval)
        for run_id in reply.stop_runs:
            supervisor = self.supervisors.get(run_id)
            if supervisor is not None and supervisor.reporter.finishing:
                continue  # it ended here and its supervisor is cleaning up: the list was older than that
            why = "the server no longer expects it here"
            self._background(self._abandon(run_id, why), f"abandon:{run_id}")  # a stop may take STOP_GRACE
        return self._heartbeat_interval

    async def _send_heartbeat(self, request: m.HeartbeatRequest) -> m.HeartbeatResponse:
        try:
            return await self.client.send(Calls.heartbeat(request))
        except Unauthorized as exc:
            if exc.status_code != 401 or not self.credentials.has_node_token:
                raise
            self.credentials.forget()  # voided by an admin, or the node was deleted
            self.client.set_token(self.credentials.token)
            return await self.client.send(Calls.heartbeat(request))

    async def _abandon(self, run_id: str, why: str) -> None:
        """Stop and remove a run's container without reporting anything for it."""
        if run_id in self._abandoning:
            return
        # known as finished before the first await: no work answer or adoption may start a second
        # supervisor for it while this one is being stopped
        self._abandoning.add(run_id)
        # the placement let go, so a later one of the same run is taken as new work (_placed_again);
        # a run still waiting for a slot has its placement in its assignment
        holding = self.supervisors.get(run_id)
        waiting = next((a.run.attempts for a in self._backlog if a.run.id == run_id), None)
        self._remember_finished(run_id, holding.attempt if holding is not None else waiting)
        self._backlog = deque(a for a in self._backlog if a.run.id != run_id)
        supervisor = self.supervisors.pop(run_id, None)
        task = self._tasks.pop(run_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if supervisor is not None:
            await supervisor.reporter.close()
        log.warning("run %s: stopping its container: %s", run_id, why)
        try:
            await self.runtime.stop(run_id, self.config.stop_grace)
            await self.runtime.remove(run_id)
        except RuntimeError_ as exc:
            log.warning("run %s: could not remove its container: %s", run_id, exc)
        finally:
            self._abandoning.discard(run_id)
        self._start_from_backlog()

    # work channel ----------------------------------------------------------------
    async def _poll_work(self) -> float:
        work = await self.client.send(Calls.poll_work(self.config.node_id, wait=WORK_WAIT))
        # a command comes again in every answer until its result is stored: answer it once
        for command in work.commands:
            if command.id not in self._commands:
                self._remember(self._commands, command.id)
                self._background(self._answer(command), f"command:{command.id}")
        if self._vanished_check_pending:
            await self._report_vanished(work.running_runs)
        for assignment in work.assignments:
            self._accept(assignment)
        for run_id in work.cancel_runs:
            await self._cancel(run_id)
        return 0.0

    def _known(self, run_id: str) -> bool:
        return (
            run_id in self.supervisors
            or run_id in self._finished
            or any(a.run.id == run_id for a in self._backlog)
        )

    def _accept(self, assignment: m.Assignment) -> None:
        run = assignment.run
        if self._known(run.id) and not self._placed_again(run):
            return
        if len(self.supervisors) >= self.config.max_concurrent:
            log.info("run %s: all slots busy; queued locally", assignment.run.id)
            self._backlog.append(assignment)
            return
        self._launch(assignment)

    def _placed_again(self, run: m.Run) -> bool:
        """A run that ended here comes back as a later placement (the server queued it again
        after this node let it go): that is new work, not a repeat of an assignment."""
        ended_attempt = self._finished.get(run.id, -1)
        return (
            run.id not in self.supervisors
            and ended_attempt is not None
            and ended_attempt >= 0
            and run.attempts > ended_attempt
            and not any(a.run.id == run.id for a in self._backlog)
        )

    def _launch(self, assignment: m.Assignment) -> None:
        run = assignment.run
        self.metrics.runs_started.inc()
        supervisor = self._supervisor(run.id, run.last_node_seq, run.attempts, run.deadline_seconds)
        if run.cancel_requested:
            supervisor.request_cancel()
        spec = RunSpec(
            run_id=run.id,
            image=run.image,
            command=list(run.command),
            env=container_env(assignment.env_config, run),
            workspace=self.workspaces.path(run.id),
            labels=dict(self.config.container_labels),
            attempt=run.attempts,
            limits=run_limits(run),
            deadline_seconds=run.deadline_seconds,
        )
        self._spawn(run.id, self._execute(supervisor, spec))

    async def _execute(self, supervisor: RunSupervisor, spec: RunSpec) -> None:
        try:
            await supervisor.execute(spec)
        except Exception as exc:  # a bug: end the run on the server rather than leave it stuck
            log.exception("run %s: supervisor crashed", spec.run_id)
            await supervisor.fail_after_crash(exc)

    def _supervisor(
        self, run_id: str, last_node_seq: int, attempt: int | None = None, deadline_seconds: int | None = None
    ) -> RunSupervisor:
        reporter = RunReporter(self.client, self.config.node_id, run_id, last_node_seq, attempt, self.shipper)
        supervisor = RunSupervisor(
            run_id,
            self.runtime,
            reporter,
            self.workspaces,
            self.config.stop_grace,
            attempt=attempt,
            deadline_seconds=deadline_seconds,
        )
        self.supervisors[run_id] = supervisor
        return supervisor

    def _spawn(self, run_id: str, body: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(body, name=f"run:{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda t: self._on_run_done(run_id, t))

    def _on_run_done(self, run_id: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # shutdown or abandoned: the caller cleans up
        if (exc := task.exception()) is not None:
            log.error("run %s: supervisor crashed", run_id, exc_info=exc)
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]
            supervisor = self.supervisors.pop(run_id, None)
            if supervisor is not None:
                self._background(supervisor.reporter.close(), f"close:{run_id}")
                self._remember_finished(run_id, supervisor.attempt)
        self._remember_finished(run_id)
        self._start_from_backlog()

    def _background(self, body: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(body, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _start_from_backlog(self) -> None:
        while self._backlog and len(self.supervisors) < self.config.max_concurrent:
            self._launch(self._backlog.popleft())

    def _remember_finished(self, run_id: str, attempt: int | None = None) -> None:
        """The run ended here (its placement `attempt` when known, which a later one may follow)."""
        if attempt is None and self._finished.get(run_id) is not None:
            return
        self._remember(self._finished, run_id, attempt)

    @staticmethod
    def _remember(seen: OrderedDict[str, Any], key: str, value: Any = None) -> None:
        seen[key] = value
        seen.move_to_end(key)
        while len(seen) > FORGOTTEN_RUNS_KEPT:
            seen.popitem(last=False)

    async def _cancel(self, run_id: str) -> None:
        if (supervisor := self.supervisors.get(run_id)) is not None:
            supervisor.request_cancel()
            return
        for assignment in list(self._backlog):
            if assignment.run.id == run_id:
                self._backlog.remove(assignment)
                self._report_end(run_id, assignment.run.last_node_seq, "cancelled", {})
                return
        if run_id in self._finished:
            return
        state = await self._probe(run_id)
        if state is not None and state.status in m.ACTIVE_RUN_STATUSES:
            self._report_end(run_id, state.last_node_seq, "cancelled", {})

    def _report_end(self, run_id: str, last_node_seq: int, type_: str, data: dict[str, object]) -> None:
        supervisor = self._supervisor(run_id, last_node_seq)
        self._spawn(run_id, supervisor.finish_without_start(type_, data))

    async def _answer(self, command: m.NodeCommand) -> None:
        result = await run_command(command, self.config, self.runtime)
        try:
            await self._post_result(command.id, result)
        except ApiError as exc:
            log.error("command %s: its result was not delivered: %s", command.id, exc)
            self._commands.pop(command.id, None)  # the server hands it out again: run it again

    @retrying(
        retry_hook(is_transient, COMMAND_RETRY_CEILING),
        ceiling=COMMAND_RETRY_CEILING,
        attempts=COMMAND_RESULT_ATTEMPTS,
    )
    async def _post_result(self, command_id: str, result: m.CommandResult) -> None:
        await self.client.send(Calls.post_command_result(self.config.node_id, command_id, result))

    # adoption --------------------------------------------------------------------
    async def _adopt_existing(self) -> None:
        """Follow the runtime's runs of this node. Runs the server placed here and that have
        no container come by the work channel: not started yet (claimed before a crash or
        not) as assignments, running ones in `running_runs` (see _report_vanished)."""
        for handle in await self.runtime.list():
            if handle.run_id not in self.supervisors:
                await self._adopt(handle)
        self._vanished_check_pending = True

    async def _report_vanished(self, running_runs: list[str]) -> None:
        """Once, on the first work answer after adoption: runs the server has as running here
        that this daemon does not follow lost their container while it was down."""
        present = {handle.run_id for handle in await self.runtime.list()}
        for run_id in running_runs:
            if run_id in present or self._known(run_id):
                continue
            state = await self._probe(run_id)
            if state is None or state.status != "running":
                continue
            log.warning("run %s: its container is gone (removed while the daemon was down?)", run_id)
            reason = "the run's container disappeared from the node while the nodemanager was down"
            self._report_end(run_id, state.last_node_seq, "failed", {"reason": reason})
        self._vanished_check_pending = False

    async def _adopt(self, handle: Handle) -> None:
        state = await self._probe(handle.run_id, handle.attempt)
        if state is None or state.status not in m.ACTIVE_RUN_STATUSES:
            await self._abandon(handle.run_id, "its run is finished, unknown or assigned elsewhere")
            return
        since = state.last_log_ts
        log.info(
            "run %s: adopting %s container %s (logs after %s)",
            handle.run_id,
            "running" if handle.running else "exited",
            handle.ref,
            since,
        )
        deadline = state.deadline_seconds if state.deadline_seconds is not None else handle.deadline_seconds
        supervisor = self._supervisor(handle.run_id, state.last_node_seq, handle.attempt, deadline)
        if state.cancel_requested:
            supervisor.request_cancel()
        adoption = Adoption(
            status=state.status,
            container_ref=handle.ref,
            resume_logs_after=since,
            started_at=state.started_at,
        )
        self._spawn(handle.run_id, supervisor.adopt(adoption))

    async def _probe(self, run_id: str, attempt: int | None = None) -> m.NodeEventAck | None:
        """The run's status and last_node_seq as the server has them; None if it is not ours.

        An empty node-events batch stores nothing and answers exactly that, with the node's
        own credentials (the admin run API may be closed to nodes).
        """
        batch = m.NodeEventBatch(node_id=self.config.node_id, events=[], attempt=attempt)
        try:
            return await self.client.send(Calls.post_run_events(run_id, batch))
        except (NotFound, Conflict, Forbidden, BadRequest) as exc:
            # BadRequest: an id the server cannot have made (a foreign container's label)
            log.info("run %s: not this node's: %s", run_id, exc.detail)
            return None

    # housekeeping ----------------------------------------------------------------
    async def _cleanup(self) -> float:
        active = set(self.supervisors)
        for handle in await self.runtime.list():
            # a finished run whose container removal failed earlier
            if not handle.running and handle.run_id in self._finished and handle.run_id not in active:
                await self.runtime.remove(handle.run_id)
        await asyncio.to_thread(self.workspaces.cleanup_finished, self.config.workspace_retention, active)
        return min(CLEANUP_INTERVAL, max(1.0, self.config.workspace_retention / 4))
