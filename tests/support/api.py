"""The admin's side of an end-to-end test: submit runs and watch runs and nodes through a real
apiserver's HTTP API, every wait polling with a deadline (tests.support.wait)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.server import ServerProcess
from tests.support.wait import eventually

TERMINAL = {"succeeded", "failed", "cancelled", "lost"}
RUN_TIMEOUT = 40.0


class Api:
    def __init__(self, server: ServerProcess) -> None:
        self.http: httpx.Client = server.client()

    def close(self) -> None:
        self.http.close()

    def submit(self, image: str, command: list[str], env: dict[str, str] | None = None, **fields: Any) -> str:
        body = {"image": image, "command": command, "env": env or {}, **fields}
        response = self.http.post("/api/v1/runs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            seen.update(self.run(run_id))
            return dict(seen) if seen["status"] in statuses else None

        try:
            return eventually(reached, timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"run {run_id} is {seen.get('status')} after {timeout}s, expected {statuses}: {seen}"
            ) from None

    def events(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(100):  # pages
            after = events[-1]["seq"] if events else 0
            response = self.http.get(f"/api/v1/runs/{run_id}/events", params={"after": after})
            assert response.status_code == 200, response.text
            page = response.json()["items"]
            if not page:
                break
            events.extend(page)
        return events

    def event_types(self, run_id: str) -> list[str]:
        return [event["type"] for event in self.events(run_id)]

    def log_texts(self, run_id: str) -> list[str]:
        return [e["data"]["text"] for e in self.events(run_id) if e["type"] == "log"]

    def wait_log(self, run_id: str, text: str, timeout: float = RUN_TIMEOUT) -> None:
        eventually(
            lambda: text in self.log_texts(run_id), timeout, interval=0.1, what=f"{text!r} logged by {run_id}"
        )

    def node(self, node_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/nodes/{node_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_node(self, node_id: str, status: str = "online", timeout: float = 20.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            response = self.http.get(f"/api/v1/nodes/{node_id}")
            if response.status_code == 200 and response.json()["status"] == status:
                return dict(response.json())
            return None

        return eventually(reached, timeout, interval=0.1, what=f"node {node_id} {status}")
