"""An online backup of the SQLite database (Python's sqlite3 backup API, as docs/operations.md
shows), taken while runs are being submitted, restored into a new apiserver: every run whose
creation was answered before the backup began is there, each with its first event (`created`)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx

from tests.support.server import ServerProcess

WRITERS = 4
TOKENS = {"ADMIN_TOKEN": "admin-token-123", "NODE_JOIN_TOKEN": "join-token-123"}
RUN = {"image": "agentnodes/busybox", "command": ["true"], "node_selector": {"pool": "none"}}


def online_backup(source: Path, target: Path) -> None:
    """What docs/operations.md gives: one step of the backup API, a consistent snapshot."""
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    live.close()
    copy.close()


class Submitter(threading.Thread):
    """Submits runs until stopped; keeps (answered at, run id) of each created run."""

    def __init__(self, server: ServerProcess, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = stop
        self.created: list[tuple[float, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as client:
                while not self.stop.is_set():
                    response = client.post("/api/v1/runs", json=RUN)
                    assert response.status_code == 201, response.text
                    self.created.append((time.monotonic(), response.json()["id"]))
        except BaseException as exc:
            self.error = exc


def all_run_ids(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    while True:
        page = client.get("/api/v1/runs", params={"limit": 1000, "offset": len(ids)}).json()
        ids.update(run["id"] for run in page["items"])
        if not page["items"] or len(ids) >= page["total"]:
            return ids


def test_a_backup_taken_while_runs_are_written_restores_every_committed_run(tmp_path: Path) -> None:
    live_dir, restored_dir = tmp_path / "live", tmp_path / "restored"
    live_dir.mkdir()
    restored_dir.mkdir()
    backup = tmp_path / "backup.db"
    with ServerProcess(env=TOKENS, data_dir=live_dir) as server:
        stop = threading.Event()
        submitters = [Submitter(server, stop) for _ in range(WRITERS)]
        for submitter in submitters:
            submitter.start()
        time.sleep(1.0)
        began = time.monotonic()
        online_backup(live_dir / "apiserver.db", backup)
        time.sleep(0.5)  # writes go on after it
        stop.set()
        for submitter in submitters:
            submitter.join(30)
            assert submitter.error is None, submitter.error
    created = [entry for submitter in submitters for entry in submitter.created]
    before = {run_id for at, run_id in created if at < began}
    assert len(before) >= 20, "too few runs were written before the backup to prove anything"
    assert len(created) > len(before), "no run was written after the backup began"

    with sqlite3.connect(backup) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    (restored_dir / "apiserver.db").write_bytes(backup.read_bytes())  # the restore: a copy in place
    with ServerProcess(env=TOKENS, data_dir=restored_dir) as restored, restored.client() as client:
        restored_ids = all_run_ids(client)
        assert before <= restored_ids
        assert restored_ids <= {run_id for _, run_id in created}
        for run_id in sorted(restored_ids)[:: max(1, len(restored_ids) // 20)]:
            events = client.get(f"/api/v1/runs/{run_id}/events").json()["items"]
            assert events, run_id
            assert events[0]["type"] == "created", run_id
