"""The supervisor of one process run, detached from the nodemanager (ProcessRuntime).

Two ways in, standard library only. `python -I procwrap.py STATE_DIR [OPTIONS] -- COMMAND...`
forks into the background, starts a new session, and runs COMMAND in a process group of its own.
`python -I procwrap.py --serve` is the spawner (spawner.py): one interpreter per nodemanager that
reads launch requests from the socket on its stdin and forks one such supervisor per run, so a
run costs a fork of a small process instead of a new interpreter; the forked supervisor also
tells the nodemanager over that socket when the run started and when it exited. Either way the
nodemanager is not the supervisor's parent, so a run survives a nodemanager restart, and the
supervisor still records the output and the exit code:

- `started.json`  {"pid", "start_ticks", "wrapper_pid", "wrapper_start_ticks", "started_at"} or {"error"}
- `output.log`    one record a line: `<RFC 3339 ns timestamp> <o|e> <raw bytes of the line>`
- `exit_code`     the exit status (128 + N when killed by signal N, as Docker reports it); a
                  second line, when output was lost, is one more `output.log` record saying why

SIGTERM / SIGINT / SIGHUP sent to the wrapper are forwarded to the command's group.

OPTIONS confine COMMAND (not the wrapper, which must outlive it to record its end):
`--cgroup DIR` moves it into that cgroup v2 before it executes; `--address-space BYTES` sets its
RLIMIT_AS, where no cgroup can hold it to its memory.

A full disk must not turn a run that completed into one that vanished: the exit code's file is
reserved (written, so its space is allocated) before the command starts and overwritten in place
at the end, and output that cannot be written any more is drained and dropped, so the command
neither blocks on a full pipe nor dies of SIGPIPE. The first write error is kept and reported as
the record on the exit code's second line, which the runtime shows as the run's last output line.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Notify = Callable[[dict[str, Any]], None]

MAX_LINE_BYTES = 64 * 1024
DRAIN_AFTER_EXIT_SECONDS = 2.0  # a background grandchild may hold the pipes open forever


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


EXIT_CODE_RESERVE = 4096  # bytes: the code and one record saying why output was lost


def reserve_exit_code(state_dir: Path) -> None:
    """Allocate the exit code's file now, while there is room (best effort)."""
    with contextlib.suppress(OSError):
        (state_dir / "exit_code.tmp").write_bytes(b" " * EXIT_CODE_RESERVE)


def write_exit_code(state_dir: Path, code: int, note: bytes = b"") -> None:
    """`code`, and `note` (an output record) on a second line, into the reserved file: overwriting
    space already allocated needs none (a new file is created when nothing was reserved)."""
    temporary = state_dir / "exit_code.tmp"
    content = (str(code).encode() + (b"\n" + note if note else b""))[:EXIT_CODE_RESERVE]
    try:
        with temporary.open("r+b") as file:
            file.write(content)
            file.truncate()
    except FileNotFoundError:
        temporary.write_bytes(content)
    os.replace(temporary, state_dir / "exit_code")


class OutputRecorder:
    def __init__(self, path: Path) -> None:
        self._last_ns = 0
        self._pending: dict[bytes, bytes] = {b"o": b"", b"e": b""}
        self.failure: bytes = b""  # the record telling why output stopped being recorded
        self._file: Any = None
        try:
            self._file = path.open("ab", buffering=0)
        except OSError as exc:
            self._failed(exc)

    def _now(self) -> bytes:
        # strictly increasing, so `since` never confuses two lines
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        seconds, nanos = divmod(self._last_ns, 1_000_000_000)
        return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z").encode()

    def feed(self, stream: bytes, data: bytes) -> None:
        buffer = self._pending[stream] + data
        while (newline := buffer.find(b"\n")) >= 0:
            self._write(stream, buffer[:newline])
            buffer = buffer[newline + 1 :]
        if len(buffer) >= MAX_LINE_BYTES:
            self._write(stream, buffer)
            buffer = b""
        self._pending[stream] = buffer

    def flush(self) -> None:
        for stream, rest in self._pending.items():
            if rest:
                self._write(stream, rest)
                self._pending[stream] = b""

    def _write(self, stream: bytes, line: bytes) -> None:
        if self.failure:
            return  # output is drained and dropped from the first write that failed
        # stamped when complete, so the stamps rise in file order and `since` never skips a line
        try:
            self._file.write(self._now() + b" " + stream + b" " + line + b"\n")
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        text = f"procwrap: output dropped from here on, it cannot be recorded: {exc}"
        self.failure = self._now() + b" e " + text.encode(errors="replace")

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()


def pump(child: subprocess.Popen[bytes], recorder: OutputRecorder) -> None:
    assert child.stdout is not None
    assert child.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ, b"o")
    selector.register(child.stderr, selectors.EVENT_READ, b"e")
    exited_at: float | None = None
    while selector.get_map():
        for key, _ in selector.select(timeout=0.5):
            data = os.read(key.fd, 65536)
            if data:
                recorder.feed(key.data, data)
            else:
                selector.unregister(key.fileobj)
        if exited_at is None and child.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > DRAIN_AFTER_EXIT_SECONDS:
            break
    selector.close()


def confine(cgroup: str | None, address_space: int | None) -> None:
    """In the forked child, before it executes the command."""
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def supervise(
    state_dir: Path,
    command: list[str],
    cgroup: str | None = None,
    address_space: int | None = None,
    *,
    env: dict[str, str] | None = None,
    notify: Notify | None = None,
) -> int:
    """Run `command` to its end, recording it in `state_dir`; `notify` hears of its start (the
    started record) and of its exit ({"exit_code"}), after each is on disk."""
    tell = notify or (lambda _: None)
    reserve_exit_code(state_dir)
    try:
        child = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
            # the wrapper is single-threaded, so a preexec_fn is safe here
            preexec_fn=(lambda: confine(cgroup, address_space)) if cgroup or address_space else None,
        )
    except OSError as exc:
        error = {"error": f"cannot execute {command[0]!r}: {exc}"}
        write_json_atomically(state_dir / "started.json", error)
        write_exit_code(state_dir, 127)
        tell(error)
        return 127
    except subprocess.SubprocessError as exc:  # confine() failed: the node's doing, not the run's
        error = {"error": f"cannot confine the run (cgroup or rlimit): {exc}", "cause": "node"}
        write_json_atomically(state_dir / "started.json", error)
        write_exit_code(state_dir, 125)
        tell(error)
        return 125

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    started = {
        "pid": child.pid,
        "start_ticks": start_ticks(child.pid),
        "wrapper_pid": os.getpid(),
        "wrapper_start_ticks": start_ticks(os.getpid()),
        "started_at": time.time(),
    }
    write_json_atomically(state_dir / "started.json", started)
    tell(started)
    recorder = OutputRecorder(state_dir / "output.log")
    try:
        pump(child, recorder)
    finally:
        recorder.close()
    status = child.wait()
    code = status if status >= 0 else 128 - status
    write_exit_code(state_dir, code, recorder.failure)
    tell({"exit_code": code})
    return code


# ---------------------------------------------------------------------------- the spawner

MAX_REQUEST_BYTES = 1 << 20
NOTIFY_PATIENCE = 5.0  # seconds a supervisor keeps trying to tell a slow nodemanager


def serve(channel: socket.socket) -> int:
    """Fork one supervisor per launch request read from `channel` (a SOCK_SEQPACKET socket, one
    JSON request a message), until the nodemanager's end closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the supervisors' exits
    while True:
        try:
            message = channel.recv(MAX_REQUEST_BYTES)
        except InterruptedError:
            continue
        if not message:
            return 0
        request = json.loads(message)
        try:
            pid = os.fork()
        except OSError as exc:
            _send(channel, {"run_id": request.get("run_id"), "error": f"cannot fork: {exc}", "cause": "node"})
            continue
        if pid == 0:
            os._exit(_supervise_forked(channel, request))


def _supervise_forked(channel: socket.socket, request: dict[str, Any]) -> int:
    """In the forked child: detach, then supervise the run as the command-line form does."""
    run_id = request["run_id"]
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this process waits for its command
        state_dir = Path(request["state_dir"])
        wrapper_log = os.open(state_dir / "wrapper.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(wrapper_log, 2)
        os.close(wrapper_log)
        os.chdir(request["cwd"])
        return supervise(
            state_dir,
            request["command"],
            request.get("cgroup"),
            request.get("address_space"),
            env=request["env"],
            notify=lambda message: _send(channel, {"run_id": run_id, **message}),
        )
    except BaseException as exc:
        print(f"procwrap: {exc!r}", file=sys.stderr)
        _send(channel, {"run_id": run_id, "error": f"the run's supervisor failed: {exc!r}", "cause": "node"})
        return 125


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    """Best effort, never blocking for long: a nodemanager that restarted reads the state files.
    MSG_DONTWAIT, since a timeout on the shared socket would make the spawner's reads non-blocking."""
    data = json.dumps(message).encode()
    deadline = time.monotonic() + NOTIFY_PATIENCE
    while True:
        try:
            channel.send(data, socket.MSG_DONTWAIT)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        except OSError:
            return


USAGE = (
    "usage: procwrap.py STATE_DIR [--cgroup DIR] [--address-space BYTES] -- COMMAND [ARG...]\n"
    "       procwrap.py --serve   (launch requests on the SOCK_SEQPACKET socket on stdin)"
)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--serve"]:
        return serve(socket.socket(fileno=0))
    if len(argv) < 2 or "--" not in argv[2:]:
        print(USAGE, file=sys.stderr)
        return 2
    separator = argv.index("--", 2)
    state_dir, options, command = Path(argv[1]), argv[2:separator], argv[separator + 1 :]
    settings = dict(zip(options[::2], options[1::2], strict=False))
    if not command or len(options) % 2 or not set(settings) <= {"--cgroup", "--address-space"}:
        print(USAGE, file=sys.stderr)
        return 2
    address_space = int(settings["--address-space"]) if "--address-space" in settings else None
    if os.fork():
        return 0  # the launcher returns at once; the grandchild is reparented and supervises
    os.setsid()
    try:
        code = supervise(state_dir, command, settings.get("--cgroup"), address_space)
    except BaseException as exc:
        print(f"procwrap: {exc!r}", file=sys.stderr)
        code = 125
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
