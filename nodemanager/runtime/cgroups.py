"""Control groups for the process runtime: a cgroup v2 per run where the node can make one, and
the memory limit the nodemanager itself runs under (v1 or v2), for the node's capacity.

Per-run cgroups need cgroup2 mounted with the memory controller available in the nodemanager's
own cgroup, and that cgroup writable: root, or a systemd unit with `Delegate=yes`. A cgroup that
holds processes cannot hand controllers to its children, so the daemon first moves itself into
a leaf `<own>/nodemanager`, then enables the controllers for `<own>/runs`, and gives each run
`<own>/runs/<run_id>`. Anything else (cgroup v1, no delegation, other processes beside the daemon)
leaves ProcessRuntime with RLIMIT_AS.

Under systemd the daemon must start in that leaf already (`DelegateSubgroup=nodemanager`, systemd
254+, as deploy/systemd/agentnodes-nodemanager.service sets): started in its unit's own cgroup, it
would turn that cgroup into an inner one, and with runs outliving a restart (KillMode=process)
systemd could not place the next daemon there (EBUSY) until they ended. So a daemon started at
the root of a `.service` cgroup makes no run cgroups (RLIMIT_AS, with a warning).

Paths come from /proc/self/mountinfo and /proc/self/cgroup; `fs_root` lets tests point the
same logic at a directory tree of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nodemanager.runtime.base import Allocatable, Limits

log = logging.getLogger(__name__)

DAEMON_LEAF = "nodemanager"
RUNS_GROUP = "runs"
OPTIONAL_CONTROLLERS = ("pids", "cpu")  # used when available; memory is the one required
CPU_PERIOD_US = 100_000
MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Mount:
    root: str  # the path inside the hierarchy that is mounted (not / inside a cgroup namespace)
    point: Path
    fstype: str
    options: frozenset[str]  # super options: the v1 controllers of the hierarchy


def mounts(mountinfo: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        left, separator, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not separator or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append(
            Mount(_unescape(fields[3]), Path(_unescape(fields[4])), tail[0], frozenset(tail[2].split(",")))
        )
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def memberships(proc_cgroup: str) -> dict[str, str]:
    """Controller (or "" for the v2 hierarchy) -> cgroup path, from a /proc/<pid>/cgroup text."""
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _directory(mount: Mount, cgroup_path: str, fs_root: Path) -> Path:
    relative = cgroup_path
    if mount.root != "/" and (cgroup_path == mount.root or cgroup_path.startswith(mount.root + "/")):
        relative = cgroup_path[len(mount.root) :]
    return fs_root / str(mount.point).lstrip("/") / relative.lstrip("/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _proc(fs_root: Path, name: str) -> str:
    return _read(fs_root / "proc" / "self" / name) or ""


def own_memory_limit(fs_root: Path = Path("/")) -> int | None:
    """The tightest memory limit (bytes) over the nodemanager's cgroup and its ancestors, v1 or v2;
    None when there is none."""
    paths = memberships(_proc(fs_root, "cgroup"))
    limits: list[int] = []
    for mount in mounts(_proc(fs_root, "mountinfo")):
        if mount.fstype == "cgroup2" and "" in paths:
            path, limit_file = paths[""], "memory.max"
        elif mount.fstype == "cgroup" and "memory" in mount.options and "memory" in paths:
            path, limit_file = paths["memory"], "memory.limit_in_bytes"
        else:
            continue
        top = fs_root / str(mount.point).lstrip("/")
        directory = _directory(mount, path, fs_root)
        while True:
            raw = (_read(directory / limit_file) or "").strip()
            if raw.isdigit():
                limits.append(int(raw))
            if directory == top or top not in directory.parents:
                break
            directory = directory.parent
    return min(limits) if limits else None


class RunCgroups:
    """The cgroups of process runs: `<runs>/<run_id>`, with the controllers `<runs>` hands down."""

    def __init__(self, runs: Path, controllers: frozenset[str]) -> None:
        self.runs = runs
        self.controllers = controllers

    @classmethod
    def set_up(cls, fs_root: Path = Path("/"), pid: int | None = None) -> RunCgroups | None:
        """Prepare per-run cgroups under the daemon's own cgroup (moving the daemon, `pid`, into a
        leaf); None, with the reason logged, where that cannot be done."""
        v2 = [mount for mount in mounts(_proc(fs_root, "mountinfo")) if mount.fstype == "cgroup2"]
        own = memberships(_proc(fs_root, "cgroup")).get("")
        if not v2 or own is None:
            log.info("no cgroup v2 hierarchy: process runs are limited with RLIMIT_AS")
            return None
        own_dir = _directory(v2[0], own, fs_root)
        if own_dir.name.endswith(".service"):
            log.warning(
                "systemd started the nodemanager in its unit's own cgroup (%s): run cgroups below it "
                "would keep the unit from starting again while runs outlive a restart, so process runs "
                "are limited with RLIMIT_AS. With systemd 254 or later, DelegateSubgroup=%s in the unit "
                "gives them cgroups (docs/operations.md, systemd)",
                own,
                DAEMON_LEAF,
            )
            return None
        # moved there by an earlier start, or started there by systemd (DelegateSubgroup)
        base = own_dir.parent if own_dir.name == DAEMON_LEAF else own_dir
        available = set((_read(base / "cgroup.controllers") or "").split())
        if "memory" not in available:
            log.info(
                "the memory controller is not delegated to %s: process runs are limited with RLIMIT_AS", base
            )
            return None
        wanted = frozenset({"memory", *(name for name in OPTIONAL_CONTROLLERS if name in available)})
        runs = base / RUNS_GROUP
        try:
            if own_dir == base:
                leaf = base / DAEMON_LEAF
                leaf.mkdir(exist_ok=True)
                (leaf / "cgroup.procs").write_text(str(pid if pid is not None else os.getpid()))
            _enable(base, wanted)
            runs.mkdir(exist_ok=True)
            _enable(runs, wanted)
        except OSError as exc:
            log.info(
                "cannot delegate cgroups under %s (%s): process runs are limited with RLIMIT_AS", base, exc
            )
            return None
        log.info("process runs get a cgroup each under %s (%s)", runs, ", ".join(sorted(wanted)))
        return cls(runs, wanted)

    def path(self, run_id: str) -> Path:
        return self.runs / run_id

    def create(self, run_id: str, limits: Limits) -> Path:
        """The run's cgroup with its limits written; OSError if the kernel refuses."""
        group = self.path(run_id)
        group.mkdir(exist_ok=True)
        if limits.memory_mb is not None:
            (group / "memory.max").write_text(str(limits.memory_mb * MEBIBYTE))
            _write_if_present(group / "memory.swap.max", "0")  # no swap beyond memory_mb, as Docker
        _write_if_present(group / "memory.oom.group", "1")  # an OOM kill ends the whole run
        if "pids" in self.controllers:
            (group / "pids.max").write_text(str(limits.pids_limit))
        if "cpu" in self.controllers and limits.cpus is not None:
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        return group

    def remove(self, run_id: str) -> None:
        """Kill whatever is left in the run's cgroup and delete it (best effort)."""
        group = self.path(run_id)
        if not group.is_dir():
            return
        _write_if_present(group / "cgroup.kill", "1")
        with contextlib.suppress(OSError):
            group.rmdir()


def oom_kills(group: Path) -> int:
    """The `oom_kill` count of a cgroup's memory.events (0 when unreadable)."""
    for line in (_read(group / "memory.events") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def _enable(group: Path, controllers: frozenset[str]) -> None:
    enabled = set((_read(group / "cgroup.subtree_control") or "").split())
    missing = sorted(controllers - enabled)
    if missing:
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{name}" for name in missing))


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(value)


def host_allocatable(fs_root: Path = Path("/")) -> Allocatable:
    """What local processes can use: the CPUs this process may run on, and the host's memory or
    the limit of the nodemanager's cgroup (which its process runs share) if that is lower."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    memory = None
    for line in (_read(fs_root / "proc" / "meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal" and value.split() and value.split()[0].isdigit():
            memory = int(value.split()[0]) * 1024
    limit = own_memory_limit(fs_root)
    if limit is not None and (memory is None or limit < memory):
        memory = limit
    return Allocatable(cpus=float(max(1, cpus)), memory_mb=memory // MEBIBYTE if memory else None)
