"""Per-run workspaces: safe names, and the cleanup of finished ones."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from nodemanager.workspace import InvalidRunId, Workspaces, validate_run_id


@pytest.mark.parametrize("run_id", ["run-1", "01HXYZ", "a.b_c-d", "x" * 128])
def test_valid_run_ids(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id", ["", ".", "..", "../etc", "a/b", ".hidden", "a..b", "x" * 129, "a b", "-x"]
)
def test_run_ids_that_could_escape_or_break_names_are_refused(run_id: str) -> None:
    with pytest.raises(InvalidRunId):
        validate_run_id(run_id)


def test_create_makes_the_run_directory_under_the_root(tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path / "root")
    path = workspaces.create("run-1")
    assert path == tmp_path / "root" / "run-1"
    assert path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    (path / "keep.txt").write_text("kept")
    assert workspaces.create("run-1") == path  # an adopted run keeps its files
    assert (path / "keep.txt").read_text() == "kept"
    with pytest.raises(InvalidRunId):
        workspaces.create("../outside")


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_cleanup_removes_only_finished_runs_past_retention(tmp_path: Path) -> None:
    workspaces = Workspaces(tmp_path)
    old_finished = workspaces.create("old-finished")
    (old_finished / "out.txt").write_text("x")
    age(old_finished, 7200)
    old_but_active = workspaces.create("old-active")
    age(old_but_active, 7200)
    recent = workspaces.create("recent")
    marked_old = workspaces.create("marked-old")
    workspaces.mark_finished("marked-old")
    age(tmp_path / ".finished" / "marked-old", 7200)
    marked_recent = workspaces.create("marked-recent")
    age(marked_recent, 7200)
    workspaces.mark_finished("marked-recent")  # finished just now: kept despite an old directory
    state = tmp_path / ".process-runtime"
    state.mkdir()
    age(state, 7200)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link-out").symlink_to(outside)

    removed = workspaces.cleanup_finished(3600, active_run_ids=["old-active"])

    assert sorted(removed) == ["marked-old", "old-finished"]
    assert not old_finished.exists()
    assert not marked_old.exists()
    assert not (tmp_path / ".finished" / "marked-old").exists()
    assert old_but_active.is_dir()
    assert recent.is_dir()
    assert marked_recent.is_dir()
    assert state.is_dir()
    assert outside.is_dir()


def test_cleanup_of_a_missing_root_is_a_no_op(tmp_path: Path) -> None:
    assert Workspaces(tmp_path / "never-created").cleanup_finished(0, []) == []
