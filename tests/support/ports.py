from __future__ import annotations

import os
import shutil
import socket
import time
from typing import NoReturn

import pytest

IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def require_binary(path_or_name: str, what: str) -> str:
    """The binary's path; skips the test when it is missing, but fails under CI (nothing skipped quietly)."""
    found = path_or_name if os.path.isabs(path_or_name) and os.access(path_or_name, os.X_OK) else None
    found = found or shutil.which(path_or_name)
    if found:
        return found
    unavailable(f"{what} is required but {path_or_name!r} was not found")


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of `message`; under CI fail it instead (nothing skipped quietly)."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
