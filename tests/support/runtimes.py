"""A runtime under test, as the `under_test` fixture of tests/nodemanager hands it out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from nodemanager.runtime.base import Limits, LogLine, RunSpec, Runtime
from nodemanager.workspace import Workspaces
from tests.support.images import TEST_LABELS

STEP = 20.0  # upper bound of any single wait in these tests


async def collect(lines: AsyncIterator[LogLine]) -> list[LogLine]:
    async def read_all() -> list[LogLine]:
        return [line async for line in lines]

    return await asyncio.wait_for(read_all(), STEP)


async def run_to_end(runtime: Runtime, spec: RunSpec) -> tuple[int, list[LogLine]]:
    await runtime.start(spec)
    lines = await collect(runtime.logs(spec.run_id))
    return await asyncio.wait_for(runtime.wait(spec.run_id), STEP), lines


def texts(lines: list[LogLine]) -> list[tuple[str, str]]:
    return [(line.stream, line.text) for line in lines]


@dataclass
class RuntimeUnderTest:
    kind: str
    image: str
    workspaces: Workspaces
    new_instance: Callable[[], Awaitable[Runtime]]
    node_id: str
    instances: list[Runtime] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    async def runtime(self) -> Runtime:
        """A new runtime instance: a second call simulates a restarted nodemanager."""
        instance = await self.new_instance()
        self.instances.append(instance)
        return instance

    def spec(
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        run_id: str | None = None,
        *,
        limits: Limits | None = None,
        deadline_seconds: int | None = None,
    ) -> RunSpec:
        run_id = run_id or f"rt-{uuid.uuid4().hex[:12]}"
        self.run_ids.append(run_id)
        return RunSpec(
            run_id,
            self.image,
            command,
            env or {},
            self.workspaces.create(run_id),
            dict(TEST_LABELS),
            limits=limits or Limits(),
            deadline_seconds=deadline_seconds,
        )
