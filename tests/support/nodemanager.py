"""A real nodemanager process (`python -m nodemanager`) for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_CONTAINER_LABELS = "agentnodes.test=1"


class NodeManagerProcess:
    """`start()` it, then `terminate()` (SIGTERM), `kill()` (SIGKILL) or `stop()` at teardown;
    `pause()` / `resume()` freeze and thaw it (SIGSTOP / SIGCONT).

    Every container it starts carries `agentnodes.test=1`, so tests remove them by label.
    Its output goes to `log_path`; restarting appends to the same file.
    """

    def __init__(
        self, api_server_url: str, workdir: Path, node_id: str, env: dict[str, str] | None = None
    ) -> None:
        self.node_id = node_id
        self.log_path = workdir / f"nodemanager-{node_id}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "RUN_", "API_SERVER"))}
        self.env.update(
            {
                "API_SERVER_URL": api_server_url,
                "NODE_ID": node_id,
                "WORKSPACE_DIR": str(workdir / f"workspaces-{node_id}"),
                "RUNTIME": "docker",
                "IMAGE_PULL_POLICY": "never",
                "DOCKER_NETWORK": "none",
                "CONTAINER_LABELS": TEST_CONTAINER_LABELS,
                "MAX_CONCURRENT": "4",
                "STOP_GRACE": "2",
                "LOG_LEVEL": "DEBUG",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    def start(self) -> NodeManagerProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "nodemanager"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        return self._process.wait(timeout)

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the daemon freezes (no heartbeats, no events) while its runs go on."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: the daemon carries on where it froze."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def signal(self, signum: int) -> None:
        """Send `signum` (e.g. SIGSTOP, SIGCONT) to the daemon alone, not to its runs."""
        assert self._process is not None
        assert self._process.poll() is None
        self._process.send_signal(signum)

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return self._process.poll() if self._process else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        if self.running and self._paused:
            self.resume()  # a frozen daemon would not act on SIGTERM
        if self.running:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-30_000:]
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if not self.running:
                raise RuntimeError(f"nodemanager exited:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in the nodemanager log after {timeout}s:\n{self.log()}")
