"""Health checks a node reports with every heartbeat: a node failing one takes no new runs
(it would otherwise fail every run fast and, being the least loaded, attract them all)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from nodeapi import models as m
from nodemanager.runtime.base import Runtime, RuntimeError_

MEBIBYTE = 1024 * 1024


async def check_conditions(
    runtime: Runtime, workspace_root: Path, min_free_mb: int
) -> list[m.ConditionReport]:
    return [
        await _runtime(runtime),
        await asyncio.to_thread(_workspace, workspace_root),
        await asyncio.to_thread(_disk, workspace_root, min_free_mb),
    ]


async def _runtime(runtime: Runtime) -> m.ConditionReport:
    try:
        version = await runtime.version()
    except RuntimeError_ as exc:
        return m.ConditionReport(
            type="runtime", ok=False, message=f"the {runtime.name} runtime does not answer: {exc}"[:512]
        )
    return m.ConditionReport(type="runtime", ok=True, message=version[:512])


def _workspace(root: Path) -> m.ConditionReport:
    probe = root / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return m.ConditionReport(
            type="workspace", ok=False, message=f"cannot write in {root}: {exc.strerror or exc}"[:512]
        )
    return m.ConditionReport(type="workspace", ok=True, message=f"{root} is writable")


def _disk(root: Path, min_free_mb: int) -> m.ConditionReport:
    try:
        free_mb = shutil.disk_usage(root if root.exists() else root.parent).free // MEBIBYTE
    except OSError as exc:
        return m.ConditionReport(
            type="disk", ok=False, message=f"cannot read the free space of {root}: {exc}"[:512]
        )
    if free_mb < min_free_mb:
        return m.ConditionReport(
            type="disk",
            ok=False,
            message=f"{free_mb} MiB free under {root}, below the floor of {min_free_mb} MiB",
        )
    return m.ConditionReport(type="disk", ok=True, message=f"{free_mb} MiB free")
