"""A retried submission runs once: the answer to `nodectl runs submit` is lost after the server
committed the run, nodectl retries with the same Idempotency-Key and gets that run, also when
the retry reaches another apiserver replica."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ApiServerFactory
from tests.support.lossy_proxy import LossyProxy
from tests.support.nodectl import base_env, run
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess


def _runs(server: ServerProcess) -> list[dict[str, object]]:
    with server.client() as http:
        return list(http.get("/api/v1/runs").json()["items"])


def _submit_through(proxy: LossyProxy, tmp_path: Path) -> tuple[int, str, str]:
    done = run(base_env(proxy.url, tmp_path / "config"), "runs", "submit", "busybox", "--", "true")
    return done.returncode, done.stdout.strip(), done.stderr


def test_a_lost_answer_is_retried_with_the_same_key_and_runs_once(
    apiserver: ApiServerFactory, tmp_path: Path
) -> None:
    server = apiserver()
    with LossyProxy([("127.0.0.1", server.port)], lose=1) as proxy:
        code, printed, stderr = _submit_through(proxy, tmp_path)
    assert code == 0, stderr
    assert "retrying the submission" in stderr
    assert [request for request, _ in proxy.relayed] == ["POST /api/v1/runs HTTP/1.1"] * 2
    runs = _runs(server)
    assert [r["id"] for r in runs] == [printed]  # one run, the one nodectl printed
    assert "Traceback" not in stderr


@pytest.fixture
def replicas(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    database = postgres_server.create_database()
    started = []
    for index in range(2):
        data_dir = tmp_path / f"replica-{index}"
        data_dir.mkdir()
        started.append(ServerProcess(env={"DATABASE_URL": database}, data_dir=data_dir).start())
    yield started
    for server in started:
        server.stop()


@pytest.mark.postgres
def test_the_retry_finds_the_run_on_another_replica(replicas: list[ServerProcess], tmp_path: Path) -> None:
    with LossyProxy([("127.0.0.1", server.port) for server in replicas], lose=1) as proxy:
        code, printed, stderr = _submit_through(proxy, tmp_path)
    assert code == 0, stderr
    assert [backend for _, backend in proxy.relayed] == [0, 1]  # committed on one, retried on the other
    for server in replicas:
        assert [r["id"] for r in _runs(server)] == [printed]


def test_the_same_key_with_another_body_is_a_conflict(apiserver: ApiServerFactory) -> None:
    server = apiserver()
    with server.client() as http:
        key = {"Idempotency-Key": "build-4711"}
        first = http.post("/api/v1/runs", json={"image": "a", "command": ["true"]}, headers=key)
        again = http.post("/api/v1/runs", json={"command": ["true"], "image": "a"}, headers=key)
        other = http.post("/api/v1/runs", json={"image": "b"}, headers=key)
        fresh = http.post("/api/v1/runs", json={"image": "a", "command": ["true"]})
    assert first.status_code == 201
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["extra"] == {"run_id": first.json()["id"]}
    assert fresh.json()["id"] != first.json()["id"]  # no key: a new run
