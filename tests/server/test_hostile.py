"""Hostile input through a real apiserver process (SQLite and PostgreSQL): malformed ids on every
route, an encoded '/' that must not reach another handler, integer ranges, absurd node_seq jumps,
the heartbeat rate limit, event size and the per-run log cap, and the offline API docs."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from nodeapi.validation import MAX_EVENT_DATA_BYTES, json_pieces
from server.edge import path_problem
from server.services.ratelimit import TokenBuckets
from tests.conftest import ApiServerFactory
from tests.support.server import ServerProcess
from tests.support.wait import eventually

ADMIN = "admin-hostile-token"
VIEWER = "viewer-hostile-token"
JOIN = "join-hostile-token"
TOKENS = {"ADMIN_TOKEN": ADMIN, "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN}
API = "/api/v1"

# raw path segments, sent as they are (no client normalises them)
HOSTILE_IDS = {
    "encoded slash": "n2%2fenv-config",
    "encoded slash, upper case": "n2%2Fenv-config",
    "dot dot": "..",
    "encoded dot dot": "%2e%2e",
    "encoded NUL": "n2%00",
    "5,000 characters": "x" * 5000,
    "unicode": "%C3%A9t%C3%A9-%F0%9F%92%A5",
    "space": "n%202",
    "trailing newline": "n2%0A",
    "encoded backslash": "n2%5Cenv-config",
}
# the same ids as JSON strings, for the heartbeat (its id is in the body)
HOSTILE_BODY_IDS = ["n2/env-config", "..", "n2\x00", "x" * 5000, "été", "n 2", "n2\n", "-n2", ".hidden", ""]


def raw_request(
    server: ServerProcess, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with the path exactly as given (http.client sends the request target as is)."""
    address = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def assert_error(status: int, body: bytes, expected: range | int, what: str) -> dict[str, Any]:
    allowed = range(expected, expected + 1) if isinstance(expected, int) else expected
    assert status in allowed, (what, status, body[:300])
    error = json.loads(body)
    assert error["status_code"] == status, (what, error)
    assert isinstance(error["detail"], str), (what, error)
    assert error["detail"], (what, error)
    assert "extra" in error, (what, error)
    return dict(error)


def register(server: ServerProcess, node_id: str, **body: Any) -> str:
    with server.client(JOIN) as join:
        reply = join.post(f"{API}/nodes/heartbeat", json={"node_id": node_id, **body})
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["node_token"]
    return token


@pytest.fixture
def server(apiserver: ApiServerFactory) -> ServerProcess:
    return apiserver(TOKENS)


def routes(server: ServerProcess) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation in the server's OpenAPI schema."""
    with server.client() as client:
        schema = client.get("/schema/openapi.json").json()
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


MINIMAL_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/v1/nodes/{node_id}"): {"labels": {"a": "b"}},
    ("PUT", "/api/v1/nodes/{node_id}/env-config"): {"env": {"HOSTILE": "1"}},
    ("POST", "/api/v1/nodes/{node_id}/env-config/test-proxy"): {},
    ("POST", "/api/v1/nodes/{node_id}/commands/{command_id}/result"): {"ok": True},
    ("POST", "/api/v1/runs/{run_id}/node-events"): {"node_id": "n1", "events": []},
    ("POST", "/api/v1/nodes/{node_id}/events"): {"runs": []},
}
NODE_ROUTES = ("/work", "/commands/", "/node-events", "/{node_id}/events")


def test_hostile_ids_get_a_4xx_on_every_route(server: ServerProcess) -> None:
    node_token = register(server, "n1")
    register(server, "n2")
    templated = [(m, p) for m, p, _ in routes(server) if "{" in p]
    assert len(templated) >= 14, templated  # every route that takes an id in its path
    for method, template in templated:
        node_route = any(part in template for part in NODE_ROUTES)
        token = node_token if node_route else ADMIN
        body = MINIMAL_BODIES.get((method, template))
        for name, hostile in HOSTILE_IDS.items():
            for param in re.findall(r"{(\w+)}", template):
                path = template.replace(f"{{{param}}}", hostile)
                path = re.sub(r"{node_id}", "n1" if node_route else "n2", path)
                path = re.sub(r"{\w+}", "run-0123456789abcdef0123", path)
                status, _, answer = raw_request(server, method, path, token, body)
                what = f"{method} {template} with {param} = {name}"
                # a node token may act only for its own node: 403 for any other node id
                expected = range(400, 404) if node_route and param == "node_id" else 400
                assert_error(status, answer, expected, what)
    assert server.running


def test_hostile_ids_in_the_heartbeat_body(server: ServerProcess) -> None:
    with server.client(JOIN) as join:
        for node_id in HOSTILE_BODY_IDS:
            reply = join.post(f"{API}/nodes/heartbeat", json={"node_id": node_id})
            assert_error(reply.status_code, reply.content, 400, f"heartbeat node_id {node_id[:20]!r}")
    with server.client() as admin:
        assert admin.get(f"{API}/nodes").json()["total"] == 0  # nothing was registered


def test_an_encoded_slash_never_reaches_another_handler(server: ServerProcess) -> None:
    n2_token = register(server, "n2")
    with server.client() as admin:
        saved = admin.put(f"{API}/nodes/n2/env-config", json={"env": {"KEEP": "me"}})
        assert saved.status_code == 200, saved.text
        before = admin.get(f"{API}/nodes/n2/env-config").json()

        # %252f decodes once to the text "%2f": one odd id, no route takes PUT on /nodes/{id} (405)
        for encoded, put_status in (("%2f", 400), ("%2F", 400), ("%252f", 405)):
            status, _, body = raw_request(
                server, "PUT", f"{API}/nodes/n2{encoded}env-config", ADMIN, {"env": {"EVIL": "1"}}
            )
            assert_error(status, body, put_status, f"PUT n2{encoded}env-config")
            status, _, body = raw_request(server, "DELETE", f"{API}/nodes/n2{encoded}credential", ADMIN)
            assert_error(status, body, 400, f"DELETE n2{encoded}credential")
            status, _, body = raw_request(
                server, "GET", f"{API}/nodes/n2{encoded}env-config?reveal=true", ADMIN
            )
            assert_error(status, body, 400, f"GET n2{encoded}env-config")

        after = admin.get(f"{API}/nodes/n2/env-config").json()
        assert after == before  # n2's env config is unchanged
        assert after["env"] == {"KEEP": "me"}
        assert admin.get(f"{API}/nodes/n2").status_code == 200
        audit = admin.get(f"{API}/audit", params={"target_id": "n2"}).json()["items"]
        assert [entry["action"] for entry in audit].count("env_config.replace") == 1
        assert "env_config.reveal" not in [entry["action"] for entry in audit]
    # n2's credential was not reset either
    with server.client(n2_token) as node:
        assert node.post(f"{API}/nodes/heartbeat", json={"node_id": "n2"}).status_code == 200


def test_integer_ranges_answer_400_not_500(server: ServerProcess) -> None:
    node_token = register(server, "n1", capacity={"max_concurrent": 2})
    with server.client() as admin, server.client(node_token) as node:
        run = admin.post(f"{API}/runs", json={"image": "busybox", "command": ["true"]}).json()
        run_id = eventually(lambda: _placed(admin, run["id"]), what="run placed on n1")
        big = 2**63
        cases: list[tuple[httpx.Response, str]] = [
            (
                node.post(f"{API}/runs/{run_id}/node-events", json=_batch((big, "claimed", {}))),
                "node_seq 2^63",
            ),
            (
                node.post(f"{API}/runs/{run_id}/node-events", json=_batch((2**64, "claimed", {}))),
                "node_seq 2^64",
            ),
            (
                node.post(f"{API}/runs/{run_id}/node-events", json=_batch((2**53 + 1, "claimed", {}))),
                "2^53+1",
            ),
            (node.post(f"{API}/runs/{run_id}/node-events", json=_batch((0, "claimed", {}))), "node_seq 0"),
            (node.post(f"{API}/runs/{run_id}/node-events", json=_batch((-1, "claimed", {}))), "node_seq -1"),
            (
                node.post(
                    f"{API}/runs/{run_id}/node-events", json=_batch((1, "exited", {"exit_code": 2**40}))
                ),
                "exit_code 2^40",
            ),
            (admin.get(f"{API}/runs/{run_id}/events", params={"after": big}), "after 2^63"),
            (admin.get(f"{API}/runs/{run_id}/events", params={"after": 2**53 + 1}), "after 2^53+1"),
            (admin.get(f"{API}/runs/{run_id}/events", params={"after": -1}), "after -1"),
            (admin.get(f"{API}/runs/{run_id}/events", params={"wait": 1e9}), "events wait 1e9"),
            (admin.get(f"{API}/runs", params={"limit": 0}), "limit 0"),
            (admin.get(f"{API}/runs", params={"limit": big}), "limit 2^63"),
            (admin.get(f"{API}/nodes", params={"offset": 10**10}), "offset 1e10"),
            (admin.get(f"{API}/audit", params={"limit": 10**6}), "audit limit"),
            (admin.patch(f"{API}/nodes/n1", json={"max_concurrent": 10_001}), "max_concurrent 10001"),
            (admin.patch(f"{API}/nodes/n1", json={"resource_version": big}), "resource_version 2^63"),
            (admin.patch(f"{API}/nodes/n1", json={}, headers={"If-Match": str(big)}), "If-Match 2^63"),
            (
                admin.patch(f"{API}/nodes/n1", json={}, headers={"If-Match": "\u00b2".encode()}),
                "If-Match superscript",
            ),
            (node.get(f"{API}/nodes/n1/work", params={"wait": big}), "work wait 2^63"),
            (
                node.post(
                    f"{API}/nodes/heartbeat", json={"node_id": "n1", "capacity": {"max_concurrent": 10_001}}
                ),
                "capacity 10001",
            ),
            (
                node.post(
                    f"{API}/nodes/heartbeat", json={"node_id": "n1", "capacity": {"max_concurrent": big}}
                ),
                "capacity 2^63",
            ),
            (
                node.post(f"{API}/nodes/heartbeat", json={"node_id": "n1", "info": {"memory_bytes": big}}),
                "memory_bytes 2^63",
            ),
            (
                admin.post(f"{API}/nodes/n1/env-config/test-proxy", json={"timeout": 1e9}),
                "proxy test timeout 1e9",
            ),
        ]
        for response, what in cases:
            assert_error(response.status_code, response.content, 400, what)
        # the largest documented values are fine
        assert admin.get(f"{API}/runs/{run_id}/events", params={"after": 2**53}).json()["items"] == []
        assert admin.patch(f"{API}/nodes/n1", json={"max_concurrent": 10_000}).status_code == 200
        # and the run still takes its real events
        ack = node.post(
            f"{API}/runs/{run_id}/node-events", json=_batch((1, "claimed", {}), (2, "started", {}))
        )
        assert ack.status_code == 200, ack.text
        assert ack.json()["last_node_seq"] == 2
    assert "Traceback" not in server.log()


def test_a_node_seq_jump_is_refused_and_later_real_events_still_count(server: ServerProcess) -> None:
    node_token = register(server, "n1")
    with server.client() as admin, server.client(node_token) as node:
        run = admin.post(f"{API}/runs", json={"image": "busybox", "command": ["true"]}).json()
        run_id = eventually(lambda: _placed(admin, run["id"]), what="run placed on n1")
        events = f"{API}/runs/{run_id}/node-events"
        assert node.post(events, json=_batch((1, "claimed", {}))).json()["last_node_seq"] == 1

        for seq in (2**53, 1 + 1_000_001, 10**9):
            refused = node.post(events, json=_batch((seq, "exited", {"exit_code": 0})))
            error = assert_error(refused.status_code, refused.content, 400, f"node_seq {seq}")
            assert "node_seq" in error["detail"]
        # a batch holding a jump stores nothing, not even its sane events
        mixed = node.post(events, json=_batch((2, "started", {}), (5_000_000, "log", {"text": "x"})))
        assert_error(mixed.status_code, mixed.content, 400, "batch with a jump")
        assert admin.get(f"{API}/runs/{run_id}").json()["last_node_seq"] == 1

        # exactly the limit is still accepted: node_seq counts up, gaps are allowed
        ack = node.post(events, json=_batch((2, "started", {}), (1 + 1_000_000, "log", {"text": "far"})))
        assert ack.status_code == 200, ack.text
        ack = node.post(events, json=_batch((1_000_002, "exited", {"exit_code": 0})))
        assert ack.status_code == 200, ack.text
        assert ack.json()["status"] == "succeeded"
        assert admin.get(f"{API}/runs/{run_id}").json()["status"] == "succeeded"


def test_heartbeats_past_the_burst_get_429_with_retry_after(apiserver: ApiServerFactory) -> None:
    server = apiserver({**TOKENS, "HEARTBEAT_RATE_BURST": "5", "HEARTBEAT_RATE_PER_SECOND": "0.5"})
    token = register(server, "n1")  # the registration takes the first token
    with server.client(token) as node:
        beat = {"node_id": "n1"}
        answers = [node.post(f"{API}/nodes/heartbeat", json=beat) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        limited = answers[-1]
        error = assert_error(limited.status_code, limited.content, 429, "heartbeat past the burst")
        assert "HEARTBEAT_RATE_BURST" in error["detail"]
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        # other nodes have their own buckets
        other = register(server, "n2")
        with server.client(other) as node2:
            assert node2.post(f"{API}/nodes/heartbeat", json={"node_id": "n2"}).status_code == 200
        # after Retry-After the node is heard again
        eventually(
            lambda: node.post(f"{API}/nodes/heartbeat", json=beat).status_code == 200,
            timeout=retry_after + 3,
            interval=0.5,
            what="a heartbeat after Retry-After",
        )


def test_an_event_above_64_kib_gets_413(server: ServerProcess) -> None:
    node_token = register(server, "n1")
    with server.client() as admin, server.client(node_token) as node:
        run = admin.post(f"{API}/runs", json={"image": "busybox", "command": ["true"]}).json()
        run_id = eventually(lambda: _placed(admin, run["id"]), what="run placed on n1")
        events = f"{API}/runs/{run_id}/node-events"
        too_big = node.post(events, json=_batch((1, "log", {"stream": "stdout", "text": "x" * (65 * 1024)})))
        error = assert_error(too_big.status_code, too_big.content, 413, "65 KiB event")
        assert "65536" in error["detail"]
        assert admin.get(f"{API}/runs/{run_id}").json()["last_node_seq"] == 0  # nothing stored
        fits = node.post(events, json=_batch((1, "log", {"stream": "stdout", "text": "x" * (63 * 1024)})))
        assert fits.status_code == 200, fits.text


def test_log_output_past_the_cap_is_dropped_and_the_run_still_ends(apiserver: ApiServerFactory) -> None:
    server = apiserver({**TOKENS, "RUN_MAX_LOG_BYTES": "4096"})
    node_token = register(server, "n1")
    with server.client() as admin, server.client(node_token) as node:
        run = admin.post(f"{API}/runs", json={"image": "busybox", "command": ["yes"]}).json()
        run_id = eventually(lambda: _placed(admin, run["id"]), what="run placed on n1")
        events = f"{API}/runs/{run_id}/node-events"
        node.post(
            events, json=_batch((1, "claimed", {}), (2, "started", {"container_id": "c1"}))
        ).raise_for_status()
        line = "é" * 500  # 1,000 bytes of UTF-8 each
        seq = 2
        for _ in range(3):  # 3 batches of 3 lines: 9,000 bytes of output against a 4,096 cap
            batch = []
            for _ in range(3):
                seq += 1
                batch.append((seq, "log", {"stream": "stdout", "text": line}))
            ack = node.post(events, json=_batch(*batch))
            assert ack.status_code == 200, ack.text
            assert ack.json()["last_node_seq"] == seq  # acknowledged, stored or not
        final = node.post(events, json=_batch((seq + 1, "exited", {"exit_code": 0})))
        assert final.status_code == 200, final.text
        assert final.json()["status"] == "succeeded"
        late = node.post(events, json=_batch((seq + 2, "log", {"stream": "stdout", "text": "late"})))
        assert late.status_code == 200, late.text

        stored = admin.get(f"{API}/runs/{run_id}/events").json()["items"]
        types = [event["type"] for event in stored]
        assert types.count("log") == 4  # 4 x 1,000 bytes fit under 4,096
        assert types.count("log_truncated") == 1
        truncated = next(event for event in stored if event["type"] == "log_truncated")
        assert truncated["data"]["limit_bytes"] == 4096
        assert truncated["data"]["first_dropped_node_seq"] == 7
        assert types[-1] == "exited"
        assert types.index("log_truncated") < types.index("exited")
        got = admin.get(f"{API}/runs/{run_id}").json()
        assert got["status"] == "succeeded"
        assert got["exit_code"] == 0
        assert got["last_node_seq"] == seq + 2


def test_api_docs_load_nothing_from_another_origin(server: ServerProcess) -> None:
    with server.client() as client:
        for page in ("/schema", "/schema/swagger"):
            response = client.get(page)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            sources = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"']([^\"']+)", response.text)
            assert len(sources) >= 3, sources  # Swagger UI's script, preset and style sheet
            for source in sources:
                assert source.startswith("/"), (page, source)  # same origin: a path, no scheme or host
                assert not source.startswith("//"), (page, source)
                asset = client.get(source)
                assert asset.status_code == 200, source
                assert len(asset.content) > 100, source
            assert "cdn" not in response.text.lower()
        assert client.get("/schema/openapi.json").status_code == 200
        assert client.get("/schema/openapi.yaml").status_code == 200


def _batch(*events: tuple[int, str, dict[str, Any]], node_id: str = "n1") -> dict[str, Any]:
    return {
        "node_id": node_id,
        "events": [{"node_seq": seq, "type": kind, "data": data} for seq, kind, data in events],
    }


def _placed(admin: httpx.Client, run_id: str) -> str | None:
    run = admin.get(f"{API}/runs/{run_id}").json()
    return run_id if run["status"] == "scheduled" and run["node_id"] == "n1" else None


def test_token_bucket_burst_refill_and_forgetting() -> None:
    now = [0.0]
    buckets = TokenBuckets(burst=3, per_second=2.0, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    assert buckets.take("a") == pytest.approx(0.5)  # one token needs half a second
    now[0] += 0.25
    assert buckets.take("a") == pytest.approx(0.25)  # a refused request takes nothing
    now[0] += 0.25
    assert buckets.take("a") is None
    now[0] += 100
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]  # refilled to the burst, no more
    assert buckets.take("a") is not None
    buckets.take("b")
    buckets.take("c")  # a third key: the least recently used ("a") is forgotten
    assert len(buckets) == 2
    assert buckets.take("a") is None


@pytest.mark.parametrize(
    "text", ["x" * 200_000, "\x01" * 70_000, "é" * 70_000, "\U0001f4a5" * 40_000, "short"]
)
def test_log_text_is_cut_into_events_that_fit(text: str) -> None:
    room = MAX_EVENT_DATA_BYTES - len(msgspec.json.encode({"stream": "stdout", "text": "", "ts": None}))
    pieces = json_pieces(text, room)
    assert "".join(pieces) == text
    for piece in pieces:
        data = {"stream": "stdout", "text": piece, "ts": None}
        assert len(msgspec.json.encode(data)) <= MAX_EVENT_DATA_BYTES
    if len(msgspec.json.encode(text)) <= room:
        assert pieces == [text]
    else:
        assert len(pieces) > 1


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (b"/api/v1/nodes/n2%2fenv-config", True),
        (b"/api/v1/nodes/n2%2Fenv-config", True),
        (b"/api/v1/nodes/n2%5cx", True),
        (b"/api/v1/nodes/n2%00", True),
        (b"/api/v1/nodes/n2\x00", True),
        (b"/api/v1/nodes/n2%252f", False),  # the text "%2f" once decoded: an odd id, refused later
        (b"/api/v1/nodes/n2/env-config", False),
        (b"/console/app.js", False),
    ],
)
def test_edge_refuses_encoded_separators_and_nul(raw: bytes, refused: bool) -> None:
    assert (path_problem(raw) is not None) is refused
