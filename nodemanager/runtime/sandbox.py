"""How an agent container is confined: the engine options of a run's limits and sandbox.

The one place that decides them (DockerRuntime and the in-container proxy probe use it), and
that refuses what must never happen whatever the settings say: a privileged container, the
host's PID or IPC namespace, a mount that reaches the engine's socket. No import of the Docker
SDK here, so the settings can validate ALLOW_CAPABILITIES cheaply.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodemanager.runtime.base import Limits, StartFailed

log = logging.getLogger(__name__)

WORKSPACE_MOUNT = "/workspace"
NO_NEW_PRIVILEGES = "no-new-privileges:true"
# Docker's default set (moby oci/caps/defaults.go) less AUDIT_WRITE, MKNOD, NET_RAW, SETFCAP,
# SETPCAP and SYS_CHROOT, which agents do not need (docs/security.md says why for each)
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CHOWN",  # root in its own image: package managers and build tools chown, chmod, overwrite
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETGID",  # dropping to an unprivileged user: su, gosu, apt's _apt sandbox
    "SETUID",
    "KILL",  # signalling its own processes that run as another user
    "NET_BIND_SERVICE",  # listening below port 1024
)
# every capability of Linux 6.x (capability.h), without the CAP_ prefix
KNOWN_CAPABILITIES: frozenset[str] = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
        "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
        "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
        "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
        "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
        "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    }
)  # fmt: skip
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
MIN_NANO_CPUS = 10_000_000  # the engine refuses less than 0.01 CPU
MEBIBYTE = 1024 * 1024
TMPFS_DEFAULT_MB = 512  # /tmp of a read-only container without a memory limit


def parse_capabilities(raw: str) -> tuple[str, ...]:
    """ALLOW_CAPABILITIES: `NET_RAW,SYS_PTRACE` (any case, `CAP_` prefix optional), in order, once each."""
    names: list[str] = []
    for item in raw.split(","):
        name = item.strip().upper().removeprefix("CAP_")
        if not name:
            continue
        if name == "ALL":
            raise ValueError("must name each capability agents need; ALL is not allowed")
        if name not in KNOWN_CAPABILITIES:
            raise ValueError(f"must name Linux capabilities (e.g. NET_RAW,SYS_PTRACE), got {item.strip()!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class EngineFeatures:
    """What the engine's kernel can enforce (`docker info`), and what it has."""

    memory_limit: bool = True
    swap_limit: bool = True
    pids_limit: bool = True
    cpu_quota: bool = True
    cpus: int | None = None
    memory_bytes: int | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> EngineFeatures:
        def supported(key: str) -> bool:
            return info.get(key) is not False  # an engine that does not say is taken at its word

        cpus, memory = info.get("NCPU"), info.get("MemTotal")
        return cls(
            memory_limit=supported("MemoryLimit"),
            swap_limit=supported("SwapLimit"),
            pids_limit=supported("PidsLimit"),
            cpu_quota=supported("CpuCfsQuota"),
            cpus=cpus if isinstance(cpus, int) and cpus > 0 else None,
            memory_bytes=memory if isinstance(memory, int) and memory > 0 else None,
        )

    def shortcomings(self) -> list[str]:
        """What runs will not be held to on this engine, for a warning at start."""
        missing = {
            "memory_mb": self.memory_limit,
            "swap beyond memory_mb": self.swap_limit,
            "pids_limit": self.pids_limit,
            "cpus": self.cpu_quota,
        }
        return [what for what, enforced in missing.items() if not enforced]


def container_options(
    limits: Limits,
    *,
    workspace: Path,
    network_mode: str,
    extra_capabilities: Iterable[str] = (),
    engine: EngineFeatures | None = None,
    engine_sockets: Iterable[str] = ENGINE_SOCKETS,
) -> dict[str, Any]:
    """Keyword arguments of `containers.create` for a run confined by `limits`."""
    engine = engine or EngineFeatures()
    mounts = [{"Type": "bind", "Source": str(workspace), "Target": WORKSPACE_MOUNT, "ReadOnly": False}]
    options: dict[str, Any] = {
        "mounts": mounts,
        "working_dir": WORKSPACE_MOUNT,
        "network_mode": "none" if limits.no_network else network_mode,
        **hardening(limits.pids_limit, extra_capabilities, engine),
    }
    if limits.read_only_rootfs:
        tmp_mb = limits.memory_mb or TMPFS_DEFAULT_MB  # tmpfs pages count against the memory limit
        options["read_only"] = True
        options["tmpfs"] = {"/tmp": f"rw,exec,nosuid,nodev,mode=1777,size={tmp_mb}m"}
    if limits.cpus is not None and engine.cpu_quota:
        options["nano_cpus"] = nano_cpus(limits.cpus, engine.cpus)
    if limits.memory_mb is not None and engine.memory_limit:
        options["mem_limit"] = limits.memory_mb * MEBIBYTE
        if engine.swap_limit:
            options["memswap_limit"] = limits.memory_mb * MEBIBYTE  # memory and swap together: no swap
    refuse_unconfined(options, engine_sockets)
    return options


def hardening(
    pids_limit: int, extra_capabilities: Iterable[str] = (), engine: EngineFeatures | None = None
) -> dict[str, Any]:
    """What every container the node starts gets, whatever its run asks."""
    capabilities = list(dict.fromkeys([*DEFAULT_CAPABILITIES, *extra_capabilities]))
    options: dict[str, Any] = {
        "security_opt": [NO_NEW_PRIVILEGES],
        "cap_drop": ["ALL"],
        "cap_add": capabilities,
        "privileged": False,
        "ipc_mode": "private",  # the daemon's default may be `shareable`; never `host`
    }
    if engine is None or engine.pids_limit:
        options["pids_limit"] = pids_limit
    return options


def nano_cpus(cpus: float, available: int | None) -> int:
    """`cpus` in the engine's unit, within what it accepts (0.01 up to the CPUs it has)."""
    wanted = cpus if available is None else min(cpus, float(available))
    if wanted < cpus:
        log.info("a run asks for %g CPUs; the engine has %d, so it gets those", cpus, available)
    return max(MIN_NANO_CPUS, math.floor(wanted * 1e9))


def refuse_unconfined(options: Mapping[str, Any], engine_sockets: Iterable[str] = ENGINE_SOCKETS) -> None:
    """StartFailed (the node's fault: a setting) for options that would hand a run the node."""
    problems = []
    if options.get("privileged"):
        problems.append("privileged")
    for key in ("pid_mode", "ipc_mode", "userns_mode", "uts_mode"):
        if str(options.get(key) or "").lower() == "host":
            problems.append(f"{key}=host")
    if "ALL" in {str(cap).upper() for cap in options.get("cap_add") or ()}:
        problems.append("every capability")
    if NO_NEW_PRIVILEGES not in (options.get("security_opt") or ()):
        problems.append("without no-new-privileges")
    sources = [str(mount.get("Source", "")) for mount in options.get("mounts") or ()]
    sources += [str(volume).split(":", 1)[0] for volume in options.get("volumes") or ()]
    sockets = tuple(engine_sockets)
    problems += [
        f"a mount of {source}, which reaches the engine's socket"
        for source in sources
        if reaches_engine(source, sockets)
    ]
    if problems:
        raise StartFailed(f"refusing an unconfined container: {', '.join(problems)}", cause="node")


def reaches_engine(source: str, engine_sockets: Iterable[str] = ENGINE_SOCKETS) -> bool:
    """Whether a bind of `source` would expose the engine's socket: the socket itself, any socket
    named docker.sock, or a directory that holds one (/run, /var/run, /)."""
    if not source:
        return False
    real = os.path.realpath(source)
    if os.path.basename(real) == "docker.sock" or os.path.basename(source) == "docker.sock":
        return True
    try:
        if stat.S_ISSOCK(os.stat(real).st_mode):
            return True
    except OSError:
        pass
    for socket_path in engine_sockets:
        socket_real = os.path.realpath(socket_path)
        if real == socket_real or socket_real.startswith(real.rstrip("/") + "/"):
            return True
    return False


def engine_sockets(docker_url: str | None) -> tuple[str, ...]:
    """The paths of the engine's socket: the usual ones and the one DOCKER_HOST or the URL names."""
    url = docker_url or os.environ.get("DOCKER_HOST") or ""
    extra = (url.split("://", 1)[1],) if url.startswith(("unix://", "http+unix://")) else ()
    return (*ENGINE_SOCKETS, *extra)


def host_network_warning(network_mode: str) -> str | None:
    """The start-up warning for DOCKER_NETWORK=host, or None."""
    if network_mode != "host":
        return None
    return (
        "DOCKER_NETWORK=host: agent containers share the node's network stack; they reach every "
        "service listening on the node's loopback (127.0.0.1, ::1) and the cloud metadata address "
        "169.254.169.254, unless a run asks for network none (see docs/security.md)"
    )
