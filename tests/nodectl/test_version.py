"""`nodectl version`, and the skew policy on every other command: another minor version warns once,
another major version is refused before any change is sent (docs/operations.md, Version skew)."""

from __future__ import annotations

import json
from pathlib import Path

from nodeapi import __version__
from nodeapi.version import release
from tests.support.fake_apiserver import FakeApiServer
from tests.support.nodectl import base_env, invoke, run
from tests.support.server import ServerProcess

MAJOR, MINOR, PATCH = release(__version__) or (0, 0, 0)
NEXT_MINOR = f"{MAJOR}.{MINOR + 1}.0"
NEXT_MAJOR = f"{MAJOR + 1}.0.0"
DELETE_N1 = {("DELETE", "/api/v1/nodes/n1"): (204, None)}
EMPTY_LIST = {("GET", "/api/v1/nodes"): (200, {"items": [], "total": 0})}


def test_version_prints_client_and_server(server: ServerProcess, env: dict[str, str]) -> None:
    table = invoke(env, "version")
    assert table.exit_code == 0, table.output
    assert table.stdout == f"Client Version: {__version__}\nServer Version: {__version__}\n"
    as_json = run(env, "version", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"client": __version__, "server": __version__}
    assert as_json.stderr == ""


def test_version_of_the_client_alone_needs_no_server(tmp_path: Path) -> None:
    done = run(base_env("http://127.0.0.1:9", tmp_path), "version", "--client", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"client": __version__}


def test_version_with_the_server_unreachable_prints_the_client_and_exits_1(tmp_path: Path) -> None:
    done = run(base_env("http://127.0.0.1:9", tmp_path), "version", "-o", "json")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"client": __version__, "server": None}
    assert done.stderr.startswith("error: cannot reach http://127.0.0.1:9")


def test_another_minor_version_warns_once_and_works(tmp_path: Path) -> None:
    with FakeApiServer(NEXT_MINOR, DELETE_N1) as fake:
        done = run(base_env(fake.base_url, tmp_path), "nodes", "delete", "n1", "--yes")
    assert done.returncode == 0, done.stderr
    assert fake.requests == [("GET", "/version"), ("DELETE", "/api/v1/nodes/n1")]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: the apiserver ({NEXT_MINOR}) is a minor version ahead of this nodectl ({__version__}): "
        "supported, but upgrade the older one soon (docs/operations.md#version-skew)"
    ]


def test_another_major_version_is_refused_before_a_change_is_sent(tmp_path: Path) -> None:
    with FakeApiServer(NEXT_MAJOR, {**DELETE_N1, **EMPTY_LIST}) as fake:
        delete = run(base_env(fake.base_url, tmp_path), "nodes", "delete", "n1", "--yes")
        listing = run(base_env(fake.base_url, tmp_path), "nodes", "list")
        version = run(base_env(fake.base_url, tmp_path), "version")
    assert fake.paths("DELETE") == []
    for refused in (delete, listing):
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert refused.stderr == (
            f"error: the apiserver is version {NEXT_MAJOR} and this nodectl {__version__}: another major "
            "version, which this nodectl cannot work with; use a nodectl of the server's major version "
            "(docs/operations.md#version-skew)\n"
        )
    assert version.returncode == 0
    assert version.stdout == f"Client Version: {__version__}\nServer Version: {NEXT_MAJOR}\n"
    assert version.stderr.startswith(f"warning: the apiserver is version {NEXT_MAJOR}")


def test_a_server_that_states_no_version_is_not_checked(tmp_path: Path) -> None:
    with FakeApiServer(None, DELETE_N1) as fake:
        del fake.answers[("GET", "/version")]  # older than GET /version: 404
        done = run(base_env(fake.base_url, tmp_path), "nodes", "delete", "n1", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "node/n1 deleted\n"
