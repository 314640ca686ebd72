"""A long-poll sent from a thread, so a test can act while it waits on the server.

`sent` is set once the whole request has gone out on the socket (httpcore's trace of the
request body), which is as close as a client can tell that the server holds it: a test waits for
that, with a deadline, instead of sleeping and hoping the poll got there.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.support.server import ServerProcess

SENT_TRACE = "http11.send_request_body.complete"


class BackgroundPoll:
    def __init__(self, server: ServerProcess, path: str, timeout: float = 40.0) -> None:
        self.path = path
        self.sent = threading.Event()
        self.response: httpx.Response | None = None
        self.answered_at: float | None = None  # time.monotonic() when the answer arrived
        self.error: BaseException | None = None
        self._server = server
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, name=f"poll {path}", daemon=True)

    def start(self) -> BackgroundPoll:
        self._thread.start()
        return self

    def wait_sent(self, timeout: float = 10.0) -> BackgroundPoll:
        """Until the request is on its way to the server; AssertionError after `timeout` seconds."""
        if not self.sent.wait(timeout):
            raise AssertionError(f"GET {self.path} not sent within {timeout}s (error: {self.error!r})")
        return self

    def join(self, timeout: float) -> httpx.Response:
        """The answer, once it came; AssertionError when none came within `timeout` seconds."""
        self._thread.join(timeout)
        if self.response is None:
            raise AssertionError(f"GET {self.path} not answered within {timeout}s (error: {self.error!r})")
        return self.response

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if name == SENT_TRACE:
            self.sent.set()

    def _run(self) -> None:
        try:
            with self._server.client(timeout=self._timeout) as http:
                response = http.get(self.path, extensions={"trace": self._trace})
                self.answered_at = time.monotonic()
            self.response = response
        except BaseException as exc:  # reported by join()
            self.error = exc
