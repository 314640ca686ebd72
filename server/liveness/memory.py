"""In-process liveness store: one dict, for a single apiserver (REDIS_URL unset)."""

from __future__ import annotations

from collections.abc import Sequence

from server.liveness.base import Known, LivenessStore, LivenessUnavailable, Primed, Report


class _Entry:
    __slots__ = ("detail", "detail_at", "draining", "seen", "state")

    def __init__(self, seen: float) -> None:
        self.seen = seen
        self.state: str | None = None
        self.detail = ""
        self.detail_at = 0.0
        self.draining = False

    def store(self, state: str | None, detail: str, detail_at: float, draining: bool) -> None:
        self.state, self.detail, self.detail_at, self.draining = state, detail, detail_at, draining


class MemoryLivenessStore(LivenessStore):
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    async def ping(self) -> bool:
        return not self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LivenessUnavailable("the in-process liveness store is closed")

    async def heard(
        self, node_id: str, report: Report, at: float, *, fresh_after: float, detail_after: float
    ) -> Known | None:
        self._check_open()
        entry = self._entries.get(node_id)
        if (
            entry is None
            or entry.state != report.state
            or entry.seen < fresh_after
            or (entry.detail != report.detail and entry.detail_at < detail_after)
        ):
            return None
        if at > entry.seen:
            entry.seen = at
        return Known(draining=entry.draining)

    async def record(self, node_id: str, report: Report | None, at: float, draining: bool) -> None:
        self._check_open()
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = _Entry(at)
        elif at > entry.seen:
            entry.seen = at
        if report is None:
            entry.store(None, "", 0.0, draining)
        else:
            entry.store(report.state, report.detail, at, draining)

    async def invalidate(self, node_ids: Sequence[str]) -> None:
        self._check_open()
        for node_id in node_ids:
            entry = self._entries.get(node_id)
            if entry is not None:
                entry.state = None

    async def forget(self, node_ids: Sequence[str]) -> None:
        self._check_open()
        for node_id in node_ids:
            self._entries.pop(node_id, None)

    async def last_seen(self, node_ids: Sequence[str]) -> dict[str, float]:
        self._check_open()
        entries = self._entries
        return {node_id: entry.seen for node_id in node_ids if (entry := entries.get(node_id)) is not None}

    async def prime(self, entries: Sequence[Primed], at: float) -> int:
        self._check_open()
        added = 0
        for primed in entries:
            if primed.node_id in self._entries:
                continue
            entry = self._entries[primed.node_id] = _Entry(primed.seen)
            entry.store(primed.state, primed.detail, at, primed.draining)
            added += 1
        return added
