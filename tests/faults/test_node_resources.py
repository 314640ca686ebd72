"""Scenario 7: what a node lacks. A workspace that cannot be created makes the node report its
`workspace` condition failing, so runs wait queued (none fails) until it is repaired; a full
disk under the runs' output does not wedge the nodemanager and every run ends; an image missing
under IMAGE_PULL_POLICY=never fails the run, pulling nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Faults
from tests.support.ports import unavailable
from tests.support.wait import eventually

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SMALL_DISK = "2m"  # room for a few runs' records, not for one run's flood of output


@pytest.mark.docker
def test_a_workspace_that_cannot_be_created_holds_runs_back_until_repaired(
    docker_client: Any, faults: Faults
) -> None:
    blocker = faults.workdir / "not-a-directory"
    blocker.write_text("a file where the workspace root should be\n")
    server = faults.apiserver()
    api = faults.api(server)
    faults.node(
        server,
        "node-a",
        "docker",
        WORKSPACE_DIR=str(blocker / "workspaces"),
        STATE_DIR=str(faults.workdir / "node-a-state"),
    )
    run_ids = [api.submit(faults.ledger.command(0.2)) for _ in range(3)]

    def held_back() -> bool:
        return all("unhealthy (a condition fails)" in (api.run(r)["message"] or "") for r in run_ids)

    eventually(held_back, timeout=15)
    node = api.node("node-a")
    assert node is not None
    assert node["status"] == "online"
    assert node["schedulable"] is False
    workspace = next(c for c in node["conditions"] if c["type"] == "workspace")
    assert str(blocker) in workspace["message"]
    assert {api.run(r)["status"] for r in run_ids} == {"queued"}
    assert not faults.ledger.executions(), "no command ran"

    blocker.unlink()  # repaired: the next heartbeat says so and the runs go there
    runs = api.wait_settled(run_ids, timeout=30)
    faults.check(api)
    assert {runs[r]["status"] for r in run_ids} == {"succeeded"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem of SMALL_DISK: a tmpfs, else a loop-mounted ext4 file."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    attempts = [
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0755", "tmpfs", str(mountpoint)],
    ]
    image = tmp_path / "small-disk.ext4"
    if shutil.which("mkfs.ext4"):
        attempts.append(["mount", "-o", "loop", str(image), str(mountpoint)])
    errors = []
    for command in attempts if os.geteuid() == 0 else []:
        if "loop" in command:
            subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        errors.append(f"{' '.join(command)}: {done.stderr.strip()}")
    else:
        message = f"a small filesystem needs root and mount: {errors or 'not root'}"
        unavailable(message)
    try:
        yield mountpoint
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True, timeout=30)


def test_a_full_disk_under_the_runs_output_wedges_nothing(small_disk: Path, faults: Faults) -> None:
    """The process runtime records each run's output under WORKSPACE_DIR: two runs flood a disk
    too small for it. Their commands complete, so the runs end with their real exit code (0)
    within seconds, their last output line says why the output stops early, and the node runs
    the next run as usual (the floods' records are removed with them). MIN_FREE_DISK_MB=0: the
    disk check that would keep runs off so small a disk is not what this scenario is about."""
    server = faults.apiserver()
    api = faults.api(server)
    node = faults.node(
        server, "node-a", "process", WORKSPACE_DIR=str(small_disk / "workspaces"), MIN_FREE_DISK_MB="0"
    )
    flood = "busybox seq 1 400000"  # about 2.7 MB of output: more than the disk holds
    floods = [api.submit(faults.ledger.command(0.5, output=flood)) for _ in range(2)]

    runs = api.wait_settled(floods, timeout=20)
    for run_id in floods:
        assert runs[run_id]["status"] == "succeeded", runs[run_id]
        last = [e for e in api.events(run_id) if e["type"] == "log"][-1]["data"]["text"]
        assert "output dropped" in last, last
        assert "No space left on device" in last, last
    assert node.running

    after = api.submit(faults.ledger.command(0.2, output="echo fine"))
    assert api.wait_status(after, {"succeeded", "failed"}, timeout=20)["status"] == "succeeded"
    assert "fine" in [e["data"]["text"] for e in api.events(after) if e["type"] == "log"]
    faults.check(api)


@pytest.mark.docker
def test_a_missing_image_with_pull_policy_never_fails_the_run_and_pulls_nothing(
    docker_client: Any, faults: Faults
) -> None:
    import docker.errors

    image = "agentnodes-test/never-pulled:1.0"
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(image, force=True)
    server = faults.apiserver()
    api = faults.api(server)
    node = faults.node(server, "node-a", "docker", IMAGE_PULL_POLICY="never")
    missing = api.submit(faults.ledger.command(0.2), image=image)
    fine = api.submit(faults.ledger.command(0.2))

    runs = api.wait_settled([missing, fine], timeout=20)
    faults.check(api)
    assert runs[fine]["status"] == "succeeded"
    assert runs[missing]["status"] == "failed"
    assert image in runs[missing]["message"]
    assert "IMAGE_PULL_POLICY=never" in runs[missing]["message"]
    assert missing not in faults.ledger.executions()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)
    assert "pulling image" not in node.log()
