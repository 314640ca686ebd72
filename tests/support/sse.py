"""A server-sent events reader for tests: GET a stream in this thread and take its events as
they come (httpx; AsyncTestClient reads a streamed answer to its end)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Stream:
    """A reader of a server-sent events stream (GET /api/v1/watch/nodes): its events as they come."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None

    def __post_init__(self) -> None:
        self._client = httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=30.0))
        self._context = self._client.stream("GET", self.url, headers=self.headers)
        response = self._context.__enter__()
        self.status = response.status_code
        self._lines = response.iter_lines()

    def next(self, kind: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (of `kind`, skipping others), as {event, id, data}."""
        deadline = time.monotonic() + timeout
        event: dict[str, Any] = {}
        for line in self._lines:
            if time.monotonic() > deadline:
                break
            if not line:
                if event.get("event") and (kind is None or event["event"] == kind):
                    event["data"] = json.loads(event.get("data") or "null")
                    self.events.append(event)
                    return event
                event = {}
                continue
            name, _, value = line.partition(":")
            if name:
                event[name] = value.removeprefix(" ")
        raise AssertionError(f"no {kind or 'event'} within {timeout} s; got {self.events}")

    def until(self, node_id: str, wanted: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """The first `node` event of `node_id` whose data has the `wanted` values (a node may
        send others meanwhile, e.g. going offline on a slow machine)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next("node", timeout=deadline - time.monotonic())
            data = event["data"]
            if data["id"] == node_id and all(data.get(key) == value for key, value in wanted.items()):
                return event
        raise AssertionError(f"{node_id} never showed {wanted}; got {self.events}")

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()
