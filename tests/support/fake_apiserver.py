"""A stand-in apiserver that states whatever version a test wants (X-Agentnodes-Version), answers
canned JSON and records every request: the version skew tests of nodectl and the nodemanager."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from nodeapi.version import VERSION_HEADER


class FakeApiServer:
    """`answers` maps (method, path) to (status, JSON body); anything else answers 404.
    `version` may be changed while it serves; None sends no version header at all."""

    def __init__(self, version: str | None, answers: dict[tuple[str, str], tuple[int, Any]] | None = None):
        self.version = version
        self.answers = {("GET", "/version"): (200, {"version": version}), **(answers or {})}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def set_version(self, version: str | None) -> None:
        self.version = version
        self.answers[("GET", "/version")] = (200, {"version": version})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                fake.requests.append((self.command, path))
                status, body = fake.answers.get((self.command, path), (404, {"detail": "not found"}))
                payload = b"" if status == 204 else json.dumps(body).encode()
                self.send_response(status)
                if fake.version is not None:
                    self.send_header(VERSION_HEADER, fake.version)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def paths(self, method: str | None = None) -> list[str]:
        return [path for verb, path in self.requests if method is None or verb == method]

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
