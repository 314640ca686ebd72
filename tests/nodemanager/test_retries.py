"""nodemanager retries, without a server: service loops, event delivery, waiting for a run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
import stamina
import stamina.instrumentation

from nodeapi import models as m
from nodeapi.client import Call
from nodeapi.errors import BadRequest, Conflict, ServerError, TransportError, Unauthorized
from nodemanager.loops import jittered, service_loop, until_stopped
from nodemanager.reporter import EventsRejected, RunReporter
from nodemanager.runtime.base import Handle, LogLine, RunNotFound, RunSpec, Runtime, RuntimeUnavailable
from nodemanager.supervisor import WAIT_ATTEMPTS, RunSupervisor
from nodemanager.workspace import Workspaces

STEP = 10.0  # upper bound of any single wait in these tests


@pytest.fixture
def retries() -> Iterator[list[stamina.instrumentation.RetryDetails]]:
    """Every retry stamina schedules meanwhile, in order."""
    scheduled: list[stamina.instrumentation.RetryDetails] = []
    stamina.instrumentation.set_on_retry_hooks([scheduled.append])
    yield scheduled
    stamina.instrumentation.set_on_retry_hooks(None)


@pytest.fixture
def instant_retries() -> Iterator[None]:
    stamina.set_testing(True, attempts=10, cap=True)
    yield
    stamina.set_testing(False)


def test_jitter_stays_within_ten_percent() -> None:
    assert all(9.0 <= jittered(10.0) <= 11.0 for _ in range(200))


# ---------------------------------------------------------------- service loops


async def test_service_loop_backs_off_on_every_error_and_starts_over_after_a_good_round(
    caplog: pytest.LogCaptureFixture, retries: list[stamina.instrumentation.RetryDetails]
) -> None:
    caplog.set_level(logging.INFO, logger="nodemanager.loops")
    stop = asyncio.Event()
    script: list[BaseException | None] = [
        TransportError("http://x", "connection refused"),
        ServerError(503, "busy"),
        Unauthorized(401, "invalid token"),  # refused by the server: retried all the same
        ValueError("a bug"),
        ValueError("a bug"),
        None,
        TransportError("http://x", "connection refused"),
        None,
    ]
    outcomes: list[str] = []

    async def heartbeat() -> float:
        outcome = script.pop(0)
        outcomes.append("ok" if outcome is None else type(outcome).__name__)
        if outcome is not None:
            raise outcome
        if not script:
            stop.set()
        return 0.01

    await asyncio.wait_for(
        service_loop("test", heartbeat, backoff_initial=0.01, backoff_ceiling=0.1, stop=stop), STEP
    )

    assert outcomes == [
        "TransportError", "ServerError", "Unauthorized", "ValueError", "ValueError", "ok",
        "TransportError", "ok",
    ]  # fmt: skip
    waits = [details.wait_for for details in retries]
    assert len(waits) == 6
    assert waits[:5] == sorted(waits[:5])  # exponential ...
    assert waits[0] <= 0.02
    assert waits[4] == pytest.approx(0.1)  # ... up to the ceiling
    assert waits[5] <= 0.02  # a good round resets the backoff
    assert all(details.name.endswith(".heartbeat") for details in retries)  # the retry line names the body
    tracebacks = [r for r in caplog.records if r.exc_info and "unexpected error" in r.getMessage()]
    assert len(tracebacks) == 1  # once per streak, not once per retry
    assert "test recovered after 5 failures" in caplog.messages


async def test_service_loop_honours_retry_after_up_to_its_ceiling(
    retries: list[stamina.instrumentation.RetryDetails],
) -> None:
    stop = asyncio.Event()
    script: list[BaseException | None] = [
        ServerError(503, "busy", retry_after=0.02),
        ServerError(503, "busy", retry_after=3600.0),
        None,
    ]

    async def body() -> float:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome
        stop.set()
        return 0.0

    await asyncio.wait_for(service_loop("test", body, backoff_ceiling=0.05, stop=stop), STEP)

    assert [details.wait_for for details in retries] == [pytest.approx(0.02), pytest.approx(0.05)]


async def test_a_service_loop_reads_a_ceiling_function_before_each_round(
    retries: list[stamina.instrumentation.RetryDetails],
) -> None:
    """The heartbeat's ceiling follows the interval the server asks for (regression: a backoff
    grown to 30 s outlasted a short offline window after an apiserver outage, and a healthy
    node's runs were declared lost)."""
    stop = asyncio.Event()
    ceiling = [0.04]
    script: list[BaseException | None] = [
        *[TransportError("http://x", "connection refused")] * 4,
        None,  # a good round: the server now asks for a shorter interval
        *[TransportError("http://x", "connection refused")] * 4,
        None,
    ]

    async def heartbeat() -> float:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome
        ceiling[0] = 0.02
        if not script:
            stop.set()
        return 0.0

    await asyncio.wait_for(
        service_loop("test", heartbeat, backoff_initial=0.01, backoff_ceiling=lambda: ceiling[0], stop=stop),
        STEP,
    )

    waits = [details.wait_for for details in retries]
    assert len(waits) == 8
    assert max(waits[:4]) == pytest.approx(0.04)
    assert max(waits[4:]) == pytest.approx(0.02)


async def test_stop_ends_a_service_loop_in_its_backoff_and_in_its_interval() -> None:
    stop = asyncio.Event()
    calls = 0

    async def failing() -> float:
        nonlocal calls
        calls += 1
        asyncio.get_running_loop().call_later(0.1, stop.set)
        raise TransportError("http://x", "connection refused")

    started = time.monotonic()
    await asyncio.wait_for(
        service_loop("test", failing, backoff_initial=60.0, backoff_ceiling=120.0, stop=stop), STEP
    )
    assert calls == 1
    assert time.monotonic() - started < STEP / 2

    stop.clear()

    async def idle() -> float:
        asyncio.get_running_loop().call_later(0.1, stop.set)
        return 3600.0

    await asyncio.wait_for(service_loop("test", idle, stop=stop), STEP)

    stop.clear()

    async def hanging() -> float:  # cancelled inside the retried call: never taken for an error
        asyncio.get_running_loop().call_later(0.1, stop.set)
        await asyncio.sleep(3600)
        return 0.0

    await asyncio.wait_for(service_loop("test", hanging, stop=stop), STEP)


async def test_until_stopped_does_not_start_when_already_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    await until_stopped(stop, work())
    assert not ran


async def test_until_stopped_passes_on_the_error_of_its_work() -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await until_stopped(asyncio.Event(), broken())


# ---------------------------------------------------------------- event delivery


class FlakyServer:
    """Answers node-event batches after failing with `failures`, recording what it stored."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.stored: list[int] = []

    async def send(self, call: Call[Any]) -> m.NodeEventAck:
        if self.failures:
            raise self.failures.pop(0)
        seqs = [event.node_seq for event in call.body.events]
        self.stored.extend(seq for seq in seqs if seq not in self.stored)
        return m.NodeEventAck(
            run_id="r1", status="running", last_node_seq=max(self.stored), accepted=len(seqs)
        )


@pytest.mark.usefixtures("instant_retries")
async def test_events_are_retried_until_acknowledged() -> None:
    server = FlakyServer(
        TransportError("http://x", "connection refused"),
        ServerError(503, "busy"),
        Unauthorized(401, "token rotated"),
        RuntimeError("a bug"),
    )
    reporter = RunReporter(server, "n1", "r1", last_node_seq=0)  # type: ignore[arg-type]
    reporter.emit("claimed", {})
    await reporter.log("stdout", "hello", None)
    reporter.emit("exited", {"exit_code": 0})

    await asyncio.wait_for(reporter.finished(), STEP)

    assert server.failures == []
    assert server.stored == [1, 2, 3]
    await reporter.close()


@pytest.mark.usefixtures("instant_retries")
@pytest.mark.parametrize("refusal", [Conflict(409, "assigned elsewhere"), BadRequest(422, "invalid")])
async def test_refused_events_are_dropped_without_a_retry(refusal: Exception) -> None:
    server = FlakyServer(refusal)
    reporter = RunReporter(server, "n1", "r1", last_node_seq=0)  # type: ignore[arg-type]
    reporter.emit("exited", {"exit_code": 0})

    with pytest.raises(EventsRejected):
        await asyncio.wait_for(reporter.finished(), STEP)

    assert server.stored == []
    assert reporter.pending == 0
    await reporter.close()


class SmallBodyServer:
    """Refuses (413) a batch whose encoded events exceed `limit` bytes, as a server with a small
    MAX_BODY_SIZE or per-event limit does; stores the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stored: list[m.NodeEventIn] = []

    async def send(self, call: Call[Any]) -> m.NodeEventAck:
        events = call.body.events
        if len(msgspec.json.encode(events)) > self.limit:
            raise BadRequest(413, "request body too large")
        self.stored.extend(event for event in events if event.node_seq > len(self.stored))
        return m.NodeEventAck(
            run_id="r1", status="running", last_node_seq=len(self.stored), accepted=len(events)
        )


@pytest.mark.usefixtures("instant_retries")
async def test_a_too_large_batch_is_split_and_a_too_large_event_cut_never_dropped() -> None:
    """Regression: 413 was taken as a refusal for good, dropping the final event with the rest,
    so the run stayed `running` for ever."""
    server = SmallBodyServer(limit=8 * 1024)
    reporter = RunReporter(server, "n1", "r1", last_node_seq=0)  # type: ignore[arg-type]
    reporter.emit("claimed", {})
    for index in range(40):
        await reporter.log("stdout", f"line {index} " + "x" * 500, None)
    await reporter.log("stdout", "y" * 20_000, None)  # alone above the limit
    reporter.emit("exited", {"exit_code": 0})

    await asyncio.wait_for(reporter.finished(), STEP)

    assert [event.node_seq for event in server.stored] == list(range(1, 44))
    assert server.stored[-1].type == "exited"
    cut = server.stored[-2]
    assert cut.data["text"].startswith("y" * 100)
    assert cut.data["text"].endswith("[cut: too large for the server]")
    await reporter.close()


async def test_closing_a_reporter_cancels_a_send_in_flight() -> None:
    in_flight = asyncio.Event()

    class HangingServer:
        async def send(self, call: Call[Any]) -> m.NodeEventAck:
            in_flight.set()
            await asyncio.sleep(3600)  # a server that never answers
            raise AssertionError("never answered")

    reporter = RunReporter(HangingServer(), "n1", "r1", last_node_seq=0)  # type: ignore[arg-type]
    reporter.emit("exited", {"exit_code": 0})
    await asyncio.wait_for(in_flight.wait(), STEP)

    await asyncio.wait_for(reporter.close(), STEP)
    assert reporter.pending == 1


# ---------------------------------------------------------------- waiting for a run


class FlakyRuntime(Runtime):
    """`wait` fails with `failures` first; `present` says whether the run's container exists."""

    name = "flaky"

    def __init__(self, *failures: Exception, present: bool = True) -> None:
        self.failures = list(failures)
        self.present = present
        self.waits = 0

    async def wait(self, run_id: str) -> int:
        self.waits += 1
        if self.failures:
            raise self.failures.pop(0)
        return 3

    async def list(self) -> list[Handle]:
        return [Handle("r1", "ref", running=True)] if self.present else []

    async def start(self, spec: RunSpec) -> Handle:
        raise NotImplementedError

    async def logs(self, run_id: str, since: str | None = None) -> AsyncIterator[LogLine]:
        raise NotImplementedError
        yield

    async def stop(self, run_id: str, grace: float) -> None:
        raise NotImplementedError

    async def remove(self, run_id: str) -> None:
        raise NotImplementedError

    async def version(self) -> str:
        return "flaky"


def _supervisor(runtime: Runtime, tmp_path: Any) -> RunSupervisor:
    reporter = RunReporter(FlakyServer(), "n1", "r1", last_node_seq=0)  # type: ignore[arg-type]
    return RunSupervisor("r1", runtime, reporter, Workspaces(tmp_path), stop_grace=1.0)


@pytest.mark.usefixtures("instant_retries")
async def test_waiting_is_retried_while_the_container_exists(tmp_path: Any) -> None:
    runtime = FlakyRuntime(RuntimeUnavailable("engine restarting"), RuntimeUnavailable("engine restarting"))
    supervisor = _supervisor(runtime, tmp_path)

    assert await supervisor._wait() == 3
    assert runtime.waits == 3
    await supervisor.reporter.close()


@pytest.mark.usefixtures("instant_retries")
async def test_waiting_ends_when_the_container_is_gone(tmp_path: Any) -> None:
    runtime = FlakyRuntime(RunNotFound("removed"), present=False)
    supervisor = _supervisor(runtime, tmp_path)

    assert await supervisor._wait() is None
    assert runtime.waits == 1
    await supervisor.reporter.close()


@pytest.mark.usefixtures("instant_retries")
async def test_waiting_gives_up_after_its_attempts(tmp_path: Any) -> None:
    runtime = FlakyRuntime(*(RuntimeUnavailable("engine down") for _ in range(10)))
    supervisor = _supervisor(runtime, tmp_path)

    assert await supervisor._wait() is None
    assert runtime.waits == WAIT_ATTEMPTS
    await supervisor.reporter.close()
