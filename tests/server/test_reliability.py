"""Regression tests of failures that left work stuck or lost (through a real apiserver process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.conftest import ApiServerFactory
from tests.support.fake_node import FakeNode
from tests.support.wait import eventually


@pytest.fixture
def client(apiserver: ApiServerFactory) -> Iterator[Client]:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with Client(server.base_url) as api:
        yield api


def test_a_command_whose_answer_was_lost_is_handed_out_again(client: Client) -> None:
    """Regression: a command was marked delivered when read, so a node that never got the answer
    of that poll never saw the command, and the proxy test timed out."""
    node = FakeNode(client, "n1")
    node.heartbeat()
    outcome: list[m.ProxyTestResult] = []
    request = m.ProxyTestRequest(
        proxy=m.ProxyConfig(http_proxy="http://127.0.0.1:9"), urls=["http://127.0.0.1:9/"]
    )
    asking = threading.Thread(
        target=lambda: outcome.append(client.send(Calls.test_proxy("n1", request, wait=20)))
    )
    asking.start()
    first = eventually(lambda: node.poll(wait=1).commands, timeout=10)  # this answer is "lost"
    again = eventually(lambda: node.poll(wait=5).commands, timeout=10)
    assert [c.id for c in again] == [c.id for c in first]
    result = m.ProxyTestResult(ok=False, reason="refused", message="refused")
    node.client.send(
        Calls.post_command_result(
            "n1", again[0].id, m.CommandResult(ok=True, result=msgspec.to_builtins(result))
        )
    )
    asking.join(timeout=20)
    assert [r.reason for r in outcome] == ["refused"]
    assert node.poll(wait=0).commands == []  # answered: no longer handed out
