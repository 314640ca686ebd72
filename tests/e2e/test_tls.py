"""HTTPS end to end: an apiserver serving TLS_CERT_FILE/TLS_KEY_FILE with tokens, the real nodectl
and a real nodemanager (process runtime) verifying it against a throwaway CA, and what each says
when it cannot. The CA and the server certificate (127.0.0.1 and localhost) are made by openssl.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nodectl import base_env, run
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import REPO_ROOT, ServerProcess
from tests.support.tls import ThrowawayCA, make_test_ca
from tests.support.wait import eventually

ADMIN_TOKEN = "tls-admin-token"
NODE_JOIN_TOKEN = "tls-join-token"
TOKENS = {"ADMIN_TOKEN": ADMIN_TOKEN, "NODE_JOIN_TOKEN": NODE_JOIN_TOKEN}
CERTIFICATE_ERROR = "certificate verify failed: unable to get local issuer certificate"


@pytest.fixture(scope="module")
def test_ca(workdir: Path) -> ThrowawayCA:
    return make_test_ca(workdir / "ca")


@pytest.fixture(scope="module")
def tls_server(workdir: Path, test_ca: ThrowawayCA) -> Iterator[ServerProcess]:
    data_dir = workdir / "server"
    data_dir.mkdir()
    env = {
        **TOKENS,
        "TLS_CERT_FILE": str(test_ca.cert_file),
        "TLS_KEY_FILE": str(test_ca.key_file),
        "NODE_HEARTBEAT_INTERVAL": "1",
        "NODE_OFFLINE_AFTER": "30",
    }
    with ServerProcess(env=env, data_dir=data_dir, tls_ca=test_ca.ca_file) as server:
        yield server


@pytest.fixture
def cli_env(tls_server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return base_env(tls_server.base_url, tmp_path / "config", NODECTL_TOKEN=ADMIN_TOKEN)


@pytest.fixture
def nodes(request: pytest.FixtureRequest) -> Iterator[list[NodeManagerProcess]]:
    """Started nodemanagers, stopped at teardown; their logs go to the test's report."""
    started: list[NodeManagerProcess] = []
    yield started
    for node in started:
        node.stop()
        request.node.add_report_section("teardown", f"nodemanager {node.node_id} log", node.log())


def _node(tls_server: ServerProcess, tmp_path: Path, node_id: str, **env: str) -> NodeManagerProcess:
    env = {"RUNTIME": "process", "NODE_JOIN_TOKEN": NODE_JOIN_TOKEN, **env}
    return NodeManagerProcess(tls_server.base_url, tmp_path, node_id, env).start()


def _node_status(tls_server: ServerProcess, node_id: str) -> str | None:
    with tls_server.client() as http:
        response = http.get(f"/api/v1/nodes/{node_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


# ------------------------------------------------------------------ nodectl


def test_nodectl_verifies_the_server_against_the_ca_given_by_flag_env_or_context(
    tls_server: ServerProcess, test_ca: ThrowawayCA, cli_env: dict[str, str]
) -> None:
    assert tls_server.base_url.startswith("https://")
    by_flag = run(cli_env, "--ca", str(test_ca.ca_file), "nodes", "list", "-o", "json")
    assert by_flag.returncode == 0, by_flag.stderr
    assert "items" in json.loads(by_flag.stdout)

    by_env = run({**cli_env, "NODECTL_CA": str(test_ca.ca_file)}, "nodes", "list")
    assert by_env.returncode == 0, by_env.stderr

    context_env = {k: v for k, v in cli_env.items() if k not in ("NODECTL_SERVER", "NODECTL_TOKEN")}
    created = run(
        context_env, "context", "set", "tls", "--server", tls_server.base_url, "--token", ADMIN_TOKEN,
        "--ca", str(test_ca.ca_file), "--use",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    by_context = run(context_env, "nodes", "list", "-q")
    assert by_context.returncode == 0, by_context.stderr


def test_nodectl_without_the_ca_fails_with_one_clear_line(
    tls_server: ServerProcess, cli_env: dict[str, str]
) -> None:
    result = run(cli_env, "nodes", "list")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot reach {tls_server.base_url}: {CERTIFICATE_ERROR} (trusting the system CA store); "
        "pass --ca or set NODECTL_CA\n"
    )


def test_nodectl_with_another_ca_names_the_file_it_trusted(
    tls_server: ServerProcess, test_ca: ThrowawayCA, cli_env: dict[str, str]
) -> None:
    # the server's certificate is no CA: trusting it alone does not verify the chain
    result = run(cli_env, "--ca", str(test_ca.cert_file), "nodes", "list")

    assert result.returncode == 1
    assert f"(trusting CA file {test_ca.cert_file})" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------ nodemanager


def test_a_node_with_api_server_ca_comes_online_and_runs_over_https(
    tls_server: ServerProcess,
    test_ca: ThrowawayCA,
    cli_env: dict[str, str],
    nodes: list[NodeManagerProcess],
    tmp_path: Path,
) -> None:
    nodes.append(_node(tls_server, tmp_path, "tls-node", API_SERVER_CA=str(test_ca.ca_file)))
    eventually(lambda: _node_status(tls_server, "tls-node") == "online", timeout=30, what="tls-node online")

    submitted = run(
        {**cli_env, "NODECTL_CA": str(test_ca.ca_file)},
        "runs", "submit", "ignored-by-the-process-runtime", "--wait", "--timeout", "60", "--", "true",
        timeout=90,
    )  # fmt: skip

    assert submitted.returncode == 0, submitted.stderr + nodes[0].log()
    run_id = submitted.stdout.split()[0]
    with tls_server.client() as http:
        finished = http.get(f"/api/v1/runs/{run_id}").json()
    assert (finished["status"], finished["node_id"], finished["exit_code"]) == ("succeeded", "tls-node", 0)
    assert "certificate verify failed" not in nodes[0].log()


def test_a_node_without_api_server_ca_logs_the_certificate_error_and_never_registers(
    tls_server: ServerProcess, nodes: list[NodeManagerProcess], tmp_path: Path
) -> None:
    nodes.append(_node(tls_server, tmp_path, "untrusting-node"))
    node = nodes[0]
    node.wait_for_log("retry 2 in", timeout=30)  # retried like any unreachable server

    log = node.log()
    assert f"cannot reach {tls_server.base_url}: {CERTIFICATE_ERROR} (trusting the system CA store)" in log
    assert "set API_SERVER_CA" in log
    assert "Traceback" not in log
    assert node.running
    assert _node_status(tls_server, "untrusting-node") is None


# ------------------------------------------------------------------ apiserver start-up


def _run_server(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_certificate_without_its_key_stops_the_server_naming_the_variable(
    test_ca: ThrowawayCA, tmp_path: Path
) -> None:
    result = _run_server(
        {**TOKENS, "APISERVER_DATA_DIR": str(tmp_path), "TLS_CERT_FILE": str(test_ca.cert_file)}
    )

    assert result.returncode == 2
    assert "TLS_KEY_FILE must be set too when TLS_CERT_FILE is" in result.stderr
    assert "Traceback" not in result.stderr


def test_plain_http_with_tokens_on_every_address_warns_that_tokens_travel_in_clear(tmp_path: Path) -> None:
    with ServerProcess(env={**TOKENS, "APISERVER_HOST": "0.0.0.0"}, data_dir=tmp_path) as server:
        log = server.log()
    warnings = [line for line in log.splitlines() if "bearer tokens travel in clear text" in line]
    assert len(warnings) == 1, log
    assert json.loads(warnings[0])["level"] == "warning"
    assert "TLS_CERT_FILE" in warnings[0]


def test_the_https_server_does_not_warn(tls_server: ServerProcess) -> None:
    assert "Uvicorn running on https://" in tls_server.log()
    assert "clear text" not in tls_server.log()
