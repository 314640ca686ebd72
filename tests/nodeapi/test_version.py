"""The skew policy between a client and its apiserver (nodeapi.version)."""

from __future__ import annotations

import pytest

from nodeapi.client import Calls, Client
from nodeapi.errors import IncompatibleServer
from nodeapi.version import Skew, VersionGate, release, skew
from tests.support.fake_apiserver import FakeApiServer


def test_release_reads_major_minor_patch() -> None:
    assert release("0.1.0") == (0, 1, 0)
    assert release("v2.3") == (2, 3, 0)
    assert release("1.4.2rc1+local") == (1, 4, 2)
    assert release("main") is None


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ("0.1.0", "0.1.7", Skew.NONE),
        ("0.1.0", "0.2.0", Skew.MINOR),
        ("0.3.1", "0.2.0", Skew.MINOR),
        ("0.9.0", "1.0.0", Skew.MAJOR),
        ("2.0.0", "1.9.9", Skew.MAJOR),
        ("0.1.0", "dev", Skew.UNKNOWN),
    ],
)
def test_skew(client: str, server: str, expected: Skew) -> None:
    assert skew(client, server) is expected


def test_the_gate_warns_once_per_server_version_and_refuses_another_major() -> None:
    warnings: list[str] = []
    refused: list[IncompatibleServer] = []
    gate = VersionGate(
        "nodectl", warn=warnings.append, on_incompatible=refused.append, client_version="1.2.0"
    )
    for stated in (None, "", "1.2.5", "1.3.0", "1.3.0", "1.1.0", "1.3.0"):
        gate.check(stated)
    assert warnings == [
        "the apiserver (1.3.0) is a minor version ahead of this nodectl (1.2.0): supported, but upgrade "
        "the older one soon (docs/operations.md#version-skew)",
        "the apiserver (1.1.0) is a minor version behind this nodectl (1.2.0): supported, but upgrade "
        "the older one soon (docs/operations.md#version-skew)",
    ]
    with pytest.raises(IncompatibleServer) as caught:
        gate.check("2.0.0")
    assert refused == [caught.value]
    assert caught.value.server_version == "2.0.0"
    assert "another major version" in str(caught.value)


def test_the_client_checks_every_answer_before_reading_it() -> None:
    warnings: list[str] = []
    with FakeApiServer("7.0.0") as fake:
        gate = VersionGate("nodectl", warn=warnings.append, client_version="7.1.0")
        with Client(fake.base_url, version_gate=gate) as client:
            assert client.send(Calls.version()).version == "7.0.0"
            fake.set_version("8.0.0")
            with pytest.raises(IncompatibleServer):
                client.send(Calls.version())
    assert len(warnings) == 1
