"""nodemanager pieces that need no server: configuration, environment layering, labels."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import certifi
import pytest

from nodeapi import models as m
from nodemanager.config import VARIABLES, ConfigError, NodeConfig, default_max_concurrent
from nodemanager.nodeinfo import goarch, node_labels
from nodemanager.runtime.base import DEFAULT_PIDS_LIMIT, Limits
from nodemanager.supervisor import container_env, run_limits

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_contract() -> None:
    config = NodeConfig.from_env({})

    assert config.api_server_url == "http://localhost:8080"
    assert config.node_id == "dev-node-01"
    assert config.workspace_dir == Path("/tmp/agents-workspaces")
    assert config.runtime == "auto"
    assert config.image_pull_policy == "if-not-present"
    assert config.max_concurrent == default_max_concurrent() >= 1
    assert config.node_labels == {}
    assert (config.stop_grace, config.docker_network, config.node_join_token) == (10.0, "host", None)
    assert config.api_server_ca is None  # the system CA store
    assert (config.node_cpus, config.node_memory_mb, config.allow_capabilities) == (None, None, ())


def test_values_are_parsed() -> None:
    config = NodeConfig.from_env(
        {
            "API_SERVER_URL": "http://10.0.0.1:9000/",
            "NODE_LABELS": "gpu=true, example.com/zone=a",
            "MAX_CONCURRENT": "7",
            "RUNTIME": "Process",
            "IMAGE_PULL_POLICY": "never",
            "STOP_GRACE": "2.5",
            "CONTAINER_LABELS": "agentnodes.test=1",
            "NODE_CPUS": "1.5",
            "NODE_MEMORY_MB": "2048",
            "ALLOW_CAPABILITIES": "net_raw,CAP_SYS_PTRACE",
        }
    )

    assert config.api_server_url == "http://10.0.0.1:9000"
    assert config.node_labels == {"gpu": "true", "example.com/zone": "a"}
    assert (config.max_concurrent, config.runtime, config.image_pull_policy) == (7, "process", "never")
    assert config.stop_grace == 2.5
    assert config.container_labels == {"agentnodes.test": "1"}
    assert (config.node_cpus, config.node_memory_mb) == (1.5, 2048)
    assert config.allow_capabilities == ("NET_RAW", "SYS_PTRACE")


def test_the_process_environment_is_read_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_LABELS", "gpu=true,zone=a")
    monkeypatch.setenv("CONTAINER_LABELS", "t=1")
    monkeypatch.setenv("MAX_CONCURRENT", "3")
    config = NodeConfig.from_env()
    assert (config.node_labels, config.container_labels) == ({"gpu": "true", "zone": "a"}, {"t": "1"})
    assert config.max_concurrent == 3
    monkeypatch.setenv("NODE_LABELS", "gpu")
    with pytest.raises(ConfigError, match="NODE_LABELS term 'gpu'"):
        NodeConfig.from_env()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NODE_LABELS": "gpu"}, "NODE_LABELS term 'gpu' must look like key=value"),
        ({"NODE_LABELS": "a=b c"}, "NODE_LABELS value 'b c'"),
        ({"MAX_CONCURRENT": "0"}, "MAX_CONCURRENT must be between 1"),
        ({"MAX_CONCURRENT": "many"}, "MAX_CONCURRENT must be an integer"),
        ({"RUNTIME": "podman"}, "RUNTIME must be one of auto, docker, process"),
        ({"IMAGE_PULL_POLICY": "sometimes"}, "IMAGE_PULL_POLICY must be one of"),
        ({"STOP_GRACE": "-1"}, "STOP_GRACE must be between 0"),
        ({"API_SERVER_URL": "localhost:8080"}, "API_SERVER_URL must start with http://"),
        ({"NODE_ID": "bad id"}, "NODE_ID 'bad id' is invalid"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"NODE_CPUS": "0"}, "NODE_CPUS must be above 0 and at most 4096"),
        ({"NODE_CPUS": "4097"}, "NODE_CPUS must be above 0 and at most 4096"),
        ({"NODE_CPUS": "two"}, "NODE_CPUS must be a number of CPUs"),
        ({"NODE_MEMORY_MB": "0"}, "NODE_MEMORY_MB must be between 1 and 4294967296"),
        ({"NODE_MEMORY_MB": "1.5"}, "NODE_MEMORY_MB must be an integer"),
        ({"ALLOW_CAPABILITIES": "ALL"}, "ALLOW_CAPABILITIES must name each capability"),
        ({"ALLOW_CAPABILITIES": "NET_RAW,FLY"}, "ALLOW_CAPABILITIES must name Linux capabilities"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_env(env)
    assert message in str(info.value)


def test_api_server_ca_is_a_pem_file_of_ca_certificates(tmp_path: Path) -> None:
    config = NodeConfig.from_env(
        {"API_SERVER_URL": "https://apiserver:8443", "API_SERVER_CA": certifi.where()}
    )
    assert config.api_server_ca == Path(certifi.where())

    with pytest.raises(ConfigError, match="API_SERVER_CA must name a readable PEM file of CA certificates"):
        NodeConfig.from_env({"API_SERVER_CA": str(tmp_path / "missing.pem")})
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("-----BEGIN NOTHING-----\n")
    with pytest.raises(
        ConfigError, match=r"API_SERVER_CA must name a PEM file of CA certificates, got '.*ca\.pem' \("
    ):
        NodeConfig.from_env({"API_SERVER_CA": str(not_pem)})


def _nodemanager(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodemanager", *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_lists_every_variable() -> None:
    result = _nodemanager("--help")

    assert result.returncode == 0
    for name, _, _ in VARIABLES:
        assert name in result.stdout


def test_a_bad_value_exits_2_with_a_message() -> None:
    result = _nodemanager(env={"MAX_CONCURRENT": "-3"})

    assert result.returncode == 2
    assert "MAX_CONCURRENT must be between 1" in result.stderr
    assert result.stdout == ""


def _run(env: dict[str, str], secret_env: dict[str, str] | None = None) -> m.Run:
    return m.Run(
        id="r",
        status="scheduled",
        image="i",
        command=[],
        env=env,
        secret_env=secret_env or {},
        node_selector={},
        node_id="n",
        exit_code=None,
        created_at=datetime.now(UTC),
    )


def test_run_env_beats_proxy_which_beats_node_env() -> None:
    config = m.EnvConfig(
        proxy=m.ProxyConfig(http_proxy="http://proxy:3128", no_proxy="localhost"),
        env={"HTTP_PROXY": "http://stale:1", "SHARED": "node", "NODE_ONLY": "1"},
        secret_env={"NODE_KEY": "n-secret", "RUN_KEY": "node's"},
    )

    env = container_env(config, _run({"SHARED": "run", "NO_PROXY": "example.com"}, {"RUN_KEY": "run's"}))

    assert env == {
        "HTTP_PROXY": "http://proxy:3128",
        "http_proxy": "http://proxy:3128",
        "NO_PROXY": "example.com",
        "no_proxy": "localhost",
        "SHARED": "run",
        "NODE_ONLY": "1",
        "NODE_KEY": "n-secret",
        "RUN_KEY": "run's",
        "AGENTNODES_RUN_ID": "r",
        "AGENTNODES_ATTEMPT": "0",
    }


def test_unset_proxy_fields_inject_nothing() -> None:
    assert container_env(m.EnvConfig(), _run({})) == {"AGENTNODES_RUN_ID": "r", "AGENTNODES_ATTEMPT": "0"}


@pytest.mark.parametrize(
    ("machine", "arch"),
    [("x86_64", "amd64"), ("AMD64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm"), ("i686", "386")],
)
def test_arch_is_normalised_like_goarch(machine: str, arch: str) -> None:
    assert goarch(machine) == arch


def test_auto_labels() -> None:
    labels = node_labels()
    assert labels["os"] == "linux"
    assert labels["arch"] in {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"}


def test_a_run_s_limits_come_from_its_resources_and_sandbox() -> None:
    def run(**fields: object) -> m.Run:
        return m.Run(
            id="r1",
            status="scheduled",
            image="i",
            command=[],
            env={},
            node_selector={},
            node_id="n1",
            exit_code=None,
            created_at=datetime.now(UTC),
            **fields,  # type: ignore[arg-type]
        )

    assert run_limits(run()) == Limits(pids_limit=DEFAULT_PIDS_LIMIT)
    confined = run(
        resources=m.Resources(cpus=0.5, memory_mb=256),
        sandbox=m.Sandbox(read_only_rootfs=True, network="none", pids_limit=64),
    )
    assert run_limits(confined) == Limits(
        cpus=0.5, memory_mb=256, pids_limit=64, read_only_rootfs=True, no_network=True
    )
