"""A throwaway PostgreSQL 15 cluster on a free 127.0.0.1 port (initdb into a temp dir).

Runs as the `postgres` system user when the tests run as root (PostgreSQL refuses root).
`create_database()` gives each test its own empty database and a `postgresql://` URL.
`restart()` stops the postmaster and starts it again on the same data directory and port
(the fault tests); `stop()` removes the cluster.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port, require_binary, wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 30.0


class PostgresServer:
    def __init__(self) -> None:
        self.postgres = require_binary(str(PG_BIN / "postgres"), "PostgreSQL 15")
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.data_dir = self._root / "data"
        self.socket_dir = self._root / "sock"
        self.log_path = self._root / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._counter = itertools.count(1)
        self._as_user = self._user_prefix()

    @staticmethod
    def _user_prefix() -> list[str]:
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root needs `runuser` to start PostgreSQL as the postgres user")
        return [runuser, "-u", "postgres", "--"]

    def start(self) -> PostgresServer:
        self.socket_dir.mkdir(parents=True)
        if self._as_user:
            shutil.chown(self._root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        subprocess.run(
            [
                *self._as_user,
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self._launch()
        return self

    def _launch(self) -> None:
        with self.log_path.open("ab") as log:
            if self._as_user:
                shutil.chown(self.log_path, "postgres")
            self._process = subprocess.Popen(
                [
                    *self._as_user,
                    self.postgres,
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.socket_dir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout=START_TIMEOUT)
            self._wait_accepting()
        except Exception:
            self.stop()
            raise

    def shutdown(self, mode: str = "fast") -> None:
        """Stop the postmaster, keeping the cluster: `fast` (SIGINT: sessions are ended, a clean
        shutdown) or `immediate` (SIGQUIT: no checkpoint, crash recovery at the next start)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        signum = {"fast": "-INT", "immediate": "-QUIT"}[mode]
        subprocess.run([*self._as_user, "kill", signum, str(_postmaster_pid(process))], check=False)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self, mode: str = "fast") -> None:
        """`shutdown(mode)`, then the same cluster again on the same port."""
        self.shutdown(mode)
        self._launch()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            probe = self._psql("postgres", "SELECT 1", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections:\n{self.log()}")

    def _psql(self, database: str, sql: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
            check=check,
            capture_output=True,
            timeout=30,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its postgresql:// URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        self._psql("postgres", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database_url: str, sql: str) -> str:
        """Run SQL through psql against a database of this server; returns the unaligned output."""
        database = database_url.rsplit("/", 1)[1]
        return self._psql(database, sql).stdout.decode()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.shutdown("fast")  # pg_ctl-style fast shutdown: SIGINT to the postmaster
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _postmaster_pid(process: subprocess.Popen[bytes]) -> int:
    """runuser forks the postmaster as its child; without runuser the process is the postmaster."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        pids = children.read_text().split()
    except OSError:
        pids = []
    return int(pids[0]) if pids else process.pid
