"""A long-poll sent from a thread, so a test can act while the server holds it.

`wait_received()` waits, with a deadline, until the apiserver has read the whole request off the
socket: the client has sent it (httpcore's trace of the request body) and the server's end of the
connection has nothing left to read (its receive queue in /proc/net/tcp is empty). From then on
the request is the server's: uvicorn has parsed it and runs its handler, and a stopping server
answers it instead of dropping the connection. That replaces sleeping and hoping it got there.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ServerProcess
from tests.support.wait import eventually

CONNECTED_TRACE = "connection.connect_tcp.complete"
SENT_TRACE = "http11.send_request_body.complete"
ESTABLISHED = "01"


class BackgroundPoll:
    def __init__(self, server: ServerProcess, path: str, timeout: float = 40.0) -> None:
        self.path = path
        self.sent = threading.Event()
        self.response: httpx.Response | None = None
        self.answered_at: float | None = None  # time.monotonic() when the answer arrived
        self.error: BaseException | None = None
        self._server = server
        self._client_port: int | None = None
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, name=f"poll {path}", daemon=True)

    def start(self) -> BackgroundPoll:
        self._thread.start()
        return self

    def wait_received(self, timeout: float = 10.0) -> BackgroundPoll:
        """Until the server has read the whole request; AssertionError after `timeout` seconds."""

        def received() -> bool:
            if self.error is not None:
                raise AssertionError(f"GET {self.path} failed: {self.error!r}")
            if not self.sent.is_set() or self._client_port is None:
                return False
            unread = _unread_bytes(self._server.port, self._client_port)
            return unread == 0

        eventually(received, timeout, interval=0.01, what=f"GET {self.path} read by the server")
        return self

    def join(self, timeout: float) -> httpx.Response:
        """The answer, once it came; AssertionError when none came within `timeout` seconds."""
        self._thread.join(timeout)
        if self.response is None:
            raise AssertionError(f"GET {self.path} not answered within {timeout}s (error: {self.error!r})")
        return self.response

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if name == CONNECTED_TRACE:
            sock: socket.socket = info["return_value"].get_extra_info("socket")
            self._client_port = int(sock.getsockname()[1])
        elif name == SENT_TRACE:
            self.sent.set()

    def _run(self) -> None:
        try:
            with self._server.client(timeout=self._timeout) as http:
                response = http.get(self.path, extensions={"trace": self._trace})
                self.answered_at = time.monotonic()
            self.response = response
        except BaseException as exc:  # reported by wait_received() and join()
            self.error = exc


def _unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes waiting to be read on the server's end of the loopback connection from `client_port`
    (None while there is no such connection)."""
    local = f"0100007F:{server_port:04X}"  # 127.0.0.1, as /proc/net/tcp writes it
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote and fields[3] == ESTABLISHED:
            return int(fields[4].split(":")[1], 16)
    return None
