"""Cgroup detection and per-run cgroups on a fake file-system root.

This machine has cgroup v1 memory (the v2 hierarchy holds no controller), so the v2 path cannot
run for real here: these tests cover path parsing and what gets written where, nothing the
kernel would do (docs/runtime.md says so).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodemanager.runtime.base import Limits
from nodemanager.runtime.cgroups import (
    RunCgroups,
    host_allocatable,
    memberships,
    mounts,
    oom_kills,
    own_memory_limit,
)

GIB = 1024**3
V1_MEMORY = "30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory\n"
V2 = "31 25 0:28 / /sys/fs/cgroup/unified rw,nosuid shared:13 - cgroup2 cgroup2 rw,nsdelegate\n"
V2_ONLY = "31 25 0:28 / /sys/fs/cgroup rw,nosuid shared:13 - cgroup2 cgroup2 rw,nsdelegate\n"


def fake_root(tmp_path: Path, mountinfo: str, proc_cgroup: str, files: dict[str, str]) -> Path:
    for name, text in {"proc/self/mountinfo": mountinfo, "proc/self/cgroup": proc_cgroup, **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_mounts_and_memberships_are_parsed() -> None:
    escaped = "32 25 0:29 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,pids\n"
    found = mounts(V1_MEMORY + V2 + escaped + "40 25 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert [(mount.point, mount.fstype) for mount in found] == [
        (Path("/sys/fs/cgroup/memory"), "cgroup"),
        (Path("/sys/fs/cgroup/unified"), "cgroup2"),
        (Path("/sys/fs/cgroup/with space"), "cgroup"),
    ]
    assert "memory" in found[0].options
    assert memberships("5:cpu,cpuacct:/c\n4:memory:/m\n0::/u\n") == {
        "cpu": "/c",
        "cpuacct": "/c",
        "memory": "/m",
        "": "/u",
    }


def test_the_tightest_memory_limit_on_the_way_up_counts_v1(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        V1_MEMORY + V2,
        "4:memory:/jobs/nm\n0::/\n",
        {
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
            "sys/fs/cgroup/memory/jobs/memory.limit_in_bytes": str(3 * GIB),
            "sys/fs/cgroup/memory/jobs/nm/memory.limit_in_bytes": str(4 * GIB),
            "proc/meminfo": "MemTotal:       8388608 kB\nMemFree: 1 kB\n",
        },
    )
    assert own_memory_limit(root) == 3 * GIB
    allocatable = host_allocatable(root)
    assert allocatable.memory_mb == 3 * 1024
    assert (allocatable.cpus or 0) >= 1


def test_a_v2_limit_and_a_namespaced_mount_root(tmp_path: Path) -> None:
    namespaced = "31 25 0:28 /kube/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    root = fake_root(
        tmp_path,
        namespaced,
        "0::/kube/pod1/app\n",
        {
            "sys/fs/cgroup/memory.max": str(GIB),
            "sys/fs/cgroup/app/memory.max": "max",
            "proc/meminfo": "MemTotal:       8388608 kB\n",
        },
    )
    assert own_memory_limit(root) == GIB
    assert host_allocatable(root).memory_mb == 1024
    bare = fake_root(tmp_path / "bare", V2_ONLY, "0::/\n", {"proc/meminfo": "MemTotal: 2097152 kB\n"})
    assert own_memory_limit(bare) is None
    assert host_allocatable(bare).memory_mb == 2048


def test_set_up_moves_the_daemon_into_a_leaf_and_delegates_to_runs(tmp_path: Path) -> None:
    """A daemon in a delegated cgroup of its own (here a scope: `systemd-run --scope -p Delegate=yes`)."""
    root = fake_root(
        tmp_path,
        V2_ONLY,
        "0::/system.slice/nm.scope\n",
        {
            "sys/fs/cgroup/system.slice/nm.scope/cgroup.controllers": "cpuset cpu io memory pids\n",
            "sys/fs/cgroup/system.slice/nm.scope/cgroup.subtree_control": "",
        },
    )
    base = root / "sys/fs/cgroup/system.slice/nm.scope"

    cgroups = RunCgroups.set_up(root, pid=4242)

    assert cgroups is not None
    assert cgroups.runs == base / "runs"
    assert cgroups.controllers == {"memory", "pids", "cpu"}
    assert (base / "nodemanager/cgroup.procs").read_text() == "4242"
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (base / "runs/cgroup.subtree_control").read_text() == "+cpu +memory +pids"

    # the next start finds itself in the leaf already: same base, no second move
    (root / "proc/self/cgroup").write_text("0::/system.slice/nm.scope/nodemanager\n")
    (base / "nodemanager/cgroup.procs").write_text("")
    again = RunCgroups.set_up(root, pid=4343)
    assert again is not None
    assert again.runs == base / "runs"
    assert (base / "nodemanager/cgroup.procs").read_text() == ""


def test_a_service_started_in_its_own_cgroup_makes_no_run_cgroups(tmp_path: Path) -> None:
    """systemd older than 254 (no DelegateSubgroup) starts the daemon at the root of its unit's
    cgroup; moving out and delegating there would keep the unit from starting again while runs
    outlive a restart (EBUSY on the inner cgroup), so nothing is touched."""
    unit = "sys/fs/cgroup/system.slice/agentnodes-nodemanager.service"
    root = fake_root(
        tmp_path,
        V2_ONLY,
        "0::/system.slice/agentnodes-nodemanager.service\n",
        {f"{unit}/cgroup.controllers": "cpu io memory pids\n", f"{unit}/cgroup.subtree_control": ""},
    )
    assert RunCgroups.set_up(root, pid=4242) is None
    assert sorted(path.name for path in (root / unit).iterdir()) == [
        "cgroup.controllers",
        "cgroup.subtree_control",
    ]
    assert (root / unit / "cgroup.subtree_control").read_text() == ""


def test_a_service_started_in_its_delegated_subgroup_gets_run_cgroups(tmp_path: Path) -> None:
    """DelegateSubgroup=nodemanager (systemd 254+): the daemon starts in the leaf, runs go beside it."""
    unit = "sys/fs/cgroup/system.slice/agentnodes-nodemanager.service"
    root = fake_root(
        tmp_path,
        V2_ONLY,
        "0::/system.slice/agentnodes-nodemanager.service/nodemanager\n",
        {
            f"{unit}/cgroup.controllers": "cpu io memory pids\n",
            f"{unit}/cgroup.subtree_control": "",
            f"{unit}/nodemanager/cgroup.procs": "4242\n",
        },
    )
    cgroups = RunCgroups.set_up(root, pid=4242)
    assert cgroups is not None
    assert cgroups.runs == root / unit / "runs"
    assert (root / unit / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / unit / "nodemanager/cgroup.procs").read_text() == "4242\n"


@pytest.mark.parametrize(
    ("mountinfo", "controllers"),
    [
        (V1_MEMORY, "memory"),  # no cgroup2 at all
        (V1_MEMORY + V2, ""),  # hybrid, memory bound to v1 (this machine)
        (V2_ONLY, "cpu pids"),  # v2 without the memory controller delegated
    ],
)
def test_set_up_declines_without_a_delegable_memory_controller(
    tmp_path: Path, mountinfo: str, controllers: str
) -> None:
    root = fake_root(
        tmp_path,
        mountinfo,
        "4:memory:/\n0::/\n",
        {
            "sys/fs/cgroup/cgroup.controllers": controllers,
            "sys/fs/cgroup/unified/cgroup.controllers": controllers,
        },
    )
    assert RunCgroups.set_up(root, pid=1) is None


def test_set_up_declines_when_the_kernel_refuses_to_delegate(tmp_path: Path) -> None:
    root = fake_root(tmp_path, V2_ONLY, "0::/svc\n", {"sys/fs/cgroup/svc/cgroup.controllers": "memory"})
    (root / "sys/fs/cgroup/svc/cgroup.subtree_control").mkdir()  # a write there fails, as EBUSY would
    assert RunCgroups.set_up(root, pid=1) is None


def test_a_run_cgroup_gets_its_limits_and_reports_oom_kills(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    group = runs / "r1"
    group.mkdir(parents=True)
    for name in ("memory.swap.max", "memory.oom.group"):  # files the kernel would provide
        (group / name).write_text("")
    cgroups = RunCgroups(runs, frozenset({"memory", "pids", "cpu"}))

    assert cgroups.create("r1", Limits(cpus=0.5, memory_mb=64, pids_limit=100)) == group

    written = {name: (group / name).read_text() for name in ("memory.max", "memory.swap.max", "pids.max")}
    assert written == {"memory.max": str(64 * 1024 * 1024), "memory.swap.max": "0", "pids.max": "100"}
    assert (group / "memory.oom.group").read_text() == "1"
    assert (group / "cpu.max").read_text() == "50000 100000"
    assert oom_kills(group) == 0
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    assert oom_kills(group) == 1

    memory_only = RunCgroups(runs, frozenset({"memory"}))
    other = memory_only.create("r2", Limits())
    assert sorted(path.name for path in other.iterdir()) == []  # nothing to limit, nothing written
