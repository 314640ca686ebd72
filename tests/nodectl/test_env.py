"""nodectl env get/set/edit and nodes edit against a real apiserver, with a scripted $EDITOR."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.nodectl import heartbeat, invoke
from tests.support.server import ServerProcess


@pytest.fixture
def node_id(server: ServerProcess) -> str:
    node = f"env-{uuid.uuid4().hex[:10]}"
    heartbeat(server.base_url, node, {"zone": "a", "os": "linux"}, max_concurrent=3)
    return node


def _editor(tmp_path: Path, body: str) -> str:
    """An $EDITOR command: a Python script that gets the file path as argv[1] and runs `body`."""
    script = tmp_path / f"editor-{uuid.uuid4().hex[:6]}.py"
    script.write_text("import sys, yaml, httpx\npath = sys.argv[1]\n" + textwrap.dedent(body))
    return f"{sys.executable} {script}"


def _node(env: dict[str, str], node_id: str) -> dict[str, object]:
    return json.loads(invoke(env, "nodes", "get", node_id, "-o", "json").stdout)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- env get / set


def test_set_then_get_masks_secrets(env: dict[str, str], node_id: str) -> None:
    result = invoke(
        env, "env", "set", node_id,
        "--http-proxy", "http://alice:pa55@127.0.0.1:3128",
        "--https-proxy", "http://127.0.0.1:3129",
        "--no-proxy", "localhost,10.0.0.0/8",
        "--secret-env", "API_KEY=abc123", "--env", "MODE=fast",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""

    masked = json.loads(invoke(env, "env", "get", node_id, "-o", "json").stdout)
    assert masked["proxy"] == {
        "http_proxy": "http://alice:***@127.0.0.1:3128",
        "https_proxy": "http://127.0.0.1:3129",
        "no_proxy": "localhost,10.0.0.0/8",
    }
    assert masked["env"] == {"MODE": "fast"}  # plain env shows as it is
    assert masked["secret_env"] == {"API_KEY": "***"}

    table = invoke(env, "env", "get", node_id).stdout
    assert "pa55" not in table
    assert "abc123" not in table
    assert "http://alice:***@127.0.0.1:3128" in table

    shown = yaml.safe_load(invoke(env, "env", "get", node_id, "-o", "yaml", "--reveal").stdout)
    assert shown["proxy"]["http_proxy"] == "http://alice:pa55@127.0.0.1:3128"
    assert (shown["env"], shown["secret_env"]) == ({"MODE": "fast"}, {"API_KEY": "abc123"})

    # a change of something else sends the masked values back: the stored secrets stay
    assert invoke(env, "env", "set", node_id, "--env", "MORE=1").exit_code == 0
    kept = yaml.safe_load(invoke(env, "env", "get", node_id, "-o", "yaml", "--reveal").stdout)
    assert kept["proxy"]["http_proxy"] == "http://alice:pa55@127.0.0.1:3128"
    assert kept["secret_env"] == {"API_KEY": "abc123"}

    hinted = invoke(env, "env", "set", node_id, "--env", "GITHUB_TOKEN=ghp_x")
    assert hinted.exit_code == 0
    assert "GITHUB_TOKEN looks like a secret: --secret-env" in hinted.stderr


def test_set_changes_only_what_is_named(env: dict[str, str], node_id: str) -> None:
    assert (
        invoke(
            env, "env", "set", node_id, "--http-proxy", "http://p:1", "--env", "A=1", "--env", "B=2"
        ).exit_code
        == 0
    )
    assert (
        invoke(env, "env", "set", node_id, "--unset-env", "A", "--env", "C=3", "--http-proxy", "").exit_code
        == 0
    )
    shown = json.loads(invoke(env, "env", "get", node_id, "-o", "json", "--show-secrets").stdout)
    assert shown["env"] == {"B": "2", "C": "3"}
    assert shown["proxy"]["http_proxy"] is None
    warned = invoke(env, "env", "set", node_id, "--unset-env", "NOPE")
    assert warned.exit_code == 0
    assert "NOPE is not set" in warned.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--http-proxy", "ftp://proxy:21"],
        ["--http-proxy", "http://"],
        ["--https-proxy", "http://proxy:99999"],
        ["--env", "NOEQUALS"],
        ["--env", "1BAD=x"],
        ["--env", "A=1", "--unset-env", "A"],
    ],
)
def test_set_usage_errors(env: dict[str, str], node_id: str, args: list[str]) -> None:
    result = invoke(env, "env", "set", node_id, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error:")
    assert json.loads(invoke(env, "env", "get", node_id, "-o", "json").stdout)["env"] == {}


# --------------------------------------------------------------------------- env edit


def test_env_edit_applies_the_edited_document(env: dict[str, str], node_id: str, tmp_path: Path) -> None:
    editor = _editor(
        tmp_path,
        """
        doc = yaml.safe_load(open(path))
        doc["proxy"]["https_proxy"] = "http://u:pw@127.0.0.1:8888"
        doc["env"] = {"TOKEN": "xyz", "N": 5}
        open(path, "w").write(yaml.safe_dump(doc))
        """,
    )
    result = invoke({**env, "EDITOR": editor}, "env", "edit", node_id)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(invoke(env, "env", "get", node_id, "-o", "json", "--show-secrets").stdout)
    assert shown["proxy"]["https_proxy"] == "http://u:pw@127.0.0.1:8888"
    assert shown["proxy"]["http_proxy"] is None
    assert shown["env"] == {"TOKEN": "xyz", "N": "5"}


def test_env_edit_refuses_a_stale_edit(
    server: ServerProcess, env: dict[str, str], node_id: str, tmp_path: Path
) -> None:
    # a first save creates the config with a resource_version to compare against
    assert invoke(env, "env", "set", node_id, "--env", "FIRST=1").exit_code == 0
    # while "the user" edits, someone else saves a change
    editor = _editor(
        tmp_path,
        f"""
        httpx.put("{server.base_url}/api/v1/nodes/{node_id}/env-config",
                  json={{"proxy": {{}}, "env": {{"OTHER": "1"}}}}, trust_env=False).raise_for_status()
        doc = yaml.safe_load(open(path))
        doc["env"] = {{"MINE": "1"}}
        open(path, "w").write(yaml.safe_dump(doc))
        """,
    )
    result = invoke({**env, "VISUAL": editor}, "env", "edit", node_id)
    assert result.exit_code == 6, result.stderr
    assert "changed by someone else" in result.stderr
    shown = json.loads(invoke(env, "env", "get", node_id, "-o", "json", "--show-secrets").stdout)
    assert shown["env"] == {"OTHER": "1"}


def test_env_edit_without_changes_is_cancelled(env: dict[str, str], node_id: str) -> None:
    result = invoke({**env, "EDITOR": "true"}, "env", "edit", node_id)
    assert result.exit_code == 0
    assert result.stderr.strip() == "Edit cancelled, no changes made."


# --------------------------------------------------------------------------- nodes edit


def test_nodes_edit_changes_labels_status_and_capacity(
    env: dict[str, str], node_id: str, tmp_path: Path
) -> None:
    editor = _editor(
        tmp_path,
        """
        text = open(path).read()
        assert text.startswith("# Editing node"), text
        doc = yaml.safe_load(text)
        assert doc["status"] == "online" and doc["max_concurrent"] == 3, doc
        doc["labels"].pop("zone")
        doc["labels"]["gpu"] = True
        doc["status"] = "draining"
        doc["max_concurrent"] = 5
        open(path, "w").write(yaml.safe_dump(doc))
        """,
    )
    result = invoke({**env, "EDITOR": editor}, "nodes", "edit", node_id)
    assert result.exit_code == 0, result.stderr
    node = _node(env, node_id)
    assert node["labels"] == {"os": "linux", "gpu": "true"}
    assert node["status"] == "draining"
    assert node["capacity"] == {"max_concurrent": 5, "cpus": None, "memory_mb": None}


def test_nodes_edit_refuses_a_stale_edit(
    server: ServerProcess, env: dict[str, str], node_id: str, tmp_path: Path
) -> None:
    editor = _editor(
        tmp_path,
        f"""
        httpx.patch("{server.base_url}/api/v1/nodes/{node_id}", json={{"labels": {{"team": "x"}}}},
                    trust_env=False).raise_for_status()
        doc = yaml.safe_load(open(path))
        doc["labels"]["zone"] = "b"
        open(path, "w").write(yaml.safe_dump(doc))
        """,
    )
    result = invoke({**env, "EDITOR": editor}, "nodes", "edit", node_id)
    assert result.exit_code == 6, result.stderr
    assert "changed by someone else" in result.stderr
    assert f"nodectl nodes edit {node_id}" in result.stderr
    labels = _node(env, node_id)["labels"]
    assert labels == {"zone": "a", "os": "linux", "team": "x"}


def test_nodes_edit_without_changes_is_cancelled(env: dict[str, str], node_id: str, tmp_path: Path) -> None:
    for editor in (
        "true",
        _editor(tmp_path, "doc = yaml.safe_load(open(path)); open(path, 'w').write(yaml.safe_dump(doc))"),
    ):
        result = invoke({**env, "EDITOR": editor}, "nodes", "edit", node_id)
        assert result.exit_code == 0, result.stderr
        assert result.stderr.strip() == "Edit cancelled, no changes made."
    assert _node(env, node_id)["resource_version"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("open(path, 'w').write('labels: [unclosed')", "not valid YAML"),
        ("open(path, 'w').write('status: sleeping')", "status must be online or draining"),
        ("open(path, 'w').write('max_concurrent: 0')", "max_concurrent"),
        ("open(path, 'w').write('id: other')", "cannot edit id"),
        ("open(path, 'w').write('labels: {\"bad key\": x}')", "bad key"),
    ],
)
def test_nodes_edit_rejects_invalid_documents(
    env: dict[str, str], node_id: str, tmp_path: Path, body: str, message: str
) -> None:
    result = invoke({**env, "EDITOR": _editor(tmp_path, body)}, "nodes", "edit", node_id)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert _node(env, node_id)["resource_version"] == 1


def test_failing_editor_changes_nothing(env: dict[str, str], node_id: str) -> None:
    result = invoke({**env, "EDITOR": "false"}, "nodes", "edit", node_id)
    assert result.exit_code == 1
    assert "editor exited with status 1" in result.stderr
    missing = invoke({**env, "EDITOR": "/no/such/editor"}, "nodes", "edit", node_id)
    assert missing.exit_code == 2
