"""One suite for every runtime: DockerRuntime on the real engine, and ProcessRuntime."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nodemanager.runtime import make_runtime
from nodemanager.runtime.base import (
    ImageNotFound,
    LogLine,
    RunNotFound,
    RunSpec,
    Runtime,
    RuntimeUnavailable,
    StartFailed,
)
from nodemanager.runtime.docker import DockerRuntime
from nodemanager.runtime.process import ProcessRuntime
from nodemanager.workspace import InvalidRunId
from tests.support.images import TEST_LABELS
from tests.support.runtimes import STEP, RuntimeUnderTest, collect, run_to_end, texts
from tests.support.wait import eventually


async def test_output_arrives_per_stream_in_order(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    script = (
        "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; seq 1 300; "
        "printf 'no newline at '; sleep 0.2; printf 'the end'"
    )
    exit_code, lines = await run_to_end(runtime, under_test.spec(["sh", "-c", script]))
    assert exit_code == 0
    assert texts(lines[:3]) == [("stdout", "one"), ("stderr", "two"), ("stdout", "three")]
    assert [text for _, text in texts(lines[3:303])] == [str(n) for n in range(1, 301)]
    assert texts(lines[303:]) == [("stdout", "no newline at the end")]
    stamps = [line.ts for line in lines]
    assert all(stamps)
    assert stamps == sorted(stamps, key=str)  # fixed-width stamps sort as text


async def test_non_utf8_output_is_replaced_not_fatal(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    exit_code, lines = await run_to_end(runtime, under_test.spec(["sh", "-c", r"printf 'a\377b\n'; echo ok"]))
    assert exit_code == 0
    assert texts(lines) == [("stdout", "a\ufffdb"), ("stdout", "ok")]


@pytest.mark.parametrize("code", [0, 3, 255])
async def test_exit_code_is_reported(under_test: RuntimeUnderTest, code: int) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", f"exit {code}"])
    exit_code, _ = await run_to_end(runtime, spec)
    assert exit_code == code
    [handle] = [handle for handle in await runtime.list() if handle.run_id == spec.run_id]
    assert not handle.running


async def test_env_reaches_the_run_and_workspace_is_the_writable_cwd(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(
        ["sh", "-c", 'echo "$GREETING"; pwd; echo written > result.txt'], env={"GREETING": "hello from env"}
    )
    exit_code, lines = await run_to_end(runtime, spec)
    assert exit_code == 0
    expected_cwd = "/workspace" if under_test.kind == "docker" else str(spec.workspace)
    assert [line.text for line in lines] == ["hello from env", expected_cwd]
    assert (spec.workspace / "result.txt").read_text() == "written\n"


async def test_stop_sends_sigterm_first(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(
        ["sh", "-c", "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done"]
    )
    await runtime.start(spec)
    await wait_for_line(runtime, spec.run_id, "ready")
    started = time.monotonic()
    await asyncio.wait_for(runtime.stop(spec.run_id, grace=10), STEP)
    assert time.monotonic() - started < 8, "the run honoured SIGTERM; no need to wait for the grace period"
    assert await asyncio.wait_for(runtime.wait(spec.run_id), STEP) == 42
    assert "got TERM" in [line.text for line in await collect(runtime.logs(spec.run_id))]


async def test_stop_kills_a_run_ignoring_sigterm_after_the_grace_period(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"])
    await runtime.start(spec)
    await wait_for_line(runtime, spec.run_id, "ready")
    started = time.monotonic()
    await asyncio.wait_for(runtime.stop(spec.run_id, grace=1), STEP)
    assert time.monotonic() - started >= 0.9
    assert await asyncio.wait_for(runtime.wait(spec.run_id), STEP) == 137  # 128 + SIGKILL


async def test_a_new_instance_adopts_running_and_exited_runs(under_test: RuntimeUnderTest) -> None:
    first = await under_test.runtime()
    # waits for a file in its workspace, so it is still running after the restart however slow the machine
    wait_for_go = "until cat go 2>/dev/null; do sleep 0.1; done"
    sleeper = under_test.spec(["sh", "-c", f"echo before; {wait_for_go}; echo after; exit 9"])
    quitter = under_test.spec(["sh", "-c", "exit 5"])
    await first.start(sleeper)
    await first.start(quitter)
    assert await asyncio.wait_for(first.wait(quitter.run_id), STEP) == 5
    await first.close()

    restarted = await under_test.runtime()
    handles = {handle.run_id: handle for handle in await restarted.list()}
    assert set(handles) == {sleeper.run_id, quitter.run_id}
    assert (handles[sleeper.run_id].running, handles[quitter.run_id].running) == (True, False)
    assert await asyncio.wait_for(restarted.wait(quitter.run_id), STEP) == 5
    (sleeper.workspace / "go").touch()
    lines = await collect(restarted.logs(sleeper.run_id))
    assert [line.text for line in lines] == ["before", "after"]
    assert await asyncio.wait_for(restarted.wait(sleeper.run_id), STEP) == 9


async def test_logs_since_resumes_without_duplicates(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.2; done"])
    await runtime.start(spec)
    first_part: list[LogLine] = []
    async with asyncio.timeout(STEP):
        async for line in runtime.logs(spec.run_id):
            first_part.append(line)
            if len(first_part) == 2:
                break
    restarted = await under_test.runtime()
    rest = await collect(restarted.logs(spec.run_id, since=first_part[-1].ts))
    assert [line.text for line in first_part + rest] == [f"line{n}" for n in range(1, 7)]
    again = await collect(restarted.logs(spec.run_id, since=rest[2].ts))
    assert again == rest[3:]


async def test_both_streams_come_named_in_timestamp_order_and_resume_after_a_stamp(
    under_test: RuntimeUnderTest,
) -> None:
    runtime = await under_test.runtime()
    script = "for i in $(seq 1 10); do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done"
    spec = under_test.spec(["sh", "-c", script])
    await runtime.start(spec)
    assert await asyncio.wait_for(runtime.wait(spec.run_id), STEP) == 0
    lines = await collect(runtime.logs(spec.run_id))  # all of it at once, as after a restart

    expected = [pair for n in range(1, 11) for pair in (("stdout", f"out{n}"), ("stderr", f"err{n}"))]
    assert texts(lines) == expected
    stamps = [line.ts for line in lines]
    assert stamps == sorted(stamps, key=str)
    restarted = await under_test.runtime()
    rest = await collect(restarted.logs(spec.run_id, since=lines[9].ts))
    assert rest == lines[10:]


async def test_a_reader_stopped_early_leaves_no_thread_behind(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", "echo ready; echo waiting >&2; sleep 60"])
    await runtime.start(spec)
    lines = runtime.logs(spec.run_id)
    async with asyncio.timeout(STEP):
        async for line in lines:
            if line.text == "ready":
                break
    await lines.aclose()

    def readers() -> list[str]:
        return [thread.name for thread in threading.enumerate() if spec.run_id in thread.name]

    eventually(lambda: not readers(), timeout=STEP, what="reader threads ended")


async def test_starting_the_same_run_twice_fails(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    spec = under_test.spec(["sh", "-c", "sleep 30"])
    await runtime.start(spec)
    with pytest.raises(StartFailed, match="already exists"):
        await runtime.start(spec)
    with pytest.raises(StartFailed, match="already exists"):
        await (await under_test.runtime()).start(spec)
    [handle] = [handle for handle in await runtime.list() if handle.run_id == spec.run_id]
    assert handle.running


async def test_a_command_that_cannot_run_fails_to_start_and_frees_the_run_id(
    under_test: RuntimeUnderTest,
) -> None:
    runtime = await under_test.runtime()
    broken = under_test.spec(["/no/such/program"])
    with pytest.raises(StartFailed):
        await runtime.start(broken)
    fixed = under_test.spec(["sh", "-c", "exit 0"], run_id=broken.run_id)
    exit_code, _ = await run_to_end(runtime, fixed)
    assert exit_code == 0


async def test_unknown_runs_and_bad_run_ids(under_test: RuntimeUnderTest) -> None:
    runtime = await under_test.runtime()
    with pytest.raises(RunNotFound):
        await runtime.wait("never-started")
    with pytest.raises(RunNotFound):
        await runtime.stop("never-started", grace=1)
    with pytest.raises(RunNotFound):
        await collect(runtime.logs("never-started"))
    await runtime.remove("never-started")  # idempotent
    with pytest.raises(InvalidRunId):
        await runtime.start(RunSpec("../escape", under_test.image, ["true"], {}, under_test.workspaces.root))
    assert await runtime.version()


async def wait_for_line(runtime: Runtime, run_id: str, text: str) -> None:
    async with asyncio.timeout(STEP):
        async for line in runtime.logs(run_id):
            if line.text == text:
                return
    raise AssertionError(f"{text!r} never appeared")


# ---------------------------------------------------------------- docker only


class _PullRecorder:
    """Wraps the real client and records pull attempts (the engine still does the work)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.pulls: list[tuple[Any, ...]] = []
        recorder = self

        class Images:
            def __getattr__(self, name: str) -> Any:
                return getattr(client.images, name)

            def pull(self, *args: Any, **kwargs: Any) -> Any:
                recorder.pulls.append(args)
                return client.images.pull(*args, **kwargs)

        self.images = Images()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.docker
async def test_pull_policy_never_refuses_a_missing_image_without_pulling(
    docker_client: Any, tmp_path: Path
) -> None:
    client = _PullRecorder(docker_client)
    runtime = DockerRuntime(
        client, "test-node-pull", pull_policy="never", network_mode="none", extra_labels=TEST_LABELS
    )
    spec = RunSpec("pull-never", "agentnodes-test/absent:1", ["true"], {}, tmp_path, dict(TEST_LABELS))
    with pytest.raises(ImageNotFound, match="not present on node and IMAGE_PULL_POLICY=never"):
        await runtime.start(spec)
    assert client.pulls == []
    assert await runtime.list() == []


@pytest.mark.docker
async def test_pull_policy_if_not_present_uses_the_local_image(
    docker_client: Any, test_image: str, tmp_path: Path
) -> None:
    client = _PullRecorder(docker_client)
    runtime = DockerRuntime(client, "test-node-pull", network_mode="none", extra_labels=TEST_LABELS)
    spec = RunSpec("pull-if-not-present", test_image, ["true"], {}, tmp_path, dict(TEST_LABELS))
    await runtime.start(spec)
    assert await asyncio.wait_for(runtime.wait(spec.run_id), STEP) == 0
    assert client.pulls == []
    await runtime.remove(spec.run_id)


@pytest.mark.docker
async def test_containers_carry_the_run_and_node_labels(
    docker_client: Any, test_image: str, tmp_path: Path
) -> None:
    runtime = await DockerRuntime.connect("test-node-labels", pull_policy="never", network_mode="none")
    spec = RunSpec("labelled", test_image, ["true"], {}, tmp_path, dict(TEST_LABELS))
    handle = await runtime.start(spec)
    container = docker_client.containers.get(handle.ref)
    assert container.name == "agentnodes-run-labelled"
    assert container.labels | TEST_LABELS == container.labels
    assert {
        k: container.labels[k] for k in ("agentnodes.run_id", "agentnodes.node_id", "agentnodes.managed")
    } == {
        "agentnodes.run_id": "labelled",
        "agentnodes.node_id": "test-node-labels",
        "agentnodes.managed": "true",
    }
    assert container.attrs["HostConfig"]["AutoRemove"] is False
    await runtime.remove(spec.run_id)
    await runtime.close()


async def test_make_runtime_picks_what_was_asked(tmp_path: Path) -> None:
    process = await make_runtime("process", "n1", tmp_path)
    assert isinstance(process, ProcessRuntime)
    assert process.state_root == tmp_path / ".process-runtime"
    fallback = await make_runtime("auto", "n1", tmp_path, docker_url="unix:///nonexistent/docker.sock")
    assert isinstance(fallback, ProcessRuntime)
    with pytest.raises(RuntimeUnavailable):
        await make_runtime("docker", "n1", tmp_path, docker_url="unix:///nonexistent/docker.sock")
    with pytest.raises(ValueError, match="IMAGE_PULL_POLICY"):
        await make_runtime("auto", "n1", tmp_path, pull_policy="sometimes")
    with pytest.raises(ValueError, match="RUNTIME"):
        await make_runtime("podman", "n1", tmp_path)


@pytest.mark.docker
async def test_make_runtime_auto_prefers_a_live_docker_engine(docker_client: Any, tmp_path: Path) -> None:
    runtime = await make_runtime("auto", "n1", tmp_path, pull_policy="never")
    assert isinstance(runtime, DockerRuntime)
    assert runtime.pull_policy == "never"
    assert (await runtime.version()).startswith("docker ")
    await runtime.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_process_run_whose_output_cannot_be_written_still_reports_its_exit_code(
    tmp_path: Path,
) -> None:
    """Regression: on a full disk procwrap died on its first failed output write, so a run whose
    command completed was reported failed ("the runtime lost track of the run's container")
    after half a minute of retries. Output that cannot be written is now dropped, the exit code
    is still recorded (in a file reserved at start), and the reason is the run's last line."""
    import json
    import subprocess
    import sys

    from nodemanager.runtime import procwrap

    runtime = ProcessRuntime("test-node", tmp_path)
    run_dir = tmp_path / "full-disk-run"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps({"run_id": run_dir.name, "node_id": "test-node"}))
    (run_dir / "output.log").symlink_to("/dev/full")  # every write fails: ENOSPC
    command = ["sh", "-c", "seq 1 100000; echo done >&2; exit 3"]  # far more than a pipe buffer
    launch = [sys.executable, "-I", procwrap.__file__, str(run_dir), "--", *command]
    await asyncio.to_thread(subprocess.run, launch, check=True)

    assert await asyncio.wait_for(runtime.wait(run_dir.name), STEP) == 3
    (run_dir / "output.log").unlink()  # what a full disk leaves: the lines written before it filled
    (run_dir / "output.log").touch()  # (none here; reading /dev/full would give zeros forever)
    lines = await collect(runtime.logs(run_dir.name))
    assert len(lines) == 1
    assert lines[0].stream == "stderr"
    assert "output dropped" in lines[0].text
    assert "No space left on device" in lines[0].text
    assert lines[0].ts
    assert await collect(runtime.logs(run_dir.name, since=lines[0].ts)) == []  # not repeated on resume
