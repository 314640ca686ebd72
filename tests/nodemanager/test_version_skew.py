"""The nodemanager and the skew policy: it asks the server's version before it registers, warns
once about another minor version, and stops (exit 1, runs left running) at another major version,
at start or when the server it talks to is upgraded under it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeapi import __version__
from nodeapi.version import release
from tests.support.fake_apiserver import FakeApiServer
from tests.support.nodemanager import NodeManagerProcess
from tests.support.wait import eventually

MAJOR, MINOR, _ = release(__version__) or (0, 0, 0)
NEXT_MINOR = f"{MAJOR}.{MINOR + 1}.0"
NEXT_MAJOR = f"{MAJOR + 1}.0.0"
NODE = "skew-node"
HEARTBEAT_REPLY = {
    "node_id": NODE,
    "status": "online",
    "heartbeat_interval": 0.3,
    "offline_after": 1.0,
    "stop_runs": [],
}
REFUSAL = f"the apiserver is version {NEXT_MAJOR} and this nodemanager {__version__}: another major version"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[list[NodeManagerProcess]]:
    started: list[NodeManagerProcess] = []
    yield started
    for process in started:
        process.stop()


def _start(node: list[NodeManagerProcess], fake: FakeApiServer, tmp_path: Path) -> NodeManagerProcess:
    process = NodeManagerProcess(fake.base_url, tmp_path, NODE, env={"RUNTIME": "process"})
    node.append(process)
    return process.start()


def test_another_major_version_at_start_is_refused_before_registering(
    tmp_path: Path, node: list[NodeManagerProcess]
) -> None:
    with FakeApiServer(NEXT_MAJOR) as fake:
        process = _start(node, fake, tmp_path)
        eventually(lambda: process.exit_code is not None, timeout=20, what="the nodemanager to exit")
    assert process.exit_code == 1
    assert REFUSAL in process.log()
    assert fake.requests == [("GET", "/version")]


def test_another_minor_version_warns_once_then_a_major_upgrade_stops_the_node(
    tmp_path: Path, node: list[NodeManagerProcess]
) -> None:
    with FakeApiServer(NEXT_MINOR, {("POST", "/api/v1/nodes/heartbeat"): (200, HEARTBEAT_REPLY)}) as fake:
        process = _start(node, fake, tmp_path)
        eventually(lambda: fake.paths("POST").count("/api/v1/nodes/heartbeat") >= 3, timeout=20)
        assert process.exit_code is None
        assert process.log().count(f"the apiserver ({NEXT_MINOR}) is a minor version ahead") == 1
        fake.set_version(NEXT_MAJOR)
        eventually(lambda: process.exit_code is not None, timeout=20, what="the nodemanager to exit")
    assert process.exit_code == 1
    assert REFUSAL in process.log()
