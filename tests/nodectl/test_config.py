"""nodectl contexts, the server/token precedence, and authentication against a server with ADMIN_TOKEN."""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from nodectl import config
from tests.support.nodectl import base_env, heartbeat, invoke, tsv
from tests.support.server import ServerProcess

TOKEN = "s3cret-admin-token"
JOIN_TOKEN = "s3cret-join-token"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ServerProcess]:
    with ServerProcess(env={"ADMIN_TOKEN": TOKEN, "NODE_JOIN_TOKEN": JOIN_TOKEN}) as process:
        heartbeat(process.base_url, "auth-node-1", {"zone": "a"}, token=JOIN_TOKEN)
        yield process


def _cfg(**contexts: tuple[str, str | None]) -> config.Config:
    return config.Config({n: config.Context(n, s, t) for n, (s, t) in contexts.items()}, None)


def test_precedence_flag_then_env_then_context_then_default() -> None:
    cfg = _cfg(prod=("https://prod:8080", "ptok"))
    cfg.current = "prod"
    env = {"NODECTL_SERVER": "http://env:1", "NODECTL_TOKEN": "etok"}
    assert config.resolve("http://flag:1", "ftok", None, env, cfg) == config.Target(
        "http://flag:1", "ftok", "prod", "--server"
    )
    assert config.resolve(None, None, None, env, cfg) == config.Target(
        "http://env:1", "etok", "prod", "NODECTL_SERVER"
    )
    assert config.resolve(None, None, None, {}, cfg) == config.Target(
        "https://prod:8080", "ptok", "prod", "context prod"
    )
    assert config.resolve(None, None, None, {}, config.Config()) == config.Target(
        "http://localhost:8080", None, None, "default"
    )


def test_context_token_is_never_sent_to_another_server() -> None:
    cfg = _cfg(prod=("https://prod:8080", "ptok"))
    cfg.current = "prod"
    assert config.resolve("http://elsewhere:1", None, None, {}, cfg).token is None
    assert config.resolve(None, None, None, {"NODECTL_SERVER": "http://elsewhere:1"}, cfg).token is None
    assert config.resolve("https://prod:8080/", None, None, {}, cfg).token == "ptok"


def test_ca_precedence_flag_then_env_then_context() -> None:
    cfg = config.Config(
        {"prod": config.Context("prod", "https://prod:8443", None, "/etc/prod-ca.pem")}, "prod"
    )
    env = {"NODECTL_CA": "/env/ca.pem"}
    flag = config.resolve(None, None, None, env, cfg, ca_flag="/flag/ca.pem")
    assert (flag.ca, flag.ca_source) == ("/flag/ca.pem", "--ca")
    from_env = config.resolve(None, None, None, env, cfg)
    assert (from_env.ca, from_env.ca_source) == ("/env/ca.pem", "NODECTL_CA")
    from_context = config.resolve(None, None, None, {}, cfg)
    assert (from_context.ca, from_context.ca_source) == ("/etc/prod-ca.pem", "context prod")
    # like its token, a context's CA only vouches for the context's own server
    assert config.resolve("https://elsewhere:8443", None, None, {}, cfg).ca is None
    assert config.resolve(None, None, None, {}, config.Config()).ca is None


def test_a_relative_context_ca_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nodectl" / "config.toml"
    cfg = config.Config({"prod": config.Context("prod", "https://prod:8443", None, "certs/ca.pem")}, "prod")
    config.save(cfg, path)
    assert 'ca = "certs/ca.pem"' in path.read_text()  # written as given
    loaded = config.load(path)
    assert loaded == cfg
    assert config.resolve(None, None, None, {}, loaded).ca == str(tmp_path / "nodectl" / "certs" / "ca.pem")
    absolute = config.Context("prod", "https://prod:8443", None, "/etc/ca.pem")
    assert config.resolve(
        None, None, None, {}, config.Config({"prod": absolute}, "prod", path.parent)
    ).ca == ("/etc/ca.pem")


def test_context_flag_and_env_select_a_context() -> None:
    cfg = _cfg(a=("http://a:1", None), b=("http://b:1", "btok"))
    cfg.current = "a"
    assert config.resolve(None, None, "b", {}, cfg).server == "http://b:1"
    assert config.resolve(None, None, None, {"NODECTL_CONTEXT": "b"}, cfg).token == "btok"
    with pytest.raises(config.ConfigError, match="'c' is not defined"):
        config.resolve(None, None, "c", {}, cfg)


def test_awkward_names_and_values_round_trip_through_the_file(tmp_path: Path) -> None:
    cfg = _cfg(**{'we"ird name\\': ('http://h:1/?q="x"', "tok\ten\x7f")})
    cfg.current = 'we"ird name\\'
    path = config.save(cfg, tmp_path / "c" / "config.toml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load(path) == cfg


def test_the_file_layout(tmp_path: Path) -> None:
    cfg = _cfg(prod=("https://nodes.example.com", "tok"), dev=("http://127.0.0.1:8080", None))
    cfg.current = "prod"
    path = config.save(cfg, tmp_path / "config.toml")
    assert path.read_text() == (
        "# nodectl contexts; edit with `nodectl context set|use|delete`\n"
        "\n"
        'current-context = "prod"\n'
        "\n"
        "[contexts.dev]\n"
        'server = "http://127.0.0.1:8080"\n'
        "\n"
        "[contexts.prod]\n"
        'server = "https://nodes.example.com"\n'
        'token = "tok"\n'
    )
    assert config.load(path) == cfg
    empty = config.save(config.Config(), tmp_path / "empty.toml")
    assert config.load(empty) == config.Config()


def test_a_context_ca_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[contexts.prod]\nserver = "https://prod"\nca = 1\n')
    with pytest.raises(config.ConfigError, match="ca must be a file name"):
        config.load(path)


def test_broken_config_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "nodectl" / "config.toml"
    path.parent.mkdir()
    path.write_text("this is = = not toml")
    result = invoke(base_env(None, tmp_path), "context", "list")
    assert result.exit_code == 2
    assert "not valid TOML" in result.stderr


def test_context_commands_manage_the_file(tmp_path: Path) -> None:
    env = base_env(None, tmp_path)
    assert invoke(env, "context", "set", "dev", "--server", "http://127.0.0.1:1").exit_code == 0
    assert (
        invoke(env, "context", "set", "prod", "--server", "https://prod.example/", "--token", "t1").exit_code
        == 0
    )
    path = tmp_path / "nodectl" / "config.toml"
    data = tomllib.loads(path.read_text())
    assert data["current-context"] == "dev"  # the first context becomes current
    assert data["contexts"]["prod"] == {"server": "https://prod.example", "token": "t1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert invoke(env, "context", "use", "prod").exit_code == 0
    rows = tsv(invoke(env, "context", "list").stdout)
    assert rows[0] == ["CURRENT", "NAME", "SERVER", "TOKEN"]
    assert rows[1:] == [["", "dev", "http://127.0.0.1:1", "no"], ["*", "prod", "https://prod.example", "yes"]]
    listed = json.loads(invoke(env, "context", "list", "-o", "json").stdout)
    assert listed["current"] == "prod"
    assert all("token" not in item for item in listed["items"])  # never print tokens

    current = invoke(env, "context", "current").stdout
    assert "prod" in current
    assert "https://prod.example (from context prod)" in current

    assert invoke(env, "context", "set", "prod", "--token", "").exit_code == 0  # '' removes the token
    assert "token" not in tomllib.loads(path.read_text())["contexts"]["prod"]

    assert invoke(env, "context", "set", "prod", "--ca", certifi.where()).exit_code == 0
    assert tomllib.loads(path.read_text())["contexts"]["prod"]["ca"] == certifi.where()
    assert f"{certifi.where()} (from context prod)" in invoke(env, "context", "current").stdout
    assert (
        json.loads(invoke(env, "context", "list", "-o", "json").stdout)["items"][1]["ca"] == certifi.where()
    )
    missing = invoke(env, "context", "set", "prod", "--ca", str(tmp_path / "missing.pem"))
    assert missing.exit_code == 2
    assert "--ca: cannot read CA file" in missing.stderr
    assert invoke(env, "context", "set", "prod", "--ca", "").exit_code == 0  # '' removes the CA
    assert "ca" not in tomllib.loads(path.read_text())["contexts"]["prod"]
    assert "the system CA store" in invoke(env, "context", "current").stdout

    assert invoke(env, "context", "delete", "prod").exit_code == 0
    assert "current-context" not in tomllib.loads(path.read_text())
    assert invoke(env, "context", "use", "prod").exit_code == 5
    assert invoke(env, "context", "delete", "prod").exit_code == 5
    assert invoke(env, "context", "set", "new").exit_code == 2  # a new context needs --server
    assert invoke(env, "--context", "nope", "nodes", "list").exit_code == 2


@pytest.mark.parametrize("source", ["--ca", "NODECTL_CA", "context c"])
def test_an_unusable_ca_file_is_a_usage_error_naming_where_it_came_from(tmp_path: Path, source: str) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    env = base_env("https://127.0.0.1:1", tmp_path)
    args: list[str] = []
    if source == "--ca":
        args = ["--ca", str(bad)]
    elif source == "NODECTL_CA":
        env["NODECTL_CA"] = str(bad)
    else:
        del env["NODECTL_SERVER"]
        context = config.Context("c", "https://127.0.0.1:1", None, str(bad))
        config.save(config.Config({"c": context}, "c"), tmp_path / "nodectl" / "config.toml")
    result = invoke(env, *args, "nodes", "list")
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: {source}: {bad} holds no PEM CA certificate (no certificate or crl found)\n"
    )


# --------------------------------------------------------------------------- authentication


def test_without_a_token_the_admin_api_answers_exit_4(auth_server: ServerProcess, tmp_path: Path) -> None:
    result = invoke(base_env(auth_server.base_url, tmp_path), "nodes", "list")
    assert result.exit_code == 4
    assert result.stdout == ""
    assert "not authenticated" in result.stderr


def test_a_wrong_token_is_exit_4(auth_server: ServerProcess, tmp_path: Path) -> None:
    result = invoke(
        base_env(auth_server.base_url, tmp_path), "--token", "wrong", "nodes", "get", "auth-node-1"
    )
    assert result.exit_code == 4


def test_token_from_flag_env_or_context(auth_server: ServerProcess, tmp_path: Path) -> None:
    env = base_env(auth_server.base_url, tmp_path)
    assert invoke(env, "--token", TOKEN, "nodes", "list", "-q").stdout.split() == ["auth-node-1"]
    assert invoke({**env, "NODECTL_TOKEN": TOKEN}, "nodes", "list", "-q").stdout.split() == ["auth-node-1"]

    plain = base_env(None, tmp_path)
    assert (
        invoke(
            plain, "context", "set", "secure", "--server", auth_server.base_url, "--token", TOKEN
        ).exit_code
        == 0
    )
    assert invoke(plain, "nodes", "get", "auth-node-1", "-o", "json").exit_code == 0
    # the same server under another name is "another server": the context's token stays home
    other_spelling = auth_server.base_url.replace("127.0.0.1", "localhost")
    assert invoke(plain, "--server", other_spelling, "nodes", "list").exit_code == 4
