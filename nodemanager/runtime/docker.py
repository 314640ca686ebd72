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
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

import docker
import docker.errors
from docker.types import Mount
from docker.utils import parse_repository_tag

from nodemanager.runtime.base import (
    Handle,
    ImageNotFound,
    LogLine,
    RunNotFound,
    RunSpec,
    Runtime,
    RuntimeError_,
    RuntimeUnavailable,
    StartFailed,
)
from nodemanager.runtime.lines import LineAssembler
from nodemanager.runtime.threads import in_daemon_thread, iterate_in_thread
from nodemanager.runtime.timestamps import format_ns, parse_ns
from nodemanager.workspace import validate_run_id

log = logging.getLogger(__name__)

PullPolicy = Literal["always", "if-not-present", "never"]
PULL_POLICIES: tuple[str, ...] = ("always", "if-not-present", "never")

CONTAINER_PREFIX = "agentnodes-run-"
LABEL_RUN_ID = "agentnodes.run_id"
LABEL_NODE_ID = "agentnodes.node_id"
LABEL_MANAGED = "agentnodes.managed"
WORKSPACE_MOUNT = "/workspace"
DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
PROBE_API_VERSION = "1.24"  # the oldest the SDK speaks; a ping answers on any

_STREAMS = {1: "stdout", 2: "stderr"}
_FRAME_HEADER = struct.Struct(">BxxxL")


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
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.pull_policy = check_pull_policy(pull_policy)
        self.network_mode = network_mode
        self.extra_labels = dict(extra_labels or {})

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
    ) -> DockerRuntime:
        """Connect to the engine (DOCKER_HOST or the default socket unless `base_url`)."""
        client = await asyncio.to_thread(connect_client, base_url, 60.0, ping_timeout)
        return cls(
            client, node_id, pull_policy=pull_policy, network_mode=network_mode, extra_labels=extra_labels
        )

    # ------------------------------------------------------------------ start

    async def start(self, spec: RunSpec) -> Handle:
        name = container_name(spec.run_id)
        await self.ensure_image(spec.image)
        labels = {
            **spec.labels,
            **self.extra_labels,
            LABEL_RUN_ID: spec.run_id,
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
            raise StartFailed(f"could not start run {spec.run_id}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise _unavailable(exc) from exc
        return _handle(container)

    def _create_and_start(self, spec: RunSpec, name: str, labels: dict[str, str]) -> Any:
        spec.workspace.mkdir(parents=True, exist_ok=True)
        container = self.client.containers.create(
            spec.image,
            command=list(spec.command) or None,
            name=name,
            labels=labels,
            environment={key: str(value) for key, value in spec.env.items()},
            working_dir=WORKSPACE_MOUNT,
            mounts=[Mount(target=WORKSPACE_MOUNT, source=str(spec.workspace.absolute()), type="bind")],
            network_mode=self.network_mode,
            detach=True,
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
        reader = _FollowedLogs(self.client.api, container.id, since_ns)
        lines = iterate_in_thread(reader.lines, reader.interrupt, f"logs-{run_id}")
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


class _FollowedLogs:
    """`docker logs --follow --timestamps`, keeping apart stdout and stderr in the daemon's order.

    The SDK's `logs()` drops the stream id of each multiplexed frame, so this reads the
    frames itself (through the SDK's request helpers, which are private but stable).
    """

    def __init__(self, api: Any, container_id: str, since_ns: int | None) -> None:
        self.api = api
        self.container_id = container_id
        self.since_ns = since_ns
        self._socket: Any = None
        self._closed = False

    def lines(self) -> Iterator[LogLine]:
        assemblers = {stream: LineAssembler(stream) for stream in _STREAMS.values()}
        for stream, ts, data in self._all_frames():
            for line in assemblers[stream].feed(data, ts):
                if self._wanted(line):
                    yield line
        for assembler in assemblers.values():
            yield from (line for line in assembler.flush() if self._wanted(line))

    def _all_frames(self) -> Iterator[tuple[str, str | None, bytes]]:
        """Followed frames, then one more unfollowed read after the run has exited.

        Docker 20.10 may end a followed stream before the run's last, unterminated output
        reaches the log; the catch-up read picks it up, skipping frames already seen.
        """
        last_ns = None if self.since_ns is None else self.since_ns - self.since_ns % 1_000_000_000
        follow = True
        while not self._closed:
            for frame in self._frames(follow, last_ns):
                if frame[1] is not None:
                    last_ns = parse_ns(frame[1])
                yield frame
            if not follow or self._closed:
                return
            state = self.api.inspect_container(self.container_id).get("State", {})
            follow = bool(state.get("Running"))
            if follow:
                time.sleep(0.1)  # the stream ended early (e.g. daemon restart): follow again

    def _frames(self, follow: bool, after_ns: int | None) -> Iterator[tuple[str, str | None, bytes]]:
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow)}
        if after_ns is not None:
            params["since"] = after_ns // 1_000_000_000  # whole seconds; the rest is filtered here
        response = self.api._get(
            self.api._url("/containers/{0}/logs", self.container_id), params=params, stream=True
        )
        try:
            self.api._raise_for_status(response)
            self._socket = self.api._get_raw_response_socket(response)
            self.api._disable_socket_timeout(self._socket)
            while not self._closed:
                header = response.raw.read(_FRAME_HEADER.size)
                if len(header) < _FRAME_HEADER.size:
                    return
                stream_id, length = _FRAME_HEADER.unpack(header)
                payload = response.raw.read(length) if length else b""
                if length and not payload:
                    return
                stamp, _, data = payload.partition(b" ")
                ts = _timestamp(stamp)
                if after_ns is not None and ts is not None and parse_ns(ts) <= after_ns:
                    continue
                yield _STREAMS.get(stream_id, "stdout"), ts, data
        finally:
            response.close()

    def _wanted(self, line: LogLine) -> bool:
        return self.since_ns is None or line.ts is None or parse_ns(line.ts) > self.since_ns

    def interrupt(self) -> None:
        self._closed = True
        # the SDK hands out a SocketIO over a unix socket: shut down the socket itself, which
        # (unlike close) wakes a thread blocked reading it
        raw_socket = getattr(self._socket, "_sock", self._socket)
        if isinstance(raw_socket, socket.socket):
            with contextlib.suppress(OSError):
                raw_socket.shutdown(socket.SHUT_RDWR)


def _timestamp(raw: bytes) -> str | None:
    try:
        return format_ns(parse_ns(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None


def _handle(container: Any) -> Handle:
    running = bool(container.attrs.get("State", {}).get("Running"))
    return Handle(run_id=container.labels.get(LABEL_RUN_ID, ""), ref=container.id, running=running)


def _explain(exc: docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _unavailable(exc: BaseException) -> RuntimeError_:
    if isinstance(exc, docker.errors.APIError):
        return RuntimeError_(f"Docker engine error: {_explain(exc)}")
    return RuntimeUnavailable(f"Docker engine not reachable: {exc}")
