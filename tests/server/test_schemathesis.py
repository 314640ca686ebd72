"""schemathesis (the `st` CLI) fuzzes every operation of a live apiserver against its own OpenAPI
schema, once with each role's token: no answer may be a 5xx, and every answer must match the
schema (a documented status, content type, headers and body).

Each role gets a throwaway server (the fuzzer deletes nodes and voids credentials), with a node
registered through the join token. For the admin run a stand-in node answers proxy-test commands,
so that operation is exercised end to end instead of timing out. Long-poll waits are kept short
by tests/support/schemathesis_hooks.py. The seed is fixed so CI runs are reproducible; set
SCHEMATHESIS_SEED to explore others. One run takes 20-40 s here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.slow

ADMIN = "admin-fuzz-token"
VIEWER = "viewer-fuzz-token"
JOIN = "join-fuzz-token"
NODE_ID = "fuzz-node-1"
HOOKS = REPO_ROOT / "tests" / "support" / "schemathesis_hooks.py"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
MAX_EXAMPLES = 25
RUN_TIMEOUT = 150.0  # seconds for one role's run; three runs stay within about three minutes
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261203")


class CommandResponder:
    """A stand-in node: heartbeats, polls its work channel and answers every proxy-test command
    with a passing result, until stopped or its credential stops working."""

    def __init__(self, base_url: str, node_token: str) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {node_token}"},
            trust_env=False,
            timeout=10.0,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="command-responder", daemon=True)

    def __enter__(self) -> CommandResponder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._client.post("/api/v1/nodes/heartbeat", json={"node_id": NODE_ID})
                work = self._client.get(f"/api/v1/nodes/{NODE_ID}/work", params={"wait": 0.5})
                if work.status_code in (401, 403, 404):
                    return  # deleted or credential voided by the fuzzer: the node is gone
                for command in work.json().get("commands", []) if work.status_code == 200 else []:
                    result = {"ok": True, "reason": "ok", "message": "stand-in node: proxy reachable"}
                    self._client.post(
                        f"/api/v1/nodes/{NODE_ID}/commands/{command['id']}/result",
                        json={"ok": True, "result": result},
                    )
            except httpx.HTTPError:
                pass
            self._stop.wait(0.2)


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A throwaway server and the node token of the node registered on it."""
    env = {"ADMIN_TOKEN": ADMIN, "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN}
    with ServerProcess(env=env, data_dir=tmp_path) as server, server.client(JOIN) as join:
        reply = join.post("/api/v1/nodes/heartbeat", json={"node_id": NODE_ID, "labels": {"zone": "a"}})
        assert reply.status_code == 200, reply.text
        yield server, reply.json()["node_token"]


@pytest.mark.parametrize("role", ["admin", "viewer", "node"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzz_server: tuple[ServerProcess, str], role: str, tmp_path: Path
) -> None:
    server, node_token = fuzz_server
    token = {"admin": ADMIN, "viewer": VIEWER, "node": node_token}[role]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.base_url}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "20",
        # the live node stream answers for as long as the client stays: every request would time
        # out (tests/server/test_node_stream.py covers it)
        "--exclude-path",
        "/api/v1/watch/nodes",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    # loopback only: no proxy variable of the environment may route the fuzzer's requests
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env.update({"SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1"})
    responder = CommandResponder(server.base_url, node_token) if role == "admin" else None
    with responder or contextlib.nullcontext():
        try:
            done = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"schemathesis ({role}) did not finish within {RUN_TIMEOUT:g} s:\n{exc.stdout!s}")
    report = done.stdout[-15_000:] + done.stderr[-3_000:]
    if os.environ.get("SCHEMATHESIS_SHOW"):
        print(report)
    assert done.returncode == 0, f"schemathesis ({role}) found problems:\n{report}"
    assert "Traceback" not in server.log(), server.log()
