"""nodectl against a real apiserver process: nodes commands, output formats, exit codes, startup hygiene."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nodectl.session import Session
from tests.support.nodectl import ANSI_ESCAPE, base_env, heartbeat, invoke, run, run_in_pty, tsv
from tests.support.ports import free_port
from tests.support.server import REPO_ROOT, ServerProcess


@pytest.fixture
def tag() -> str:
    """A label value unique to one test, so list filters see only that test's nodes."""
    return uuid.uuid4().hex[:10]


def _nodes(server: ServerProcess, tag: str, count: int, **labels: str) -> list[str]:
    ids = [f"n-{tag}-{i}" for i in range(count)]
    for node_id in ids:
        heartbeat(server.base_url, node_id, {"t": tag, **labels})
    return ids


# --------------------------------------------------------------------------- startup and imports


def test_importing_the_cli_loads_no_server_or_heavy_modules() -> None:
    code = (
        "import json, sys; import nodectl.app; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert "typer" in loaded
    forbidden = {"litestar", "sqlmodel", "sqlalchemy", "redis", "docker", "server", "nodemanager"}
    lazy = {"httpx", "rich", "yaml"}  # imported only when a command needs them
    assert loaded.isdisjoint(forbidden | lazy), sorted(loaded & (forbidden | lazy))


def test_a_full_command_loads_no_server_modules(env: dict[str, str]) -> None:
    code = (
        "import json, sys\n"
        "from nodectl.__main__ import main\n"
        "sys.argv = ['nodectl', 'nodes', 'list', '-o', 'yaml']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stderr.strip().splitlines()[-1]))
    assert {"httpx", "yaml"} <= loaded
    assert loaded.isdisjoint({"litestar", "sqlmodel", "sqlalchemy", "redis", "docker", "server"})


def test_every_command_answers_help(env: dict[str, str]) -> None:
    groups = {
        "nodes": ["list", "get", "drain", "undrain", "label", "edit", "delete", "runs"],
        "env": ["get", "set", "edit", "test-proxy"],
        "runs": ["submit", "list", "get", "events", "logs", "cancel"],
        "context": ["list", "use", "set", "delete", "current"],
        "audit": ["list"],
    }
    top = run(env, "--help")
    assert top.returncode == 0
    for group, commands in groups.items():
        assert group in top.stdout
        for command in commands:
            result = invoke(env, group, command, "--help")
            assert result.exit_code == 0, (group, command, result.stderr)
            assert "Usage:" in result.stdout


# --------------------------------------------------------------------------- nodes list / get


def test_list_plain_rows_are_tab_separated_without_escape_codes(
    server: ServerProcess, env: dict[str, str], tag: str
) -> None:
    ids = _nodes(server, tag, 3, gpu="true")
    out = run({**env, "TERM": "xterm-256color", "FORCE_COLOR": "1"}, "nodes", "list", "-l", f"t={tag}")
    assert out.returncode == 0, out.stderr
    assert ANSI_ESCAPE not in out.stdout
    assert ANSI_ESCAPE not in out.stderr
    rows = tsv(out.stdout)
    assert rows[0] == ["ID", "STATUS", "LOAD", "HEARTBEAT", "AGE"]
    assert sorted(r[0] for r in rows[1:]) == ids
    assert {r[1] for r in rows[1:]} == {"online"}
    assert {r[2] for r in rows[1:]} == {"0/2"}
    assert all(r[3].endswith("s ago") for r in rows[1:])


def test_list_wide_shows_labels_untruncated(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    long_value = "v" * 60
    _nodes(server, tag, 1, long=long_value)
    result = invoke(env, "nodes", "list", "-o", "wide", "-l", f"t={tag}", "--no-headers")
    assert result.exit_code == 0, result.stderr
    (row,) = tsv(result.stdout)
    assert len(row) == 13
    assert row[5] == f"long={long_value},t={tag}"
    assert row[10:] == ["-", "-", "-"]  # no health checks, CPUs or memory reported


def test_list_json_yaml_and_ids(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    ids = _nodes(server, tag, 2)
    as_json = json.loads(invoke(env, "nodes", "list", "-o", "json", "-l", f"t={tag}").stdout)
    assert as_json["total"] == 2
    assert sorted(n["id"] for n in as_json["items"]) == ids
    node = as_json["items"][0]
    assert node["status"] == "online"
    assert node["capacity"] == {"max_concurrent": 2, "cpus": None, "memory_mb": None}
    assert node["running"] == 0
    assert node["labels"]["t"] == tag
    assert node["last_heartbeat_at"]
    assert node["created_at"]

    as_yaml = yaml.safe_load(invoke(env, "nodes", "list", "-o", "yaml", "-l", f"t={tag}").stdout)
    assert sorted(n["id"] for n in as_yaml["items"]) == ids

    quiet = invoke(env, "nodes", "list", "-q", "-l", f"t={tag}")
    assert sorted(quiet.stdout.split()) == ids


def test_list_filters_by_status_and_several_labels(
    server: ServerProcess, env: dict[str, str], tag: str
) -> None:
    a, b = _nodes(server, tag, 2, zone="a")
    heartbeat(server.base_url, b, {"t": tag, "zone": "b"})
    assert invoke(env, "nodes", "drain", a).exit_code == 0
    draining = invoke(env, "nodes", "list", "-q", "--status", "draining", "-l", f"t={tag}")
    assert draining.stdout.split() == [a]
    online = invoke(env, "nodes", "list", "-q", "--status", "online", "-l", f"t={tag}")
    assert online.stdout.split() == [b]
    both = invoke(env, "nodes", "list", "-q", "-l", f"t={tag}", "-l", "zone=b")
    assert both.stdout.split() == [b]


def test_empty_list_is_success(env: dict[str, str], tag: str) -> None:
    result = invoke(env, "nodes", "list", "-l", f"t={tag}")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["ID\tSTATUS\tLOAD\tHEARTBEAT\tAGE"]
    assert invoke(env, "nodes", "list", "-q", "-l", f"t={tag}").stdout == ""
    assert json.loads(invoke(env, "nodes", "list", "-o", "json", "-l", f"t={tag}").stdout) == {
        "items": [],
        "total": 0,
    }


def test_list_fetches_every_page(server: ServerProcess, tag: str) -> None:
    ids = _nodes(server, tag, 7)
    from nodeapi.client import Calls

    sess = Session(server_flag=server.base_url)
    calls: list[int] = []

    def page(limit: int, offset: int) -> object:
        calls.append(offset)
        return Calls.list_nodes(selector={"t": tag}, limit=3, offset=offset)

    items, total = sess.fetch_all(page)  # type: ignore[arg-type]
    sess.close()
    assert total == 7
    assert sorted(n.id for n in items) == ids
    assert calls == [0, 3, 6]


def test_get_in_every_format(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    (node_id,) = _nodes(server, tag, 1, gpu="true")
    table = invoke(env, "nodes", "get", node_id)
    assert table.exit_code == 0
    fields = dict(line.split(":", 1) for line in table.stdout.splitlines())
    assert fields["ID"].strip() == node_id
    assert fields["Status"].strip() == "online"
    assert fields["Load"].strip() == "0/2"
    assert f"t={tag}" in fields["Labels"]
    assert json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)["labels"]["gpu"] == "true"
    assert yaml.safe_load(invoke(env, "nodes", "get", node_id, "-o", "yaml").stdout)["id"] == node_id


def test_table_on_a_terminal_is_coloured_unless_no_color(
    server: ServerProcess, env: dict[str, str], tag: str
) -> None:
    _nodes(server, tag, 1)
    code, text = run_in_pty(env, "nodes", "list", "-l", f"t={tag}")
    assert code == 0, text
    assert "\x1b[32m" in text  # online in green
    assert "STATUS" in text
    assert f"n-{tag}-0" in text
    code, text = run_in_pty({**env, "NO_COLOR": "1"}, "nodes", "list", "-l", f"t={tag}")
    assert code == 0, text
    assert "\x1b[32m" not in text
    assert "\x1b[31m" not in text
    assert f"n-{tag}-0" in text


def test_watch_prints_rows_again_only_when_they_change(
    server: ServerProcess, env: dict[str, str], tag: str
) -> None:
    a, b = _nodes(server, tag, 2)
    process = subprocess.Popen(
        [sys.executable, "-m", "nodectl", "nodes", "list", "-l", f"t={tag}", "--watch", "--interval", "0.3",
         "--timeout", "30"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        first = _read_until(process, lambda text: text.count("\n") >= 3)
        assert invoke(env, "nodes", "drain", b).exit_code == 0
        both = _read_until(process, lambda text: "draining" in text, first)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    rows = tsv(both)
    assert rows[0][0] == "ID"
    assert [r[0] for r in rows[1:]].count(a) == 1  # unchanged: printed once
    assert [(r[0], r[1]) for r in rows[1:] if r[0] == b] == [(b, "online"), (b, "draining")]


def _read_until(process: subprocess.Popen[bytes], done: Callable[[str], bool], text: str = "") -> str:
    """Read the process's stdout until `done(text)`, within 20 s."""
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while not done(text):
        assert time.monotonic() < deadline, f"timed out; output so far: {text!r}"
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"watch ended early: {text!r}"
            text += chunk.decode()
    return text


def test_watch_cannot_be_combined_with_json(env: dict[str, str]) -> None:
    result = invoke(env, "nodes", "list", "--watch", "-o", "json")
    assert result.exit_code == 2
    assert "--watch" in result.stderr


# --------------------------------------------------------------------------- drain / label / delete


def test_drain_and_undrain(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    (node_id,) = _nodes(server, tag, 1)
    result = invoke(env, "nodes", "drain", node_id)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"node/{node_id} draining" in result.stderr
    assert json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)["status"] == "draining"
    heartbeat(server.base_url, node_id, {"t": tag})  # draining survives heartbeats
    assert json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)["status"] == "draining"
    assert invoke(env, "nodes", "undrain", node_id).exit_code == 0
    assert json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)["status"] == "online"


def test_drain_wait_returns_at_once_on_an_idle_node(
    server: ServerProcess, env: dict[str, str], tag: str
) -> None:
    (node_id,) = _nodes(server, tag, 1)
    result = invoke(env, "nodes", "drain", node_id, "--wait", "--timeout", "10")
    assert result.exit_code == 0, result.stderr
    assert f"node/{node_id} drained" in result.stderr


def test_label_set_remove_and_overwrite(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    (node_id,) = _nodes(server, tag, 1, zone="a", old="x")

    def labels() -> dict[str, str]:
        return json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)["labels"]  # type: ignore[no-any-return]

    assert invoke(env, "nodes", "label", node_id, "gpu=true", "old-").exit_code == 0
    assert labels() == {"t": tag, "zone": "a", "gpu": "true"}

    refused = invoke(env, "nodes", "label", node_id, "zone=b")
    assert refused.exit_code == 6
    assert "--overwrite" in refused.stderr
    assert "'a'" in refused.stderr
    assert labels()["zone"] == "a"

    assert invoke(env, "nodes", "label", node_id, "zone=b", "--overwrite").exit_code == 0
    assert labels()["zone"] == "b"

    heartbeat(
        server.base_url, node_id, {"t": tag, "zone": "a", "old": "x"}
    )  # admin labels survive heartbeats
    assert labels() == {"t": tag, "zone": "b", "gpu": "true"}

    missing = invoke(env, "nodes", "label", node_id, "nothere-")
    assert missing.exit_code == 0
    assert "not found" in missing.stderr


@pytest.mark.parametrize("change", ["no_equals_sign", "bad key=x", "k=has space", "=v", "-"])
def test_label_usage_errors(server: ServerProcess, env: dict[str, str], tag: str, change: str) -> None:
    (node_id,) = _nodes(server, tag, 1)
    result = invoke(env, "nodes", "label", node_id, change)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error:")


def test_delete_needs_yes_without_a_terminal(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    (node_id,) = _nodes(server, tag, 1)
    refused = run(env, "nodes", "delete", node_id)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert invoke(env, "nodes", "get", node_id).exit_code == 0
    assert invoke(env, "nodes", "delete", node_id, "--yes").exit_code == 0
    gone = invoke(env, "nodes", "get", node_id)
    assert gone.exit_code == 5
    assert "not found" in gone.stderr


def test_delete_asks_on_a_terminal(server: ServerProcess, env: dict[str, str], tag: str) -> None:
    (node_id,) = _nodes(server, tag, 1)
    code, text = run_in_pty(env, "nodes", "delete", node_id, answer="n\n")
    assert code == 3, text
    assert f"Delete node {node_id}?" in text
    assert invoke(env, "nodes", "get", node_id).exit_code == 0
    code, text = run_in_pty(env, "nodes", "delete", node_id, answer="y\n")
    assert code == 0, text
    assert invoke(env, "nodes", "get", node_id).exit_code == 5


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    "args",
    [
        ["nodes", "get", "no-such-node"],
        ["nodes", "drain", "no-such-node"],
        ["nodes", "label", "no-such-node", "a=b"],
        ["nodes", "delete", "no-such-node", "--yes"],
        ["env", "get", "no-such-node"],
    ],
)
def test_not_found_is_exit_5(env: dict[str, str], args: list[str]) -> None:
    result = invoke(env, *args)
    assert result.exit_code == 5, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: not found")


@pytest.mark.parametrize(
    "args",
    [
        ["nodes", "list", "-o", "xml"],
        ["nodes", "list", "--status", "sleeping"],
        ["nodes", "list", "-l", "novalue"],
        ["nodes", "frobnicate"],
        ["nodes", "get"],
        ["--no-such-flag"],
    ],
)
def test_usage_errors_are_exit_2(env: dict[str, str], args: list[str]) -> None:
    result = run(env, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr


def test_server_down_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(base_env(url, tmp_path), "nodes", "list")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: cannot reach {url}: connection refused"


def test_version(env: dict[str, str]) -> None:
    result = invoke(env, "--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("nodectl ")
