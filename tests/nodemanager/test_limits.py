"""Runs held to their limits on both runtimes: memory, deadlines (enforced by the supervisor),
and what the process runtime cannot confine. Real engine, real processes; the apiserver is a
stub that stores and acknowledges events (the end-to-end tests use the real one)."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nodeapi import models as m
from nodeapi.client import Call
from nodemanager.reporter import RunReporter
from nodemanager.runtime.base import Limits, RunSpec, StartFailed
from nodemanager.runtime.process import ProcessRuntime
from nodemanager.supervisor import Adoption, RunSupervisor
from tests.support.runtimes import STEP, RuntimeUnderTest, run_to_end
from tests.support.wait import eventually_async

GRACE = 1.0  # STOP_GRACE of these supervisors
IGNORES_TERM = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
MARGIN = 6.0  # container stop and removal on a busy 2-core machine


class EventStore:
    """The apiserver's node-events endpoint, reduced to storing and acknowledging."""

    def __init__(self) -> None:
        self.events: list[m.NodeEventIn] = []
        self.cancel_requested = False

    async def send(self, call: Call[Any]) -> m.NodeEventAck:
        batch: m.NodeEventBatch = call.body
        last = self.events[-1].node_seq if self.events else 0
        self.events.extend(event for event in batch.events if event.node_seq > last)
        return m.NodeEventAck(
            run_id="r",
            status="running",
            last_node_seq=self.events[-1].node_seq if self.events else 0,
            accepted=len(batch.events),
            cancel_requested=self.cancel_requested,
        )

    def final(self) -> tuple[str, dict[str, Any]]:
        event = self.events[-1]
        return event.type, event.data

    def types(self) -> list[str]:
        return [event.type for event in self.events]


def supervised(
    under_test: RuntimeUnderTest, runtime: Any, run_id: str, deadline: int | None
) -> tuple[RunSupervisor, EventStore]:
    store = EventStore()
    reporter = RunReporter(store, "n1", run_id, last_node_seq=0)  # type: ignore[arg-type]
    supervisor = RunSupervisor(
        run_id, runtime, reporter, under_test.workspaces, GRACE, deadline_seconds=deadline
    )
    return supervisor, store


async def gone(runtime: Any, run_id: str) -> bool:
    return all(handle.run_id != run_id for handle in await runtime.list())


def memory_hog(kind: str) -> list[str]:
    """Something that allocates far more than 32 MiB: busybox in the test image, python locally."""
    if kind == "docker":
        return ["sh", "-c", "head -c 200m /dev/zero | tail"]  # busybox tail holds the unterminated line
    return [sys.executable, "-c", "block = bytearray(512 * 1024 * 1024)"]


# ---------------------------------------------------------------- deadlines


async def test_a_run_past_its_deadline_gets_sigterm_then_sigkill_and_is_removed(
    under_test: RuntimeUnderTest,
) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", IGNORES_TERM], deadline_seconds=1)
    supervisor, store = supervised(under_test, runtime, spec.run_id, deadline=1)
    began = time.monotonic()

    await asyncio.wait_for(supervisor.execute(spec), 1 + GRACE + MARGIN + STEP)

    elapsed = time.monotonic() - began
    assert store.final() == ("exited", {"exit_code": 137, "deadline_exceeded": True})
    assert 1 + GRACE - 0.2 <= elapsed <= 1 + GRACE + MARGIN, elapsed
    assert await gone(runtime, spec.run_id)
    await supervisor.reporter.close()


async def test_a_run_that_honours_sigterm_ends_with_its_own_code_and_the_deadline_noted(
    under_test: RuntimeUnderTest,
) -> None:
    runtime = await under_test.runtime()
    command = ["sh", "-c", "trap 'echo stopping; exit 7' TERM; while :; do sleep 0.1; done"]
    spec = under_test.spec(command, deadline_seconds=1)
    supervisor, store = supervised(under_test, runtime, spec.run_id, deadline=1)

    await asyncio.wait_for(supervisor.execute(spec), 1 + GRACE + MARGIN + STEP)

    assert store.final() == ("exited", {"exit_code": 7, "deadline_exceeded": True})
    assert "stopping" in [event.data.get("text") for event in store.events]


async def test_a_run_within_its_deadline_just_exits(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", "exit 3"], deadline_seconds=30)
    supervisor, store = supervised(under_test, runtime, spec.run_id, deadline=30)

    await asyncio.wait_for(supervisor.execute(spec), STEP)

    assert store.final() == ("exited", {"exit_code": 3})


async def test_a_cancel_before_the_deadline_ends_the_run_cancelled(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", IGNORES_TERM], deadline_seconds=1)
    supervisor, store = supervised(under_test, runtime, spec.run_id, deadline=1)
    execution = asyncio.create_task(supervisor.execute(spec))

    async def started() -> bool:
        return "started" in store.types()

    await eventually_async(started, STEP, what="the run started")

    supervisor.request_cancel()  # the deadline passes while the run ignores SIGTERM: still a cancel
    await asyncio.wait_for(execution, 1 + GRACE + MARGIN + STEP)

    assert store.final() == ("cancelled", {"exit_code": 137})


async def test_an_adopted_run_gets_only_the_time_left_since_its_start(under_test: RuntimeUnderTest) -> None:
    first = await under_test.runtime()
    command = ["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]
    spec = under_test.spec(command, deadline_seconds=60)
    await first.start(spec)
    [handle] = [handle for handle in await first.list() if handle.run_id == spec.run_id]
    assert handle.deadline_seconds == 60  # kept with the run for a restarted node
    started_at = (await first.state(spec.run_id)).started_at
    assert started_at is not None
    assert abs((datetime.now(UTC) - started_at).total_seconds()) < STEP

    restarted = await under_test.runtime()
    supervisor, store = supervised(under_test, restarted, spec.run_id, deadline=60)
    long_ago = datetime.now(UTC) - timedelta(seconds=59.5)  # as the server recorded the start
    adoption = Adoption(
        status="running", container_ref=handle.ref, resume_logs_after=None, started_at=long_ago
    )
    began = time.monotonic()

    await asyncio.wait_for(supervisor.adopt(adoption), GRACE + MARGIN + STEP)

    assert store.final() == ("exited", {"exit_code": 7, "deadline_exceeded": True})
    assert time.monotonic() - began < 0.5 + GRACE + MARGIN
    assert await gone(restarted, spec.run_id)


# ---------------------------------------------------------------- memory


async def test_a_run_over_its_memory_ends_as_its_runtime_can_tell(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(memory_hog(under_test.kind), limits=Limits(memory_mb=32))
    supervisor, store = supervised(under_test, runtime, spec.run_id, deadline=None)
    began = time.monotonic()

    await asyncio.wait_for(supervisor.execute(spec), STEP)

    if under_test.kind == "docker":
        assert runtime.memory_enforcement == "docker"
        assert store.final() == ("exited", {"exit_code": 137, "oom_killed": True})
    else:
        # RLIMIT_AS: the allocation fails inside the run, which exits as it will; the kernel
        # records no OOM kill, so none is reported
        assert runtime.memory_enforcement == "rlimit"
        assert store.final() == ("exited", {"exit_code": 1})
        assert "MemoryError" in [event.data.get("text") for event in store.events]
    assert time.monotonic() - began < STEP / 2


async def test_a_run_within_its_memory_is_not_disturbed(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    if under_test.kind == "docker":
        command = ["sh", "-c", "head -c 8m /dev/zero | tail > /dev/null; echo done"]
    else:
        command = [sys.executable, "-c", "block = bytearray(16 * 1024 * 1024); print('done')"]
    spec = under_test.spec(command, limits=Limits(memory_mb=128))

    exit_code, lines = await run_to_end(runtime, spec)

    assert (exit_code, [line.text for line in lines]) == (0, ["done"])
    assert not (await runtime.state(spec.run_id)).oom_killed


# ---------------------------------------------------------------- what processes cannot confine


@pytest.mark.parametrize("limits", [Limits(no_network=True), Limits(read_only_rootfs=True)])
async def test_the_process_runtime_refuses_what_it_cannot_confine(tmp_path: Path, limits: Limits) -> None:
    runtime = ProcessRuntime("n1", tmp_path / ".process-runtime")
    spec = RunSpec("r1", "ignored", ["true"], {}, tmp_path / "r1", limits=limits)

    with pytest.raises(StartFailed, match="cannot confine") as refused:
        await runtime.start(spec)

    assert refused.value.cause == "run"  # the run's request, not the node's fault: no quarantine
    assert await runtime.list() == []
    assert runtime.memory_enforcement == "rlimit"
