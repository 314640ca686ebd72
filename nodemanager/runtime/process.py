"""ProcessRuntime: runs as local processes, for nodes without a Docker engine.

Each run gets a state directory `<state_root>/<run_id>/` and a detached supervisor
(procwrap.py) that records its output with timestamps and its exit code, so a restarted
nodemanager finds running runs (pid + start time check) and exited ones with their code.
Supervisors are forked by one long-lived spawner (spawner.py), which also brings word of each
start and exit; without it (it could not be started) each run gets an interpreter of its own.

Limits, unlike DockerRuntime: no isolation at all. The command runs as the nodemanager's
user, sees the host's files and network (proxy settings are only environment variables it may
ignore), and `image` is recorded but not used. Use it for trusted workloads and development.
A run's memory is held by a cgroup v2 of its own where the node can make one (cgroups.py), else
by RLIMIT_AS; a run asking for no network or a read-only root file system is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nodemanager.runtime import procwrap
from nodemanager.runtime.base import (
    Allocatable,
    Handle,
    LogLine,
    RunNotFound,
    RunSpec,
    RunState,
    Runtime,
    RuntimeError_,
    StartFailed,
)
from nodemanager.runtime.cgroups import MEBIBYTE, RunCgroups, host_allocatable, oom_kills
from nodemanager.runtime.lines import decode_line
from nodemanager.runtime.spawner import Spawner, SpawnerGone
from nodemanager.runtime.timestamps import parse_ns
from nodemanager.workspace import validate_run_id

INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")  # never the nodemanager's own secrets
UNCONFINABLE = (
    "the process runtime cannot confine a run's network or root file system "
    "(sandbox network none, read_only_rootfs): run it on a node with the Docker runtime"
)
_STREAMS = {b"o": "stdout", b"e": "stderr"}
SPAWNER_LOG = "spawner.log"  # in the state root: not a run directory (no spec.json)
# the exit code file is still read this often while the spawner's word on the exit is awaited
WORD_PATIENCE = 1.0
log = logging.getLogger(__name__)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(
        self,
        node_id: str,
        state_root: Path | str,
        *,
        python: str = sys.executable,
        inherited_env: Sequence[str] = INHERITED_ENV,
        start_timeout: float = 10.0,
        poll_interval: float = 0.1,
        cgroups: RunCgroups | None = None,
    ) -> None:
        self.node_id = node_id
        self.state_root = Path(state_root).absolute()
        self.python = python
        self.inherited_env = tuple(inherited_env)
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.cgroups = cgroups
        self.memory_enforcement = "cgroup" if cgroups is not None else "rlimit"
        self._spawner = Spawner(python, self.state_root / SPAWNER_LOG)

    def _dir(self, run_id: str) -> Path:
        return self.state_root / validate_run_id(run_id)

    def _known_dir(self, run_id: str) -> Path:
        run_dir = self._dir(run_id)
        if not (run_dir / "spec.json").exists():
            raise RunNotFound(f"no process run {run_id} on this node")
        return run_dir

    # ------------------------------------------------------------------ start

    async def start(self, spec: RunSpec) -> Handle:
        if not spec.command:
            raise StartFailed("the process runtime needs a command (it does not use the image's default)")
        if spec.limits.no_network or spec.limits.read_only_rootfs:
            raise StartFailed(UNCONFINABLE, cause="run")
        run_dir = self._dir(spec.run_id)
        self.state_root.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise StartFailed(f"run {spec.run_id} already exists on this node") from exc
        # the environment is not written down: it may hold credentials
        record: dict[str, Any] = {"run_id": spec.run_id, "node_id": self.node_id, "image": spec.image}
        record |= {"command": spec.command, "labels": spec.labels, "created_at": time.time()}
        record |= {"attempt": spec.attempt, "deadline_seconds": spec.deadline_seconds}
        try:
            record["cgroup"] = await asyncio.to_thread(self._cgroup, spec)
        except OSError as exc:
            await self._discard(run_dir)
            raise StartFailed(f"cannot make the cgroup of run {spec.run_id}: {exc}", cause="node") from exc
        (run_dir / "spec.json").write_text(json.dumps(record))
        try:
            started = await self._spawn(spec, run_dir, record["cgroup"])
        except BaseException:
            await self._discard(run_dir)
            raise
        return Handle(spec.run_id, ref=str(started["pid"]), running=True)

    async def _spawn(self, spec: RunSpec, run_dir: Path, cgroup: str | None) -> dict[str, Any]:
        """Through the spawner; through an interpreter of the run's own if there is none."""
        spec.workspace.mkdir(parents=True, exist_ok=True)
        request = {
            "run_id": spec.run_id,
            "state_dir": str(run_dir),
            "cwd": str(spec.workspace),
            "command": spec.command,
            "env": self._environment(spec),
            "cgroup": cgroup,
            "address_space": self._address_space(spec, cgroup),
        }
        try:
            started = await self._spawner.launch(request, self.start_timeout)
        except SpawnerGone as exc:
            log.warning("run %s: no spawner (%s); starting its supervisor on its own", spec.run_id, exc)
            await asyncio.to_thread(self._launch, spec, run_dir, cgroup)
            return await self._await_started(run_dir)
        except TimeoutError as exc:
            raise StartFailed(f"run {spec.run_id} did not start within {self.start_timeout}s") from exc
        if "error" in started:
            raise StartFailed(str(started["error"]), cause=str(started.get("cause", "run")))
        return started

    def _environment(self, spec: RunSpec) -> dict[str, str]:
        env = {name: os.environ[name] for name in self.inherited_env if name in os.environ}
        env["HOME"] = str(spec.workspace)
        env.update({key: str(value) for key, value in spec.env.items()})
        return env

    @staticmethod
    def _address_space(spec: RunSpec, cgroup: str | None) -> int | None:
        if cgroup is None and spec.limits.memory_mb is not None:
            return spec.limits.memory_mb * MEBIBYTE
        return None

    def _cgroup(self, spec: RunSpec) -> str | None:
        if self.cgroups is None:
            return None
        return str(self.cgroups.create(spec.run_id, spec.limits))

    def _launch(self, spec: RunSpec, run_dir: Path, cgroup: str | None) -> None:
        env = self._environment(spec)
        options = ["--cgroup", cgroup] if cgroup is not None else []
        if (address_space := self._address_space(spec, cgroup)) is not None:
            options += ["--address-space", str(address_space)]
        with (run_dir / "wrapper.log").open("ab") as wrapper_log:
            try:
                # -I: the run's PYTHON* variables are for the command, not for the wrapper
                launcher = subprocess.run(
                    [self.python, "-I", procwrap.__file__, str(run_dir), *options, "--", *spec.command],
                    cwd=spec.workspace,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=wrapper_log,
                    timeout=self.start_timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StartFailed(f"could not launch run {spec.run_id}: {exc}") from exc
        if launcher.returncode != 0:
            detail = (run_dir / "wrapper.log").read_text(errors="replace").strip()
            raise StartFailed(f"could not launch run {spec.run_id}: {detail or launcher.returncode}")

    async def _await_started(self, run_dir: Path) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            started = _read_json(run_dir / "started.json")
            if started is not None:
                if "error" in started:
                    raise StartFailed(str(started["error"]), cause=str(started.get("cause", "run")))
                return started
            await asyncio.sleep(0.02)
        raise StartFailed(f"run {run_dir.name} did not start within {self.start_timeout}s")

    async def _discard(self, run_dir: Path) -> None:
        started = _read_json(run_dir / "started.json")
        if started and "pid" in started:
            _signal_group(started, signal.SIGKILL)
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove, run_dir.name)
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

    # ------------------------------------------------------------------ inspect

    async def list(self) -> list[Handle]:
        if not self.state_root.is_dir():
            return []
        handles = []
        for run_dir in sorted(self.state_root.iterdir()):
            if (run_dir / "spec.json").exists():
                handles.append(self._handle(run_dir))
        return handles

    def _handle(self, run_dir: Path) -> Handle:
        started = _read_json(run_dir / "started.json") or {}
        running = _read_exit_code(run_dir) is None and _alive(started)
        record = _read_json(run_dir / "spec.json") or {}
        attempt, deadline = record.get("attempt"), record.get("deadline_seconds")
        return Handle(
            run_dir.name,
            ref=str(started.get("pid", "")),
            running=running,
            attempt=attempt if isinstance(attempt, int) else None,
            deadline_seconds=deadline if isinstance(deadline, int) else None,
        )

    async def state(self, run_id: str) -> RunState:
        run_dir = self._known_dir(run_id)
        started = _read_json(run_dir / "started.json") or {}
        exit_code = _read_exit_code(run_dir)
        started_at = started.get("started_at")
        cgroup = (_read_json(run_dir / "spec.json") or {}).get("cgroup")
        return RunState(
            running=exit_code is None and _alive(started),
            started_at=datetime.fromtimestamp(started_at, UTC)
            if isinstance(started_at, int | float)
            else None,
            exit_code=exit_code,
            # RLIMIT_AS leaves no record: an allocation fails inside the run, which exits as it will
            oom_killed=isinstance(cgroup, str) and oom_kills(Path(cgroup)) > 0,
        )

    async def allocatable(self) -> Allocatable:
        return await asyncio.to_thread(host_allocatable)

    async def wait(self, run_id: str) -> int:
        run_dir = self._known_dir(run_id)
        while True:
            exit_code = _read_exit_code(run_dir)
            if exit_code is not None:
                return exit_code
            if not _alive(_read_json(run_dir / "started.json") or {}):
                # the exit code may have been written between the two reads
                exit_code = _read_exit_code(run_dir)
                if exit_code is not None:
                    return exit_code
                raise RuntimeError_(f"run {run_id} ended without an exit code (its supervisor was killed)")
            await self._until_exit_or(run_id, WORD_PATIENCE)

    async def _until_exit_or(self, run_id: str, seconds: float) -> None:
        """Sleep `seconds`, or less once the spawner says the run exited; runs it did not start (or
        whose word was lost) are looked at every poll_interval."""
        exited = self._spawner.exit_signal(run_id)
        if exited is None or exited.done():
            await asyncio.sleep(self.poll_interval)
        else:
            await asyncio.wait([exited], timeout=seconds)

    async def logs(self, run_id: str, since: str | None = None) -> AsyncIterator[LogLine]:
        run_dir = self._known_dir(run_id)
        since_ns = parse_ns(since) if since else None
        path = run_dir / "output.log"
        offset = 0
        rest = b""
        while True:
            finished = _read_exit_code(run_dir) is not None or not _alive(
                _read_json(run_dir / "started.json") or {}
            )
            chunk = _read_from(path, offset)
            offset += len(chunk)
            *records, rest = (rest + chunk).split(b"\n")
            for record in records:
                line = _parse_record(record)
                if line is not None and (since_ns is None or parse_ns(line.ts or "") > since_ns):
                    yield line
            if finished and not chunk:
                failure = _output_failure(run_dir)
                if failure is not None and (since_ns is None or parse_ns(failure.ts or "") > since_ns):
                    yield failure  # why the output ends early: the run's last line
                return
            if not chunk:
                await self._until_exit_or(run_id, self.poll_interval)

    # ------------------------------------------------------------------ stop

    async def stop(self, run_id: str, grace: float) -> None:
        run_dir = self._known_dir(run_id)
        started = _read_json(run_dir / "started.json") or {}
        if _read_exit_code(run_dir) is not None or not _alive(started):
            return
        _signal_group(started, signal.SIGTERM)
        if await self._exited_within(run_dir, grace):
            return
        _signal_group(started, signal.SIGKILL)
        await self._exited_within(run_dir, 5.0)

    async def _exited_within(self, run_dir: Path, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if _read_exit_code(run_dir) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(self.poll_interval, 0.05))

    async def remove(self, run_id: str) -> None:
        """Forget the run and its recorded output (killing it if it still runs)."""
        run_dir = self._dir(run_id)
        if not run_dir.exists():
            return
        started = _read_json(run_dir / "started.json") or {}
        if _read_exit_code(run_dir) is None and _alive(started):
            _signal_group(started, signal.SIGKILL)
            await self._exited_within(run_dir, 5.0)
        self._spawner.forget(run_id)
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove, run_id)
        await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def close(self) -> None:
        self._spawner.close()

    async def version(self) -> str:
        return f"process (python {platform.python_version()}, {platform.system()} {platform.release()})"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_exit_code(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "exit_code").read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def _output_failure(run_dir: Path) -> LogLine | None:
    """The record procwrap kept when it could not write the output any more (a full disk)."""
    try:
        _, _, note = (run_dir / "exit_code").read_bytes().partition(b"\n")
    except OSError:
        return None
    return _parse_record(note.rstrip(b"\n")) if note else None


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(1024 * 1024)
    except FileNotFoundError:
        return b""


def _parse_record(record: bytes) -> LogLine | None:
    stamp, _, rest = record.partition(b" ")
    stream, _, raw = rest.partition(b" ")
    if stream not in _STREAMS:
        return None
    return LogLine(_STREAMS[stream], decode_line(raw), stamp.decode("ascii", errors="replace"))


def _process_alive(pid: int | None, ticks: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): existence is all we can check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie nobody reaped has ended
        return False
    return ticks is None or int(fields[19]) == ticks


def _alive(started: dict[str, Any]) -> bool:
    return _process_alive(started.get("wrapper_pid"), started.get("wrapper_start_ticks")) or _process_alive(
        started.get("pid"), started.get("start_ticks")
    )


def _signal_group(started: dict[str, Any], signum: int) -> None:
    """Signal the command's process group, unless its leader's pid now names another process."""
    pid = started.get("pid")
    if not pid or (
        procwrap.start_ticks(pid) is not None
        and started.get("start_ticks") is not None
        and procwrap.start_ticks(pid) != started.get("start_ticks")
    ):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
