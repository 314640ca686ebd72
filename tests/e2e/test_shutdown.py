"""Stopping a nodemanager: by default its runs keep running (the next start adopts them); with
STOP_WAIT it takes no new work and waits for them to finish first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import eventually


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "server").mkdir()
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30"}
    with ServerProcess(env=env, data_dir=tmp_path / "server") as process:
        yield process


def _status(http: httpx.Client, run_id: str) -> str:
    return str(http.get(f"/api/v1/runs/{run_id}").json()["status"])


def test_stop_wait_lets_the_running_run_finish_before_the_daemon_exits(
    server: ServerProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    node = NodeManagerProcess(
        server.base_url, tmp_path, "stopper", {"RUNTIME": "process", "STOP_WAIT": "30"}
    ).start()
    try:
        with server.client() as http:
            eventually(lambda: http.get("/api/v1/nodes/stopper").status_code == 200, timeout=20)
            body = {"image": "ignored", "command": ["sh", "-c", "sleep 2; echo finished"]}
            run_id = http.post("/api/v1/runs", json=body).json()["id"]
            eventually(lambda: _status(http, run_id) == "running", timeout=20)
            started = time.monotonic()
            assert node.terminate(timeout=30) == 0
            waited = time.monotonic() - started
            assert _status(http, run_id) == "succeeded"  # finished and reported before the exit
            assert waited >= 1.0
    finally:
        node.stop()
        request.node.add_report_section("call", "nodemanager log", node.log())
    assert "waiting up to 30s for 1 run(s) to finish" in node.log()
