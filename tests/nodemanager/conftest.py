"""`under_test`: each runtime-level test runs against DockerRuntime on the real engine and ProcessRuntime."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nodemanager.runtime.base import Runtime
from nodemanager.runtime.docker import DockerRuntime
from nodemanager.runtime.process import ProcessRuntime
from nodemanager.workspace import Workspaces
from tests.support.images import TEST_LABELS
from tests.support.runtimes import RuntimeUnderTest


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process"])
async def under_test(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RuntimeUnderTest]:
    node_id = f"test-node-{uuid.uuid4().hex[:8]}"
    workspaces = Workspaces(tmp_path / "workspaces")
    if request.param == "docker":
        request.getfixturevalue("docker_client")
        image = request.getfixturevalue("test_image")

        async def new_instance() -> Runtime:
            return await DockerRuntime.connect(
                node_id, pull_policy="never", network_mode="none", extra_labels=TEST_LABELS
            )
    else:
        image = "ignored-by-process-runtime"

        async def new_instance() -> Runtime:
            return ProcessRuntime(node_id, workspaces.root / ".process-runtime")

    subject = RuntimeUnderTest(request.param, image, workspaces, new_instance, node_id)
    try:
        yield subject
        cleaner = await subject.runtime()
        for run_id in subject.run_ids:
            await cleaner.remove(run_id)
    finally:
        for instance in subject.instances:
            await instance.close()
