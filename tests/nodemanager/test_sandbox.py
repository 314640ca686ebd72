"""Agent containers are confined: what a run sees from inside, on the real engine, and the rules
that build and check the engine options."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from nodemanager.runtime.base import Limits, RunSpec, StartFailed
from nodemanager.runtime.docker import DockerRuntime
from nodemanager.runtime.sandbox import (
    DEFAULT_CAPABILITIES,
    EngineFeatures,
    container_options,
    host_network_warning,
    parse_capabilities,
    reaches_engine,
    refuse_unconfined,
)
from nodemanager.workspace import Workspaces
from tests.support.images import TEST_LABELS
from tests.support.runtimes import STEP, run_to_end

DOCKER_DEFAULT_CAPS = 0x00000000A80425FB  # CapEff of a container with Docker's default set
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7}
CAP_BITS |= {"NET_BIND_SERVICE": 10, "NET_RAW": 13}
READ_PIDS_MAX = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"  # v1, v2
MEBIBYTE = 1024 * 1024

RuntimeFactory = Callable[..., Coroutine[Any, Any, DockerRuntime]]


@pytest.fixture
async def docker_runtime(docker_client: Any) -> AsyncIterator[RuntimeFactory]:
    """Factory of DockerRuntimes on the real engine (network `none` unless asked otherwise)."""
    made: list[DockerRuntime] = []

    async def make(network_mode: str = "none", extra_capabilities: tuple[str, ...] = ()) -> DockerRuntime:
        runtime = await DockerRuntime.connect(
            f"test-node-{uuid.uuid4().hex[:8]}",
            pull_policy="never",
            network_mode=network_mode,
            extra_labels=TEST_LABELS,
            extra_capabilities=extra_capabilities,
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
def spec(tmp_path: Path, test_image: str) -> Callable[..., RunSpec]:
    workspaces = Workspaces(tmp_path / "workspaces")

    def make(command: str, limits: Limits | None = None) -> RunSpec:
        run_id = f"sb-{uuid.uuid4().hex[:12]}"
        return RunSpec(
            run_id,
            test_image,
            ["sh", "-c", command],
            {},
            workspaces.create(run_id),
            dict(TEST_LABELS),
            limits=limits or Limits(),
        )

    return make


def status_field(lines: list[str], name: str) -> str:
    [value] = [line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{name}:")]
    return value


def capability_mask(names: tuple[str, ...]) -> int:
    return sum(1 << CAP_BITS[name] for name in names)


# ---------------------------------------------------------------- on the engine


@pytest.mark.docker
async def test_a_container_has_no_new_privileges_fewer_capabilities_and_the_default_pids_limit(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec], docker_client: Any
) -> None:
    runtime = await docker_runtime()
    run = spec(f"cat /proc/self/status; echo pids.max=$({READ_PIDS_MAX})")

    exit_code, output = await run_to_end(runtime, run)

    lines = [line.text for line in output]
    assert exit_code == 0, lines
    assert status_field(lines, "NoNewPrivs") == "1"
    effective = int(status_field(lines, "CapEff"), 16)
    assert effective == capability_mask(DEFAULT_CAPABILITIES)
    assert effective & ~DOCKER_DEFAULT_CAPS == 0  # a subset of Docker's default...
    assert bin(effective).count("1") < bin(DOCKER_DEFAULT_CAPS).count("1")  # ...with fewer bits
    assert not effective & (1 << CAP_BITS["NET_RAW"])
    assert "pids.max=1024" in lines
    host = docker_client.containers.get(f"agentnodes-run-{run.run_id}").attrs["HostConfig"]
    assert (host["Privileged"], host["PidMode"], host["IpcMode"]) == (False, "", "private")
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert [mount["Source"] for mount in host["Mounts"]] == [str(run.workspace.absolute())]
    await runtime.remove(run.run_id)


@pytest.mark.docker
async def test_the_run_pids_limit_and_allowed_capabilities_apply(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec]
) -> None:
    runtime = await docker_runtime(extra_capabilities=parse_capabilities("net_raw"))
    run = spec(f"grep CapEff /proc/self/status; echo pids.max=$({READ_PIDS_MAX})", Limits(pids_limit=64))

    exit_code, output = await run_to_end(runtime, run)

    lines = [line.text for line in output]
    assert exit_code == 0, lines
    assert int(status_field(lines, "CapEff"), 16) == capability_mask((*DEFAULT_CAPABILITIES, "NET_RAW"))
    assert "pids.max=64" in lines
    await runtime.remove(run.run_id)


@pytest.mark.docker
async def test_a_read_only_root_keeps_the_workspace_and_tmp_writable(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec]
) -> None:
    runtime = await docker_runtime()
    script = (
        "touch /root-file 2>/dev/null && echo root-writable || echo root-refused; "
        "echo kept > /workspace/result && echo workspace-ok; "
        "echo scratch > /tmp/scratch && cat /tmp/scratch"
    )
    run = spec(script, Limits(read_only_rootfs=True))

    exit_code, output = await run_to_end(runtime, run)

    assert exit_code == 0
    assert [line.text for line in output] == ["root-refused", "workspace-ok", "scratch"]
    assert (run.workspace / "result").read_text() == "kept\n"
    await runtime.remove(run.run_id)


@pytest.mark.docker
async def test_network_none_leaves_only_loopback_even_on_a_host_network_node(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec], docker_client: Any
) -> None:
    runtime = await docker_runtime(network_mode="host")
    run = spec("ls /sys/class/net", Limits(no_network=True))

    exit_code, output = await run_to_end(runtime, run)

    assert exit_code == 0
    assert [line.text for line in output] == ["lo"]
    container = docker_client.containers.get(f"agentnodes-run-{run.run_id}")
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    await runtime.remove(run.run_id)


@pytest.mark.docker
async def test_a_container_over_its_memory_is_oom_killed_and_the_engine_says_so(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec], docker_client: Any
) -> None:
    runtime = await docker_runtime()
    # busybox tail keeps a line without a newline in memory: 200 MiB of zeros against 32 MiB
    hog = spec("head -c 200m /dev/zero | tail", Limits(memory_mb=32))
    within = spec("head -c 4m /dev/zero | tail >/dev/null", Limits(memory_mb=32))
    killed = spec("sleep 60 & kill -9 $!; wait $!")  # 137 as well, but no OOM

    assert (await run_to_end(runtime, hog))[0] == 137
    assert (await runtime.state(hog.run_id)).oom_killed
    assert (await run_to_end(runtime, within))[0] == 0
    assert not (await runtime.state(within.run_id)).oom_killed
    assert (await run_to_end(runtime, killed))[0] == 137
    assert not (await runtime.state(killed.run_id)).oom_killed
    host = docker_client.containers.get(f"agentnodes-run-{hog.run_id}").attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"]) == (32 * MEBIBYTE, 32 * MEBIBYTE)  # no swap beyond it


@pytest.mark.docker
async def test_cpus_become_the_engine_quota_within_what_it_has(
    docker_runtime: RuntimeFactory, spec: Callable[..., RunSpec], docker_client: Any
) -> None:
    runtime = await docker_runtime()
    half = spec("true", Limits(cpus=0.5))
    greedy = spec("true", Limits(cpus=4096))

    await runtime.start(half)
    await runtime.start(greedy)

    def nano_cpus(run: RunSpec) -> int:
        return int(
            docker_client.containers.get(f"agentnodes-run-{run.run_id}").attrs["HostConfig"]["NanoCpus"]
        )

    assert nano_cpus(half) == 500_000_000
    assert nano_cpus(greedy) == docker_client.info()["NCPU"] * 1_000_000_000
    for run in (half, greedy):
        assert await asyncio.wait_for(runtime.wait(run.run_id), STEP) == 0
        await runtime.remove(run.run_id)


@pytest.mark.docker
async def test_a_workspace_that_holds_the_engine_socket_is_never_mounted(
    docker_client: Any, spec: Callable[..., RunSpec]
) -> None:
    run = spec("true")
    with socket.socket(socket.AF_UNIX) as engine_socket:
        engine_socket.bind(str(run.workspace / "engine.sock"))
        runtime = DockerRuntime(
            docker_client,
            "test-node-socket",
            pull_policy="never",
            network_mode="none",
            extra_labels=TEST_LABELS,
            engine_sockets=[str(run.workspace / "engine.sock")],
        )
        with pytest.raises(StartFailed, match="engine's socket") as refused:
            await runtime.start(run)
    assert refused.value.cause == "node"
    assert await runtime.list() == []


@pytest.mark.docker
async def test_the_engine_reports_what_it_can_enforce(docker_runtime: RuntimeFactory) -> None:
    runtime = await docker_runtime()
    allocatable = await runtime.allocatable()
    assert (allocatable.cpus or 0) >= 1
    assert (allocatable.memory_mb or 0) > 64
    assert runtime.memory_enforcement == ("docker" if runtime.engine.memory_limit else "none")


# ---------------------------------------------------------------- the rules alone


def test_allowed_capabilities_are_named_and_known() -> None:
    assert parse_capabilities(" net_raw,CAP_SYS_PTRACE,NET_RAW ,") == ("NET_RAW", "SYS_PTRACE")
    assert parse_capabilities("") == ()
    with pytest.raises(ValueError, match="ALL is not allowed"):
        parse_capabilities("NET_RAW,all")
    with pytest.raises(ValueError, match="FLY"):
        parse_capabilities("FLY")


@pytest.mark.parametrize(
    ("unconfined", "problem"),
    [
        ({"privileged": True}, "privileged"),
        ({"pid_mode": "host"}, "pid_mode=host"),
        ({"ipc_mode": "host"}, "ipc_mode=host"),
        ({"cap_add": ["all"]}, "every capability"),
        ({"security_opt": []}, "no-new-privileges"),
        ({"mounts": [{"Source": "/var/run/docker.sock", "Target": "/s"}]}, "engine's socket"),
        ({"mounts": [{"Source": "/run", "Target": "/r"}]}, "engine's socket"),
        ({"mounts": [{"Source": "/", "Target": "/host"}]}, "engine's socket"),
        ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "engine's socket"),
    ],
)
def test_unconfined_options_are_refused_as_the_node_s_fault(unconfined: dict[str, Any], problem: str) -> None:
    options = container_options(Limits(), workspace=Path("/tmp/ws"), network_mode="none") | unconfined
    with pytest.raises(StartFailed, match=problem) as refused:
        refuse_unconfined(options)
    assert refused.value.cause == "node"


def test_a_path_reaches_the_engine_when_it_is_or_holds_a_socket(tmp_path: Path) -> None:
    sockets = [str(tmp_path / "engine" / "api.sock")]
    assert reaches_engine(str(tmp_path / "engine"), sockets)
    assert reaches_engine(str(tmp_path), sockets)
    assert reaches_engine(str(tmp_path / "somewhere" / "docker.sock"), sockets)
    assert not reaches_engine(str(tmp_path / "workspaces" / "run-1"), sockets)
    (tmp_path / "link").symlink_to("/run")
    assert reaches_engine(str(tmp_path / "link"))


def test_options_follow_the_limits_and_what_the_engine_can_do() -> None:
    limits = Limits(cpus=1.5, memory_mb=256, pids_limit=99, read_only_rootfs=True, no_network=True)
    options = container_options(limits, workspace=Path("/tmp/ws"), network_mode="host")
    assert options["network_mode"] == "none"
    assert (options["nano_cpus"], options["mem_limit"], options["memswap_limit"]) == (
        1_500_000_000,
        256 * MEBIBYTE,
        256 * MEBIBYTE,
    )
    assert (options["pids_limit"], options["read_only"]) == (99, True)
    assert "size=256m" in options["tmpfs"]["/tmp"]
    assert options["cap_add"] == list(DEFAULT_CAPABILITIES)

    weak = EngineFeatures.from_info({"SwapLimit": False, "PidsLimit": False, "CpuCfsQuota": False, "NCPU": 2})
    options = container_options(limits, workspace=Path("/tmp/ws"), network_mode="host", engine=weak)
    assert not {"memswap_limit", "pids_limit", "nano_cpus"} & set(options)
    assert options["mem_limit"] == 256 * MEBIBYTE
    assert weak.shortcomings() == ["swap beyond memory_mb", "pids_limit", "cpus"]
    plain = container_options(Limits(), workspace=Path("/tmp/ws"), network_mode="agents")
    assert plain["network_mode"] == "agents"
    assert not {"read_only", "mem_limit", "tmpfs"} & set(plain)


def test_the_host_network_warning_names_what_agents_reach() -> None:
    warning = host_network_warning("host") or ""
    assert "169.254.169.254" in warning
    assert "loopback" in warning
    assert host_network_warning("none") is None
    assert host_network_warning("agents") is None
