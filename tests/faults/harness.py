"""The fault suite's harness: real apiservers, nodemanagers, Redis and PostgreSQL, broken on purpose,
and a ledger that the runs themselves write to.

Ledger (ledger.py): a small HTTP server on loopback, in the test process (a thread). Every run's command
(`Ledger.command`) calls it when it starts and when it ends, with its AGENTNODES_RUN_ID,
AGENTNODES_ATTEMPT and a random execution id, so the test knows exactly which commands executed,
how often and when, whatever the control plane believes. A command stopped by SIGTERM says so
(`stop`); one killed outright says nothing and counts as running until the end of the scenario.

`ledger_check` (check.py) ends every scenario. It reads the runs and nodes from the API (a snapshot taken
twice and compared) and checks that:
- every run is terminal, or still legitimately running: its node is online and holds it;
- no run's command executed twice at the same time, and every `succeeded` run's command executed
  exactly once, in its current placement (attempt);
- each node's `running` equals its active (scheduled + running) runs;
- every submission answered 201 exists.
Its report is printed, kept for the session's summary, and attached to a failing test's report.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.faults.check import LedgerReport, ledger_check
from tests.faults.ledger import TERMINAL, Ledger, Submissions
from tests.support.images import TEST_IMAGE, TEST_LABELS
from tests.support.nodemanager import NodeManagerProcess
from tests.support.server import ServerProcess
from tests.support.wait import eventually

# short liveness: a node is offline after 3 s of silence, its runs lost 2 s later
LIVENESS = {
    "NODE_HEARTBEAT_INTERVAL": "1",
    "NODE_OFFLINE_AFTER": "3",
    "RUN_LOST_GRACE": "2",
    "RUN_RECONCILE_GRACE": "3",
}
OFFLINE_AFTER = float(LIVENESS["NODE_OFFLINE_AFTER"])
LOST_AFTER = OFFLINE_AFTER + float(LIVENESS["RUN_LOST_GRACE"])  # silence that makes a node's runs lost
RUN_DEADLINE = 45.0  # seconds any scenario's runs get to settle
NODE_CONTAINER_LABELS = ",".join(f"{key}={value}" for key, value in TEST_LABELS.items())


class Api:
    """The admin API of one apiserver, as the tests use it (httpx, no retries of its own)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, trust_env=False, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def submit(self, command: list[str], *, image: str = TEST_IMAGE, **fields: Any) -> str:
        response = self.http.post("/api/v1/runs", json={"image": image, "command": command, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def runs(self) -> dict[str, dict[str, Any]]:
        response = self.http.get("/api/v1/runs", params={"limit": 10_000})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] <= len(body["items"]), "more runs than one page: raise the limit"
        return {run["id"]: run for run in body["items"]}

    def nodes(self) -> dict[str, dict[str, Any]]:
        response = self.http.get("/api/v1/nodes", params={"limit": 10_000})
        assert response.status_code == 200, response.text
        return {node["id"]: node for node in response.json()["items"]}

    def node(self, node_id: str) -> dict[str, Any] | None:
        response = self.http.get(f"/api/v1/nodes/{node_id}")
        return dict(response.json()) if response.status_code == 200 else None

    def events(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            after = events[-1]["seq"] if events else 0
            response = self.http.get(f"/api/v1/runs/{run_id}/events", params={"after": after, "limit": 1000})
            assert response.status_code == 200, response.text
            page = response.json()["items"]
            if not page:
                return events
            events.extend(page)

    def wait_online(self, node_id: str, timeout: float = 20.0) -> None:
        def online() -> bool:
            node = self._quietly(lambda: self.node(node_id))
            return bool(node and node["status"] == "online")

        eventually(online, timeout, 0.1, f"node {node_id} online")

    def wait_status(
        self, run_id: str, statuses: Iterable[str], timeout: float = RUN_DEADLINE
    ) -> dict[str, Any]:
        wanted = frozenset(statuses)

        def reached() -> dict[str, Any] | None:
            run = self._quietly(lambda: self.run(run_id))
            return run if run and run["status"] in wanted else None

        return eventually(reached, timeout, 0.1, f"run {run_id} {'/'.join(sorted(wanted))}")

    def wait_settled(
        self, run_ids: Iterable[str] | None = None, timeout: float = RUN_DEADLINE
    ) -> dict[str, dict[str, Any]]:
        """Until the runs (all when None) are terminal; the runs."""
        wanted = None if run_ids is None else set(run_ids)

        def settled() -> dict[str, dict[str, Any]] | None:
            runs = self._quietly(self.runs)
            if runs is None:
                return None
            chosen = [run for run_id, run in runs.items() if wanted is None or run_id in wanted]
            if wanted is not None and len(chosen) < len(wanted):
                return None
            return runs if all(run["status"] in TERMINAL for run in chosen) else None

        try:
            return eventually(settled, timeout, 0.25, "every run terminal")
        except AssertionError:
            runs = self._quietly(self.runs) or {}
            open_ = {rid: run["status"] for rid, run in runs.items() if run["status"] not in TERMINAL}
            raise AssertionError(f"runs not terminal after {timeout}s: {open_}") from None

    @staticmethod
    def _quietly(read: Callable[[], Any]) -> Any:
        """`read()`, or None while the server does not answer (it may be the fault under test)."""
        try:
            return read()
        except (httpx.HTTPError, AssertionError):
            return None


class Burst(threading.Thread):
    """Submits `count` runs as fast as the server(s) take them, round robin over `apis`.

    A submission that fails is sent again after 0.1 s until `deadline`: connection errors and
    503 are the fault under test. A 500, or any status but 201/503, is recorded as unexpected
    (and not sent again: the run may have been created). `body(i)` is the i-th run's JSON.
    """

    def __init__(
        self, apis: list[Api], count: int, body: Callable[[int], dict[str, Any]], deadline: float = 40.0
    ):
        super().__init__(name="burst", daemon=True)
        self.apis = apis
        self.count = count
        self.body = body
        self.deadline = deadline
        self.result = Submissions()
        self._stop_at = time.monotonic() + deadline
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.count):
                self._submit(i)
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def _submit(self, i: int) -> None:
        api = self.apis[i % len(self.apis)]
        while time.monotonic() < self._stop_at:
            try:
                response = api.http.post("/api/v1/runs", json=self.body(i))
            except httpx.HTTPError as exc:
                self.result.answers[type(exc).__name__] += 1
                time.sleep(0.1)  # the server is down: the fault under test; try again shortly
                continue
            self.result.answers[str(response.status_code)] += 1
            if response.status_code == 201:
                self.result.created.append(str(response.json()["id"]))
                return
            if response.status_code == 503:
                time.sleep(0.1)
                continue
            self.result.unexpected.append(f"{response.status_code} {response.text[:300]}")
            return
        raise AssertionError(f"submission {i} not accepted within {self.deadline}s: {self.result.summary()}")

    def accepted(self) -> int:
        return len(self.result.created)

    def wait(self, timeout: float | None = None) -> Submissions:
        self.join(self.deadline if timeout is None else timeout)
        assert not self.is_alive(), f"submissions still going after the deadline: {self.result.summary()}"
        if self.error is not None:
            raise self.error
        return self.result


# ------------------------------------------------------------------ processes


class Apiserver(ServerProcess):
    """`kill()` (SIGKILL), `pause()`/`resume()` (SIGSTOP/SIGCONT), `start()` again to restart."""

    paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False


class Node(NodeManagerProcess):
    """A nodemanager under test: `kill()` (SIGKILL), `pause()`/`resume()` (SIGSTOP/SIGCONT),
    `start()` again to restart; `holds(run_id)` asks its runtime whether the run still runs."""

    def __init__(
        self, api_server_url: str, workdir: Path, node_id: str, runtime: str, env: dict[str, str], docker: Any
    ) -> None:
        super().__init__(api_server_url, workdir, node_id, env)
        self.runtime = runtime
        self.docker = docker
        self.paused = False

    @property
    def workspace_dir(self) -> Path:
        return Path(self.env["WORKSPACE_DIR"])

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> Node:
        if self.running:
            self.kill()
        self.start()
        return self

    def running_runs(self) -> set[str]:
        """Run ids whose container (or process) runs now on this node."""
        if self.runtime == "docker":
            containers = self.docker.containers.list(
                filters={"label": [f"agentnodes.node_id={self.node_id}"], "status": "running"},
                ignore_removed=True,
            )
            return {c.labels["agentnodes.run_id"] for c in containers if "agentnodes.run_id" in c.labels}
        running = set()
        for state in self._process_states():
            started = _read_json(state / "started.json")
            if not (state / "exit_code").exists() and started and _alive(started.get("wrapper_pid")):
                running.add(state.name)
        return running

    def holds(self, run_id: str) -> bool:
        return run_id in self.running_runs()

    def _process_states(self) -> list[Path]:
        root = self.workspace_dir / ".process-runtime"
        return [path for path in root.iterdir() if (path / "spec.json").exists()] if root.is_dir() else []

    def kill_runs(self) -> None:
        """Teardown of the process runtime: kill what its runs left (Docker's are removed by label)."""
        for state in self._process_states():
            started = _read_json(state / "started.json") or {}
            for key in ("pid", "wrapper_pid"):
                pid = started.get(key)
                if isinstance(pid, int) and pid > 1:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


# ------------------------------------------------------------------ one scenario's world


class Faults:
    """What one scenario starts: the ledger, apiservers, nodemanagers; all stopped at the end."""

    def __init__(self, workdir: Path, scenario: str, docker: Any = None) -> None:
        self.workdir = workdir
        self.scenario = scenario
        self.docker = docker
        self.ledger = Ledger().start()
        self.servers: list[Apiserver] = []
        self.nodes: dict[str, Node] = {}
        self.apis: list[Api] = []
        self.report: LedgerReport | None = None

    def apiserver(self, env: dict[str, str] | None = None, database_url: str | None = None) -> Apiserver:
        data_dir = self.workdir / f"server-{len(self.servers)}"
        data_dir.mkdir()
        settings = {**LIVENESS, **({"DATABASE_URL": database_url} if database_url else {}), **(env or {})}
        server = Apiserver(env=settings, data_dir=data_dir)
        self.servers.append(server)
        return server.start()

    def api(self, server: ServerProcess) -> Api:
        api = Api(server.base_url)
        self.apis.append(api)
        return api

    def node(
        self,
        server: ServerProcess,
        node_id: str,
        runtime: str = "process",
        *,
        wait: bool = True,
        **env: str,
    ) -> Node:
        settings = {"RUNTIME": runtime, "MAX_CONCURRENT": "4", "STOP_GRACE": "2", "LOG_LEVEL": "INFO"}
        if runtime == "docker":
            assert self.docker is not None, "a Docker scenario asks for the docker_client fixture"
            # host network: the containers reach the ledger on loopback
            settings |= {"DOCKER_NETWORK": "host", "CONTAINER_LABELS": NODE_CONTAINER_LABELS}
        node = Node(server.base_url, self.workdir, node_id, runtime, {**settings, **env}, self.docker)
        self.nodes[node_id] = node
        node.start()
        if wait:
            api = Api(server.base_url)
            try:
                api.wait_online(node_id)
            finally:
                api.close()
        return node

    def check(self, api: Api, submissions: Submissions | None = None) -> LedgerReport:
        report = ledger_check(self.scenario, api, self.ledger, self.nodes, submissions)
        self.report = report
        print(report.text())
        assert report.ok, report.text()
        return report

    def logs(self) -> Iterator[tuple[str, str]]:
        for server in self.servers:
            yield f"apiserver :{server.port} log", server.log()
        for node in self.nodes.values():
            yield f"nodemanager {node.node_id} log", node.log()

    def close(self) -> None:
        for node in self.nodes.values():
            if node.paused and node.running:
                node.resume()
            node.stop()
            if node.runtime == "process":
                node.kill_runs()
        for server in self.servers:
            if server.paused and server.running:
                server.resume()
            server.stop()
        for api in self.apis:
            api.close()
        self.ledger.close()
