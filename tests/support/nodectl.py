"""Helpers for nodectl tests: run the real CLI in-process (CliRunner), as a subprocess or under a pty."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from nodeapi import models as m
from nodeapi.client import Calls, Client
from nodectl.app import app
from tests.support.server import REPO_ROOT

ANSI_ESCAPE = "\x1b["


def base_env(server_url: str | None, config_home: Path, **extra: str) -> dict[str, str]:
    """nodectl's environment: this server, an isolated config dir, nothing inherited that changes output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NODECTL_") and k not in ("NO_COLOR", "EDITOR", "VISUAL")
    }
    env["XDG_CONFIG_HOME"] = str(config_home)
    if server_url:
        env["NODECTL_SERVER"] = server_url
    env.update(extra)
    return env


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """The CLI in-process. CliRunner's env only adds variables, so unset the ones tests must not inherit."""
    unset: dict[str, str | None] = {
        k: None for k in ("NODECTL_SERVER", "NODECTL_TOKEN", "NODECTL_CONTEXT", "NODECTL_CA", "NO_COLOR")
    }
    return CliRunner().invoke(app, list(args), env={**unset, **env}, input=input, catch_exceptions=False)


def run(
    env: dict[str, str], *args: str, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m nodectl ARGS` as a real process with pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "nodectl", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def run_in_pty(
    env: dict[str, str], *args: str, answer: str | None = None, timeout: float = 20.0
) -> tuple[int, str]:
    """`python -m nodectl ARGS` with stdin/stdout/stderr on a pseudo-terminal; (exit code, all output).

    `answer` is typed once the process prints a `[y/N]` prompt."""
    master, slave = pty.openpty()
    os.set_inheritable(slave, True)
    env = {**env, "COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nodectl", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
                if not answered and b"[y/N]" in b"".join(chunks):
                    os.write(master, answer.encode())  # type: ignore[union-attr]
                    answered = True
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def heartbeat(
    server_url: str,
    node_id: str,
    labels: dict[str, str] | None = None,
    max_concurrent: int = 2,
    token: str | None = None,
) -> m.HeartbeatResponse:
    with Client(server_url, token) as client:
        return client.send(
            Calls.heartbeat(
                m.HeartbeatRequest(
                    node_id=node_id, labels=labels or {}, capacity=m.Capacity(max_concurrent=max_concurrent)
                )
            )
        )


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if line]
