"""DockerRuntime: one container per run, found again by its labels after a restart.

The container name `agentnodes-run-<run_id>` is the guard against starting a run twice:
Docker refuses a second container of the same name. Containers are not auto-removed, so
the exit code of a run that ended while the nodemanager was down can still be read.
Every docker / requests error is translated here into the runtime errors of base.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, cast

import docker
import docker.errors
from docker.utils import parse_repository_tag

from nodemanager.runtime.base import (
    Allocatable,
    Handle,
    ImageNotFound,
    LogLine,
    RunNotFound,
    RunSpec,
    RunState,
    Runtime,
    RuntimeError_,
    RuntimeUnavailable,
    StartFailed,
)
from nodemanager.runtime.lines import LineAssembler
from nodemanager.runtime.merge import merge_by_timestamp
from nodemanager.runtime.sandbox import ENGINE_SOCKETS, EngineFeatures, container_options, engine_sockets
from nodemanager.runtime.threads import in_daemon_thread, iterate_in_thread
from nodemanager.runtime.timestamps import format_ns, parse_ns
from nodemanager.workspace import validate_run_id

log = logging.getLogger(__name__)

PullPolicy = Literal["always", "if-not-present", "never"]
PULL_POLICIES: tuple[str, ...] = ("always", "if-not-present", "never")

CONTAINER_PREFIX = "agentnodes-run-"
LABEL_RUN_ID = "agentnodes.run_id"
LABEL_ATTEMPT = "agentnodes.attempt"
LABEL_DEADLINE = "agentnodes.deadline_seconds"
LABEL_NODE_ID = "agentnodes.node_id"
LABEL_MANAGED = "agentnodes.managed"
DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
PROBE_API_VERSION = "1.24"  # the oldest the SDK speaks; a ping answers on any

STREAMS = ("stdout", "stderr")


def check_pull_policy(value: str) -> PullPolicy:
    if value not in PULL_POLICIES:
        allowed = ", ".join(PULL_POLICIES)
        raise ValueError(f"IMAGE_PULL_POLICY must be one of {allowed}, not {value!r}")
    return cast(PullPolicy, value)


def container_name(run_id: str) -> str:
    return CONTAINER_PREFIX + validate_run_id(run_id)


def connect_client(base_url: str | None = None, timeout: float = 60.0, ping_timeout: float = 5.0) -> Any:
    """A DockerClient that answered a ping within `ping_timeout` (blocking; RuntimeUnavailable otherwise)."""
    # The probe names an API version: an auto-negotiating client contacts the engine in its
    # constructor and, when that fails, leaks the socket with no client left to close.
    _probe_unix_socket(base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_SOCKET, ping_timeout)
    probe_options: dict[str, Any] = {"version": PROBE_API_VERSION, "timeout": ping_timeout}
    try:
        probe = (
            docker.DockerClient(base_url=base_url, **probe_options)
            if base_url
            else docker.from_env(**probe_options)
        )
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"Docker engine not reachable: {exc}") from exc
    try:
        probe.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise RuntimeUnavailable(f"Docker engine not reachable: {exc}") from exc
    finally:
        probe.close()
    try:
        return (
            docker.DockerClient(base_url=base_url, timeout=timeout)
            if base_url
            else docker.from_env(timeout=timeout)
        )
    except (docker.errors.DockerException, OSError) as exc:
        raise RuntimeUnavailable(f"Docker engine not reachable: {exc}") from exc


def _probe_unix_socket(url: str, timeout: float) -> None:
    """Connect to a unix socket engine ourselves: the SDK leaks the socket of a failed connect."""
    if not url.startswith(("unix://", "http+unix://")):
        return
    path = url.split("://", 1)[1]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            probe.connect(path)
    except OSError as exc:
        raise RuntimeUnavailable(f"Docker engine not reachable at {url}: {exc}") from exc


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        client: Any,
        node_id: str,
        *,
        pull_policy: PullPolicy = "if-not-present",
        network_mode: str = "host",
        extra_labels: dict[str, str] | None = None,
        extra_capabilities: Iterable[str] = (),
        engine: EngineFeatures | None = None,
        engine_sockets: Iterable[str] = ENGINE_SOCKETS,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.pull_policy = check_pull_policy(pull_policy)
        self.network_mode = network_mode
        self.extra_labels = dict(extra_labels or {})
        self.extra_capabilities = tuple(extra_capabilities)  # ALLOW_CAPABILITIES
        self.engine = engine or EngineFeatures()
        self.engine_sockets = tuple(engine_sockets)
        self.memory_enforcement = "docker" if self.engine.memory_limit else "none"

    @classmethod
    async def connect(
        cls,
        node_id: str,
        *,
        base_url: str | None = None,
        ping_timeout: float = 5.0,
        pull_policy: PullPolicy = "if-not-present",
        network_mode: str = "host",
        extra_labels: dict[str, str] | None = None,
        extra_capabilities: Iterable[str] = (),
    ) -> DockerRuntime:
        """Connect to the engine (DOCKER_HOST or the default socket unless `base_url`)."""
        client = await asyncio.to_thread(connect_client, base_url, 60.0, ping_timeout)
        try:
            engine = EngineFeatures.from_info(await asyncio.to_thread(client.info))
        except (docker.errors.DockerException, OSError) as exc:
            await asyncio.to_thread(client.close)
            raise RuntimeUnavailable(f"Docker engine not reachable: {exc}") from exc
        if missing := engine.shortcomings():
            log.warning(
                "the Docker engine's kernel cannot enforce %s: runs are not held to it", ", ".join(missing)
            )
        return cls(
            client,
            node_id,
            pull_policy=pull_policy,
            network_mode=network_mode,
            extra_labels=extra_labels,
            extra_capabilities=extra_capabilities,
            engine=engine,
            engine_sockets=engine_sockets(base_url),
        )

    # ------------------------------------------------------------------ start

    async def start(self, spec: RunSpec) -> Handle:
        name = container_name(spec.run_id)
        await self.ensure_image(spec.image)
        labels = {
            **spec.labels,
            **self.extra_labels,
            LABEL_RUN_ID: spec.run_id,
            **({LABEL_ATTEMPT: str(spec.attempt)} if spec.attempt is not None else {}),
            **({LABEL_DEADLINE: str(spec.deadline_seconds)} if spec.deadline_seconds is not None else {}),
            LABEL_NODE_ID: self.node_id,
            LABEL_MANAGED: "true",
        }
        try:
            container = await asyncio.to_thread(self._create_and_start, spec, name, labels)
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {spec.image} not present on node: {_explain(exc)}") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise StartFailed(f"run {spec.run_id} already exists on this node ({name})") from exc
            raise StartFailed(
                f"could not start run {spec.run_id}: {_explain(exc)}", cause=_start_failure_cause(exc)
            ) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        return _handle(container)

    def _create_and_start(self, spec: RunSpec, name: str, labels: dict[str, str]) -> Any:
        spec.workspace.mkdir(parents=True, exist_ok=True)
        confinement = container_options(
            spec.limits,
            workspace=spec.workspace.absolute(),
            network_mode=self.network_mode,
            extra_capabilities=self.extra_capabilities,
            engine=self.engine,
            engine_sockets=self.engine_sockets,
        )
        container = self.client.containers.create(
            spec.image,
            command=list(spec.command) or None,
            name=name,
            labels=labels,
            environment={key: str(value) for key, value in spec.env.items()},
            detach=True,
            **confinement,
        )
        try:
            container.start()
        except docker.errors.APIError:
            # a container that never ran would keep the name and block a corrected retry
            with contextlib.suppress(docker.errors.DockerException, OSError):
                container.remove(force=True)
            raise
        container.reload()
        return container

    async def ensure_image(self, image: str) -> None:
        """Make the image present as IMAGE_PULL_POLICY allows; ImageNotFound otherwise."""
        if self.pull_policy != "always":
            try:
                await asyncio.to_thread(self.client.images.get, image)
                return
            except docker.errors.ImageNotFound as exc:
                if self.pull_policy == "never":
                    raise ImageNotFound(
                        f"image {image} not present on node and IMAGE_PULL_POLICY=never"
                    ) from exc
            except (docker.errors.DockerException, OSError) as exc:
                raise _unavailable(exc) from exc
        repository, tag = parse_repository_tag(image)
        log.info("pulling image %s (IMAGE_PULL_POLICY=%s)", image, self.pull_policy)
        try:
            # without a tag the SDK would pull every tag of the repository
            await asyncio.to_thread(self.client.images.pull, repository, tag=tag or "latest")
        except docker.errors.APIError as exc:
            raise ImageNotFound(f"could not pull image {image}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc

    # ------------------------------------------------------------------ inspect

    async def list(self) -> list[Handle]:
        filters = {"label": [f"{LABEL_NODE_ID}={self.node_id}", f"{LABEL_MANAGED}=true"]}
        try:
            containers = await asyncio.to_thread(
                self.client.containers.list, all=True, filters=filters, ignore_removed=True
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        return [_handle(container) for container in containers if LABEL_RUN_ID in container.labels]

    async def _container(self, run_id: str) -> Any:
        try:
            return await asyncio.to_thread(self.client.containers.get, container_name(run_id))
        except docker.errors.NotFound as exc:
            raise RunNotFound(f"no container for run {run_id} on this node") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc

    async def state(self, run_id: str) -> RunState:
        container = await self._container(run_id)
        status = container.attrs.get("State", {})
        running = bool(status.get("Running"))
        return RunState(
            running=running,
            started_at=_engine_time(status.get("StartedAt")),
            exit_code=None if running else status.get("ExitCode"),
            oom_killed=bool(status.get("OOMKilled")),
        )

    async def allocatable(self) -> Allocatable:
        memory = self.engine.memory_bytes
        cpus = float(self.engine.cpus) if self.engine.cpus else None
        return Allocatable(cpus=cpus, memory_mb=memory // (1024 * 1024) if memory else None)

    async def wait(self, run_id: str) -> int:
        container = await self._container(run_id)
        try:
            # no timeout: the SDK then waits without a read timeout for as long as the run lasts
            result = await in_daemon_thread(lambda: container.wait(timeout=None), f"wait-{run_id}")
        except docker.errors.NotFound as exc:
            raise RunNotFound(f"run {run_id} was removed while waiting for it") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        return int(result["StatusCode"])

    async def logs(self, run_id: str, since: str | None = None) -> AsyncIterator[LogLine]:
        container = await self._container(run_id)
        since_ns = parse_ns(since) if since else None
        readers = [_StreamLog(container, stream, since_ns) for stream in STREAMS]
        lines = merge_by_timestamp(
            [iterate_in_thread(r.lines, r.interrupt, f"logs-{run_id}-{r.stream}") for r in readers]
        )
        try:
            async for line in lines:
                yield line
        except docker.errors.NotFound as exc:
            raise RunNotFound(f"run {run_id} was removed while reading its output") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # "dead or marked for removal"
                raise RunNotFound(f"run {run_id} is being removed: {_explain(exc)}") from exc
            raise _unavailable(exc) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        finally:
            await lines.aclose()

    # ------------------------------------------------------------------ stop

    async def stop(self, run_id: str, grace: float) -> None:
        container = await self._container(run_id)
        try:
            # Docker sends SIGTERM, waits `t` whole seconds, then SIGKILL
            await asyncio.to_thread(container.stop, timeout=max(0, math.ceil(grace)))
        except docker.errors.NotFound as exc:
            raise RunNotFound(f"no container for run {run_id} on this node") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc

    async def remove(self, run_id: str) -> None:
        """Remove the run's container (killing it if it still runs); a missing one is not an error."""
        try:
            container = await self._container(run_id)
            await asyncio.to_thread(container.remove, force=True)
        except (RunNotFound, docker.errors.NotFound):
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "in progress" in _explain(exc):
                return  # someone else is removing it already
            raise _unavailable(exc) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc

    async def version(self) -> str:
        try:
            info = await asyncio.to_thread(self.client.version)
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        return f"docker {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


class _StreamLog:
    """`docker logs --follow --timestamps` of one output stream of a container, as lines.

    The SDK's log stream does not say which stream a frame came from, so stdout and stderr are
    read apart, each on a thread of its own, and merged by timestamp (runtime/merge.py).
    """

    def __init__(self, container: Any, stream: str, since_ns: int | None) -> None:
        self.container = container
        self.stream = stream
        self.since_ns = since_ns
        self._reading: Any = None  # the SDK's CancellableStream being read
        self._closed = False

    def lines(self) -> Iterator[LogLine]:
        assembler = LineAssembler(self.stream)
        for ts, data in self._frames():
            yield from (line for line in assembler.feed(data, ts) if self._wanted(line))
        yield from (line for line in assembler.flush() if self._wanted(line))

    def _frames(self) -> Iterator[tuple[str | None, bytes]]:
        """Followed frames, then one more unfollowed read after the run has exited.

        Docker 20.10 may end a followed stream before the run's last, unterminated output
        reaches the log; the catch-up read picks it up, skipping frames already seen.
        """
        last_ns = None if self.since_ns is None else self.since_ns - self.since_ns % 1_000_000_000
        follow = True
        while not self._closed:
            for ts, data in self._read(follow, last_ns):
                if ts is not None:
                    last_ns = parse_ns(ts)
                yield ts, data
            if not follow or self._closed:
                return
            self.container.reload()
            follow = bool(self.container.attrs.get("State", {}).get("Running"))
            if follow:
                time.sleep(0.1)  # the stream ended early (e.g. daemon restart): follow again

    def _read(self, follow: bool, after_ns: int | None) -> Iterator[tuple[str | None, bytes]]:
        seconds = (after_ns or 0) // 1_000_000_000  # docker takes whole seconds; the rest is filtered below
        payloads = self.container.logs(
            stdout=self.stream == "stdout",
            stderr=self.stream == "stderr",
            stream=True,
            follow=follow,
            timestamps=True,
            since=seconds or None,
        )
        self._reading = payloads
        try:
            if self._closed:  # interrupted while opening
                return
            for payload in payloads:  # one log message: "<RFC 3339 ns timestamp> <data>"
                stamp, _, data = payload.partition(b" ")
                ts = _timestamp(stamp)
                if after_ns is not None and ts is not None and parse_ns(ts) <= after_ns:
                    continue
                yield ts, data
        finally:
            _close(payloads)

    def _wanted(self, line: LogLine) -> bool:
        return self.since_ns is None or line.ts is None or parse_ns(line.ts) > self.since_ns

    def interrupt(self) -> None:
        """Unblock the reading thread (from another thread): it then ends."""
        self._closed = True
        if self._reading is not None:
            _close(self._reading)


def _close(payloads: Any) -> None:
    # the stream may be ending on its own in the reading thread meanwhile
    with contextlib.suppress(docker.errors.DockerException, OSError, AttributeError):
        payloads.close()


def _timestamp(raw: bytes) -> str | None:
    try:
        return format_ns(parse_ns(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None


def _handle(container: Any) -> Handle:
    running = bool(container.attrs.get("State", {}).get("Running"))
    attempt = container.labels.get(LABEL_ATTEMPT, "")
    deadline = container.labels.get(LABEL_DEADLINE, "")
    return Handle(
        run_id=container.labels.get(LABEL_RUN_ID, ""),
        ref=container.id,
        running=running,
        attempt=int(attempt) if attempt.isdigit() else None,
        deadline_seconds=int(deadline) if deadline.isdigit() else None,
    )


def _engine_time(value: object) -> datetime | None:
    """A container's StartedAt; None for the zero time of a container that never started."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    try:
        return datetime.fromtimestamp(parse_ns(value) / 1e9, UTC)
    except ValueError:
        return None


def _explain(exc: docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _start_failure_cause(exc: docker.errors.APIError) -> str:
    """The engine answers 400 when the container's own process cannot start (`exec: "x": no such
    file or directory`); anything else (a network it names missing: 404, an engine fault: 5xx)
    is the node's."""
    if exc.status_code == 400 or 'exec: "' in _explain(exc):
        return "run"
    return "node"


def _unavailable(exc: BaseException) -> RuntimeError_:
    if isinstance(exc, docker.errors.APIError):
        return RuntimeError_(f"Docker engine error: {_explain(exc)}")
    return RuntimeUnavailable(f"Docker engine not reachable: {exc}")
