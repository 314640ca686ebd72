"""The health checks a node reports with every heartbeat, against real directories and engines."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker

from nodeapi.models import ConditionReport
from nodemanager.conditions import MEBIBYTE, check_conditions
from nodemanager.runtime.docker import DockerRuntime
from nodemanager.runtime.process import ProcessRuntime
from tests.support.ports import free_port


def by_type(reports: list[ConditionReport]) -> dict[str, ConditionReport]:
    return {report.type: report for report in reports}


async def test_a_healthy_node_passes_every_check(tmp_path: Path) -> None:
    runtime = ProcessRuntime("n1", tmp_path / "state")
    reports = by_type(await check_conditions(runtime, tmp_path / "ws", min_free_mb=1))
    assert set(reports) == {"runtime", "workspace", "disk"}
    assert all(report.ok for report in reports.values())
    assert reports["runtime"].message.startswith("process (python")
    assert list((tmp_path / "ws").iterdir()) == []  # the write probe leaves nothing behind


async def test_a_workspace_that_cannot_be_written_fails(tmp_path: Path) -> None:
    blocked = tmp_path / "ws"
    blocked.write_text("a file where the directory should be")
    runtime = ProcessRuntime("n1", tmp_path / "state")
    workspace = by_type(await check_conditions(runtime, blocked, min_free_mb=1))["workspace"]
    assert not workspace.ok
    assert f"cannot write in {blocked}" in workspace.message


async def test_free_space_below_the_floor_fails(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // MEBIBYTE
    runtime = ProcessRuntime("n1", tmp_path / "state")
    disk = by_type(await check_conditions(runtime, tmp_path, min_free_mb=free_mb + 1024))["disk"]
    assert not disk.ok
    assert f"below the floor of {free_mb + 1024} MiB" in disk.message


async def test_an_engine_that_does_not_answer_fails(tmp_path: Path) -> None:
    # a loopback port nothing listens on: the engine is gone
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{free_port()}", version="1.41", timeout=2)
    try:
        runtime = DockerRuntime(client, "n1")
        check = by_type(await check_conditions(runtime, tmp_path / "ws", min_free_mb=1))["runtime"]
    finally:
        client.close()
    assert not check.ok
    assert "the docker runtime does not answer" in check.message
