"""The process runtime's launcher: one long-lived `procwrap.py --serve` per nodemanager.

A new Python interpreter per run cost about 90 ms of CPU; the spawner is started once and forks
a supervisor per run (procwrap.serve), which then works exactly as the command-line form does:
detached, recording output and exit code in the run's state directory, so adoption after a
nodemanager restart is unchanged. What the spawner adds is news: each supervisor sends the
started record and the exit code over the socket the requests came in on, so the nodemanager
learns of an exit at once instead of polling for it.

The socket is a SOCK_SEQPACKET pair (one message, one JSON object) held as raw descriptors.
The spawner exits when the nodemanager's end closes; supervisors already forked keep running.
Messages are a fast path only: a spawner or socket that went away leaves the runtime reading
the state files, as it does for runs it adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from nodemanager.runtime import procwrap

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 16


class SpawnerGone(Exception):
    """The spawner cannot take requests (it exited, or could not be started)."""


class _Run:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()


class Spawner:
    def __init__(self, python: str, log_path: Path) -> None:
        self.python = python
        self.log_path = log_path
        self._fd: int | None = None
        self._pid: int | None = None
        self._runs: dict[str, _Run] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle --------------------------------------------------------------------
    def _ensure_running(self) -> int:
        if self._fd is not None and self._pid is not None and _alive(self._pid):
            return self._fd
        self._close_fd()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("ab") as log_file:
                # the launcher forks the spawner off and exits, so the spawner is nobody's child here
                process = subprocess.Popen(
                    [self.python, "-I", "-c", _DETACH, procwrap.__file__],
                    stdin=theirs.fileno(),
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    close_fds=True,
                )
                pid_text, _ = process.communicate(timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            raise SpawnerGone(f"cannot start the spawner: {exc}") from exc
        finally:
            theirs.close()
        if process.returncode != 0 or not pid_text.strip().isdigit():
            ours.close()
            raise SpawnerGone(f"the spawner did not start (exit {process.returncode}); see {self.log_path}")
        self._pid = int(pid_text)
        self._fd = ours.detach()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._read)
        return self._fd

    def close(self) -> None:
        """The spawner exits once its socket closes; supervisors it forked keep running."""
        self._close_fd()
        for run in self._runs.values():
            _fail(run, SpawnerGone("the runtime was closed"))
        self._runs.clear()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)

    # requests -----------------------------------------------------------------------
    async def launch(self, request: dict[str, Any], patience: float) -> dict[str, Any]:
        """Fork a supervisor for `request` (procwrap.serve); its started record, which may hold
        an `error`. SpawnerGone when no spawner takes it; TimeoutError without an answer within
        `patience` seconds."""
        run_id = request["run_id"]
        fd = self._ensure_running()
        loop = asyncio.get_running_loop()
        run = self._runs[run_id] = _Run(loop)
        try:
            await self._send(fd, json.dumps(request).encode())
            return await asyncio.wait_for(asyncio.shield(run.started), patience)
        except BaseException:
            self.forget(run_id)
            raise

    def exit_signal(self, run_id: str) -> asyncio.Future[int] | None:
        """Done when the run's supervisor said it exited; None when no word will come."""
        run = self._runs.get(run_id)
        if run is None or (run.exited.done() and run.exited.exception() is not None):
            return None
        return run.exited

    def forget(self, run_id: str) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            _fail(run, SpawnerGone("forgotten"))

    async def _send(self, fd: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                os.write(fd, data)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(fd, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(fd)
            except OSError as exc:
                self._close_fd()
                raise SpawnerGone(f"the spawner is gone: {exc}") from exc

    def _read(self) -> None:
        fd = self._fd
        while fd is not None:
            try:
                data = os.read(fd, MAX_MESSAGE_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                log.warning("the process runtime's spawner closed its socket; starting another on demand")
                self.close()
                return
            with contextlib.suppress(ValueError):
                self._deliver(json.loads(data))

    def _deliver(self, message: dict[str, Any]) -> None:
        run = self._runs.get(str(message.get("run_id")))
        if run is None:
            return
        if "exit_code" in message:
            if not run.exited.done():
                run.exited.set_result(int(message["exit_code"]))
            return
        if not run.started.done():
            run.started.set_result(message)
        if "error" in message and not run.exited.done():
            run.exited.set_exception(SpawnerGone("did not start"))
            run.exited.exception()  # retrieved: nobody has to wait for it


def _fail(run: _Run, exc: Exception) -> None:
    for future in (run.started, run.exited):
        if not future.done():
            future.set_exception(exc)
            future.exception()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# run by `python -I -c`: fork, print the spawner's pid, and exit; the grandchild serves
_DETACH = """
import os, runpy, sys
path = sys.argv[1]
pid = os.fork()
if pid:
    print(pid, flush=True)
    os._exit(0)
os.setsid()
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
sys.argv = [path, "--serve"]
runpy.run_path(path, run_name="__main__")
"""
