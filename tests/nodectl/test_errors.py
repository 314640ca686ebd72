"""nodectl against a server that answers something it cannot read: one line, exit 1, no traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.nodectl import base_env, run


class _Garbage(BaseHTTPRequestHandler):
    """200 OK with bodies that are not what the API answers."""

    def do_GET(self) -> None:
        body = b"<html>proxy error page</html>" if "/nodes" in self.path else b'{"items": "not a list"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def garbage_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("args", [("nodes", "list"), ("runs", "list")])
def test_an_unreadable_answer_is_one_line_and_exit_1(
    garbage_server: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = run(base_env(garbage_server, tmp_path / "config"), *args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: unexpected answer from {garbage_server}/api/v1/")
