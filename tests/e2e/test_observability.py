"""Logs and metrics with a real apiserver and a real nodemanager: no secret reaches any log line,
at DEBUG, of a run that used secret_env and a node whose proxy has a password; the nodemanager
serves its own metrics on METRICS_PORT."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nodemanager import NodeManagerProcess
from tests.support.ports import free_port
from tests.support.server import ServerProcess
from tests.support.wait import eventually

RUN_SECRET = "run-secret-5c1f9a7e"
NODE_SECRET = "node-secret-0b8d44e2"
PROXY_PASSWORD = "proxy-pass-77aa31"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "server").mkdir()
    env = {"NODE_HEARTBEAT_INTERVAL": "1", "NODE_OFFLINE_AFTER": "30", "LOG_LEVEL": "DEBUG"}
    with ServerProcess(env=env, data_dir=tmp_path / "server") as process:
        yield process


def test_no_secret_reaches_a_log_line(server: ServerProcess, tmp_path: Path) -> None:
    metrics_port = free_port()
    node = NodeManagerProcess(
        server.base_url,
        tmp_path,
        "secretive",
        {"RUNTIME": "process", "LOG_LEVEL": "DEBUG", "METRICS_PORT": str(metrics_port)},
    ).start()
    try:
        with server.client() as http:
            eventually(lambda: http.get("/api/v1/nodes/secretive").status_code == 200, timeout=20)
            config = {
                "proxy": {"http_proxy": f"http://agent:{PROXY_PASSWORD}@127.0.0.1:9/"},
                "secret_env": {"NODE_API_KEY": NODE_SECRET},
            }
            assert http.put("/api/v1/nodes/secretive/env-config", json=config).status_code == 200
            body = {
                "image": "ignored",
                "command": [
                    "sh",
                    "-c",
                    'test -n "$RUN_TOKEN" && test -n "$NODE_API_KEY" && echo has-secrets',
                ],
                "secret_env": {"RUN_TOKEN": RUN_SECRET},
            }
            run_id = http.post("/api/v1/runs", json=body).json()["id"]
            eventually(lambda: http.get(f"/api/v1/runs/{run_id}").json()["status"] == "succeeded", timeout=30)
            logs = [
                e["data"]["text"]
                for e in http.get(f"/api/v1/runs/{run_id}/events").json()["items"]
                if e["type"] == "log"
            ]
            assert "has-secrets" in logs  # the run had them
            assert http.get("/api/v1/nodes/secretive/env-config?reveal=true").status_code == 200

        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'agentnodes_node_heartbeats_total{result="ok"}' in scraped
        assert 'agentnodes_node_condition_ok{type="workspace"} 1.0' in scraped
        assert "agentnodes_node_runs_launched_total 1.0" in scraped
    finally:
        node.stop()
    for name, text, least in (("apiserver", server.log(), 20), ("nodemanager", node.log(), 5)):
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) > least, f"{name} logged too little at DEBUG to prove anything"
        for line in lines:
            json.loads(line)  # every line is one JSON object
            for secret in (RUN_SECRET, NODE_SECRET, PROXY_PASSWORD):
                assert secret not in line, f"{name} logged a secret: {line}"
