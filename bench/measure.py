"""What the dispatch benchmarks share: CPU accounting of process trees and a fast HTTP/1.1 client.

CPU: a process's own time comes from /proc/<pid>/stat. A tree whose members detach from their
parent (the process runtime's run wrappers, Celery's prefork children, Dask's workers) is put in
a cgroup v1 `cpuacct` group of its own when the machine lets us (root, cgroup v1 mounted), whose
`cpuacct.usage` counts every process started inside it; otherwise that figure is None.

The client: httpx tops out near 230 requests/s on this machine, well below what the apiserver
takes, so submissions go through a minimal keep-alive HTTP/1.1 client on asyncio streams with
several connections; it reads only the status line, the headers and Content-Length bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """Seconds of CPU the process used itself (user + system), 0.0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuGroup:
    """A cpuacct cgroup that processes are moved into; `usage()` is the CPU seconds of everything
    that ran in it. `available` is False where none can be made (then usage() is None)."""

    def __init__(self, name: str) -> None:
        self.path = CPUACCT_ROOT / f"bench-{name}-{uuid.uuid4().hex[:6]}"
        self.available = False
        with contextlib.suppress(OSError):
            self.path.mkdir()
            self.available = True

    def add(self, pid: int) -> None:
        if self.available:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.procs").write_text(str(pid))

    def usage(self) -> float | None:
        if not self.available:
            return None
        try:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Move what is left to the root group, then remove this one."""
        if not self.available:
            return
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (CPUACCT_ROOT / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()


class CpuMeter:
    """CPU seconds of named parts between `start()` and `stop()`."""

    def __init__(self, parts: dict[str, Callable[[], float | None]]) -> None:
        self.parts = parts
        self._before: dict[str, float | None] = {}
        self.used: dict[str, float | None] = {}

    def start(self) -> None:
        self._before = {name: read() for name, read in self.parts.items()}

    def stop(self) -> dict[str, float | None]:
        for name, read in self.parts.items():
            now, before = read(), self._before[name]
            self.used[name] = None if now is None or before is None else now - before
        return self.used

    def per_item_ms(self, count: int) -> dict[str, float | None]:
        return {name: None if v is None else round(v / count * 1000, 3) for name, v in self.used.items()}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


class HttpError(Exception):
    pass


class FastClient:
    """Keep-alive HTTP/1.1 over `connections` sockets to 127.0.0.1:`port`."""

    def __init__(self, port: int, connections: int = 8, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.connections = connections
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._opened: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self.connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self._opened.append(writer)
            self._pool.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self._opened:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        payload = b"" if body is None else msgspec.json.encode(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        reader, writer = await self._pool.get()
        try:
            writer.write(head.encode() + payload)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        self._pool.put_nowait((reader, writer))
        parts = status_line.split(b" ", 2)
        if len(parts) < 2:
            raise HttpError(f"no answer to {method} {path}")
        return int(parts[1]), data

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.request(method, path, body)
        if status >= 400:
            raise HttpError(f"{method} {path}: {status} {data[:300]!r}")
        return msgspec.json.decode(data) if data else None


async def submit_all(
    client: FastClient, bodies: Iterable[dict[str, Any]], on_created: Callable[[str], None] | None = None
) -> tuple[list[str], float]:
    """POST every body to /api/v1/runs, `client.connections` at a time; the ids and the seconds."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    ids: list[str] = []

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            run = await client.json("POST", "/api/v1/runs", body)
            ids.append(run["id"])
            if on_created is not None:
                on_created(run["id"])

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(client.connections)))
    return ids, time.perf_counter() - began
