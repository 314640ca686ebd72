"""Per-run workspace directories under WORKSPACE_DIR, and their cleanup.

A run's workspace is `<root>/<run_id>`: mounted at /workspace in a container, the cwd of a
process run. Names starting with a dot are never run ids, so the root can also hold the
runtimes' own state (`.process-runtime/`) and the finish markers (`.finished/`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FINISHED_DIR = ".finished"


class InvalidRunId(ValueError):
    """A run id that could name something outside the workspace root (or an invalid container name)."""


def validate_run_id(run_id: str) -> str:
    """The run id itself; raises InvalidRunId unless it is a safe single path segment."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise InvalidRunId(f"invalid run id {run_id!r}: use letters, digits, '_', '.', '-' (max 128)")
    return run_id


class Workspaces:
    """The workspace root of one node."""

    def __init__(self, root: Path | str, mode: int = 0o755) -> None:
        self.root = Path(root).absolute()
        self.mode = mode

    def path(self, run_id: str) -> Path:
        return self.root / validate_run_id(run_id)

    def create(self, run_id: str) -> Path:
        """The run's workspace, created if missing (an adopted run keeps its files)."""
        path = self.path(run_id)
        self.root.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=self.mode, exist_ok=True)
        os.chmod(path, self.mode)  # mkdir's mode is filtered by the umask
        return path

    def mark_finished(self, run_id: str) -> None:
        """Record that the run ended now: its workspace is kept for the retention period from here."""
        marker = self.root / FINISHED_DIR / validate_run_id(run_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def remove(self, run_id: str) -> None:
        path = self.path(run_id)
        if path.exists():
            shutil.rmtree(path, onerror=_log_rmtree_error)
        (self.root / FINISHED_DIR / run_id).unlink(missing_ok=True)

    def cleanup_finished(
        self, retention_seconds: float, active_run_ids: Iterable[str], now: float | None = None
    ) -> list[str]:
        """Delete workspaces of runs not active whose finish (or, unmarked, last change) is older
        than the retention period; the run ids deleted. Blocking: call it via asyncio.to_thread."""
        if not self.root.is_dir():
            return []
        active = set(active_run_ids)
        cutoff = (time.time() if now is None else now) - retention_seconds
        removed: list[str] = []
        for entry in sorted(self.root.iterdir()):
            run_id = entry.name
            if run_id in active or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
                continue
            if entry.is_symlink() or not entry.is_dir():
                continue
            if self._finished_at(entry) > cutoff:
                continue
            self.remove(run_id)
            removed.append(run_id)
        if removed:
            log.info("removed %d finished workspaces older than %ss", len(removed), retention_seconds)
        return removed

    def _finished_at(self, workspace: Path) -> float:
        marker = self.root / FINISHED_DIR / workspace.name
        try:
            return marker.stat().st_mtime
        except FileNotFoundError:
            return workspace.stat().st_mtime


def _log_rmtree_error(function: object, path: str, exc_info: tuple[type, BaseException, object]) -> None:
    log.warning("could not remove %s: %s", path, exc_info[1])
