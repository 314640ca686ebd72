"""The systemd units of deploy/systemd pass `systemd-analyze verify` and keep what operations
rely on: an environment file, restarts on failure, a state directory, hardening, and for the
nodemanager runs that outlive the daemon (KillMode=process) in a delegated cgroup."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nodemanager.runtime.cgroups import DAEMON_LEAF
from tests.support.ports import require_binary

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
APISERVER = UNITS / "agentnodes-apiserver.service"
NODEMANAGER = UNITS / "agentnodes-nodemanager.service"
# what verify says on a machine without the programs installed at /opt/agent-nodes, and, before
# systemd 254, of the one directive it does not know yet (the unit's comment says what follows)
EXPECTED = (
    re.compile(r"^agentnodes-\w+\.service: Command /opt/agent-nodes/bin/\w+ is not executable: No such file"),
    re.compile(
        r"agentnodes-nodemanager\.service:\d+: Unknown key '?DelegateSubgroup'? in section \[?Service\]?"
    ),
)


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_analyze_verify_accepts_the_units() -> None:
    analyze = require_binary("systemd-analyze", "systemd-analyze (Debian package systemd)")
    done = subprocess.run(
        [analyze, "verify", str(APISERVER), str(NODEMANAGER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not any(expected.search(line) for expected in EXPECTED)
    ]
    assert complaints == []


@pytest.mark.parametrize("unit", [APISERVER, NODEMANAGER], ids=lambda unit: unit.stem)
def test_the_units_restart_on_failure_from_an_environment_file_and_are_hardened(unit: Path) -> None:
    found = directives(unit)
    name = unit.stem.removeprefix("agentnodes-")
    assert found["EnvironmentFile"] == [f"/etc/agent-nodes/{name}.env"]
    assert found["ExecStart"] == [f"/opt/agent-nodes/bin/{name}"]
    assert found["Restart"] == ["on-failure"]
    assert found["RestartPreventExitStatus"] == ["2"]  # invalid settings: a restart cannot help
    assert found["StateDirectory"] == [f"agentnodes-{name}"]
    assert found["User"] == ["agentnodes"]
    assert found["NoNewPrivileges"] == ["yes"]
    assert found["ProtectSystem"] == ["strict"]
    assert f"/var/lib/agentnodes-{name}" in found["ReadWritePaths"][0].split()
    assert (UNITS / f"{name}.env.example").is_file()


def test_the_apiserver_has_a_private_tmp() -> None:
    assert directives(APISERVER)["PrivateTmp"] == ["yes"]


def test_the_nodemanager_leaves_its_runs_running_in_a_delegated_cgroup() -> None:
    found = directives(NODEMANAGER)
    assert found["KillMode"] == ["process"]
    assert found["Delegate"] == ["yes"]
    # the leaf nodemanager/runtime/cgroups.py moves the daemon into, made by systemd 254+ instead
    assert found["DelegateSubgroup"] == [DAEMON_LEAF]
    # a private /tmp would be torn down under process runs that outlive the daemon
    assert found["PrivateTmp"] == ["no"]
    assert {"/tmp", "/var/tmp"} <= set(found["ReadWritePaths"][0].split())
    # never /tmp: the engine mounts workspaces by their host path, the credential must persist
    assert "WORKSPACE_DIR=/var/lib/agentnodes-nodemanager/workspaces" in found["Environment"]
    assert "STATE_DIR=/var/lib/agentnodes-nodemanager/state" in found["Environment"]
    # the daemon writes its delegated cgroup: /sys/fs/cgroup must not be read-only
    assert "ProtectControlGroups" not in found
    assert "ProtectKernelTunables" not in found


def unit_environment(name: str) -> dict[str, str]:
    """What the unit gives its program: its Environment= lines, then its example environment file."""
    environment = dict(
        line.split("=", 1) for line in directives(UNITS / f"agentnodes-{name}.service")["Environment"]
    )
    for line in (UNITS / f"{name}.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            environment[key.strip()] = value.strip()
    return environment


def test_the_example_environment_files_are_valid_settings(tmp_path: Path) -> None:
    """As written, each example is accepted by the program it configures (docs kept true)."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(UNITS.parents[1]), "HOME": str(tmp_path)}
    checked = subprocess.run(
        [sys.executable, "-m", "server", "check-config"],
        env={**base, **unit_environment("apiserver")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("apiserver: configuration valid (http://0.0.0.0:8080, database sqlite")
    parsed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nodemanager.config import NodeConfig; print(NodeConfig.from_env().node_id)",
        ],
        env={**base, **unit_environment("nodemanager")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert parsed.stdout.strip() == "CHANGE-ME-node-name"
