"""The apiserver states its version: `GET /version`, open like /healthz, and a header on every
answer, errors included."""

from __future__ import annotations

from nodeapi import __version__
from nodeapi.version import VERSION_HEADER
from tests.support.server import ServerProcess

TOKENS = {
    "ADMIN_TOKEN": "admin-token-123",
    "VIEWER_TOKEN": "viewer-token-123",
    "NODE_JOIN_TOKEN": "join-1234",
}


def test_version_is_open_and_every_answer_states_it() -> None:
    with ServerProcess(env=TOKENS) as server, server.client(token="") as anonymous:
        answer = anonymous.get("/version")
        assert answer.status_code == 200
        assert answer.json() == {"version": __version__}
        for path, status in (
            ("/version", 200),
            ("/healthz", 200),
            ("/api/v1/nodes", 401),  # refused: no token
            ("/api/v1/nowhere", 404),
            ("/api/v1/nodes/a%2fb", 400),  # refused at the edge, before any routing
        ):
            response = anonymous.get(path)
            assert response.status_code == status, path
            assert response.headers[VERSION_HEADER] == __version__, path
        schema = anonymous.get("/schema/openapi.json").json()
        assert "/version" in schema["paths"]
