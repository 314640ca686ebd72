"""A real apiserver process (`python -m server`) on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


class ServerProcess:
    """Start with `start()` (or as a context manager); `base_url` once ready; `stop()` always.
    `kill()` is a crash; `start()` again restarts it on the same port, appending to the same log.

    `env` is added to a clean copy of the environment; DATABASE_URL defaults to a SQLite
    file under `data_dir`. The server's output goes to `log_path`; `log()` returns it.
    With `tls_ca` (the CA that signed the TLS_CERT_FILE in `env`) the server is reached,
    and checked, over https://.
    """

    def __init__(
        self, env: dict[str, str] | None = None, data_dir: Path | None = None, tls_ca: Path | None = None
    ) -> None:
        self.port = free_port()
        self.tls_ca = tls_ca
        self._tls_context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self.base_url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="apiserver-")
            data_dir = Path(self._own_tmp.name)
        self.data_dir = data_dir
        self.log_path = self.data_dir / f"apiserver-{self.port}.log"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("APISERVER_", "NODE_", "RUN_", "HEARTBEAT_")) and key not in _SERVER_VARS
        }
        self.env.update(
            {
                "APISERVER_HOST": "127.0.0.1",
                "APISERVER_PORT": str(self.port),
                "APISERVER_DATA_DIR": str(self.data_dir),
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env or {})
        self.admin_token = self.env.get("ADMIN_TOKEN")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "server"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"apiserver exited with {self._process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(
                    f"{self.base_url}/readyz", timeout=1.0, trust_env=False, verify=self._verify()
                )
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"apiserver not ready after {timeout}s ({last}):\n{self.log()}")

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An httpx client for this server, with the admin token unless another is given."""
        token = token if token is not None else self.admin_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base_url, headers=headers, trust_env=False, timeout=timeout, verify=self._verify()
        )

    def _verify(self) -> ssl.SSLContext | bool:
        return self._tls_context or True

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL (no shutdown at all, as a crash); returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        return process.returncode

    def signal(self, signum: int) -> None:
        """Send `signum` (e.g. SIGSTOP, SIGCONT) to the server's process group."""
        assert self._process is not None
        assert self._process.poll() is None
        os.killpg(self._process.pid, signum)

    def close(self) -> None:
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_SERVER_VARS = frozenset(
    {
        "DATABASE_URL",
        "REDIS_URL",
        "ADMIN_TOKEN",
        "LOG_LEVEL",
        "MAX_BODY_SIZE",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "VIEWER_TOKEN",
        "SECRETS_KEY",
        "SESSION_TTL",
        "PROXY_TEST_URL",
        "PROXY_TEST_HTTPS_URL",
    }
)
