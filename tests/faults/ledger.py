"""The fault suite's ledger: a small HTTP server on loopback, in the test process (a thread), that
every run's command calls when it starts and when it ends (see harness.py for the whole picture)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})
ACTIVE = frozenset({"scheduled", "running"})


# ------------------------------------------------------------------ the ledger


@dataclass(frozen=True)
class Record:
    kind: str  # start | end | stop
    run_id: str
    attempt: int | None
    execution: str
    at: float  # time.monotonic() in the test process when the call arrived


@dataclass
class Execution:
    """One execution of a run's command, from its `start` call to its `end` or `stop` call."""

    run_id: str
    attempt: int | None
    execution: str
    started: float
    ended: float | None = None
    how: str | None = None  # end | stop | None (never said: killed, or still running)


class Ledger:
    """The HTTP ledger the runs call; `command(seconds)` is a run command that reports to it."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()
        ledger = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                kind = url.path.strip("/")
                if kind in ("start", "end", "stop") and query.get("run") and query.get("exec"):
                    attempt = query.get("attempt", "")
                    ledger._add(
                        Record(
                            kind,
                            query["run"],
                            int(attempt) if attempt.isdigit() else None,
                            query["exec"],
                            time.monotonic(),
                        )
                    )
                    self.send_response(200)
                else:
                    self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per call would drown the test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="ledger", daemon=True)

    def start(self) -> Ledger:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def command(self, seconds: float = 0.5, output: str = "") -> list[str]:
        """A command that tells the ledger it started, prints `output` (if any) and a line naming
        the run, sleeps `seconds`, and tells the ledger it ended; on SIGTERM it says `stop` at
        once. busybox only: the same command runs in the test image and as a host process."""
        script = f"""
L={self.url}
E=$(busybox cat /proc/sys/kernel/random/uuid)
Q="run=$AGENTNODES_RUN_ID&attempt=$AGENTNODES_ATTEMPT&exec=$E"
busybox wget -q -O /dev/null "$L/start?$Q" || exit 97
trap 'busybox wget -q -O /dev/null "$L/stop?$Q"; exit 143' TERM INT
echo "run $AGENTNODES_RUN_ID attempt $AGENTNODES_ATTEMPT execution $E"
{output}
busybox sleep {seconds:g} & wait $!
busybox wget -q -O /dev/null "$L/end?$Q" || exit 98
"""
        return ["busybox", "sh", "-c", script]

    def executions(self) -> dict[str, list[Execution]]:
        """Per run, its executions in the order they started."""
        with self._lock:
            records = sorted(self.records, key=lambda r: r.at)
        by_id: dict[str, Execution] = {}
        for record in records:
            if record.kind == "start":
                by_id.setdefault(
                    record.execution, Execution(record.run_id, record.attempt, record.execution, record.at)
                )
            else:
                execution = by_id.get(record.execution)
                if execution is not None and execution.ended is None:
                    execution.ended, execution.how = record.at, record.kind
        runs: dict[str, list[Execution]] = defaultdict(list)
        for execution in sorted(by_id.values(), key=lambda e: e.started):
            runs[execution.run_id].append(execution)
        return dict(runs)

    def started(self, run_id: str) -> bool:
        with self._lock:
            return any(r.run_id == run_id and r.kind == "start" for r in self.records)


def overlapping(executions: list[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs of executions of one run that ran at the same time (one without an end runs on)."""
    pairs = []
    for i, first in enumerate(executions):
        for second in executions[i + 1 :]:
            if first.ended is None or second.started < first.ended:
                pairs.append((first, second))
    return pairs


# ------------------------------------------------------------------ the API


@dataclass
class Submissions:
    """What a burst of submissions got back."""

    created: list[str] = field(default_factory=list)  # answered 201
    answers: Counter[str] = field(default_factory=Counter)  # "201", "503", "ConnectError", ...
    unexpected: list[str] = field(default_factory=list)  # a 500 or another status never expected

    def summary(self) -> str:
        return ", ".join(f"{answer} x{count}" for answer, count in sorted(self.answers.items()))
