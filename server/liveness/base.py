"""The liveness store: when each node was last heard, kept off the database's transactional path.

One interface, an in-process and a Redis implementation (shared by apiserver replicas), held
to the same semantics by one test suite:

- Per node it keeps `seen` (epoch seconds of the newest heartbeat heard; it never moves back)
  and, when the database already holds everything the node reports, that report as a
  `Report` (digests) plus whether the node is draining (for the heartbeat's answer).
- `heard()` is the heartbeat's fast path: when the stored report has the same `state`, the
  same `detail` (or one stored at or after `detail_after`), and `seen` is at or after
  `fresh_after`, it raises `seen` to `at` and answers `Known`; otherwise it changes nothing and
  answers None, and the caller takes the database path and then calls `record()`.
- `invalidate()` drops stored reports (the next heartbeat takes the database path); `forget()`
  drops the node entirely; `last_seen()` reads `seen` of many nodes at once; `prime()` fills
  entries of nodes the store does not know yet (start-up, from the database).
- Errors of the underlying store are raised as `LivenessUnavailable`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass


class LivenessUnavailable(Exception):
    """The store cannot be reached; callers fall back to the database."""


@dataclass(frozen=True)
class Report:
    """Digests of one heartbeat's report."""

    state: str  # labels, capacity, info, condition states, the runs held and their attempts
    detail: str  # what may reach the database late: the conditions' messages

    def stored(self) -> str:
        """As `nodes.report_digest` keeps it (both digests, so a restarted store knows both)."""
        return f"{self.state} {self.detail}"

    @staticmethod
    def parse_stored(value: str | None) -> tuple[str | None, str]:
        """(state, detail) of a stored `report_digest`; (None, "") when there is none."""
        if not value:
            return None, ""
        state, _, detail = value.partition(" ")
        return state, detail


@dataclass(frozen=True)
class Known:
    """What the store holds of a node whose heartbeat it took."""

    draining: bool


@dataclass(frozen=True)
class Primed:
    """A node as the database has it, for `prime()`; `state` None: no report to trust;
    `detail` empty: not known (any detail differs)."""

    node_id: str
    seen: float
    state: str | None
    draining: bool
    detail: str = ""


class LivenessStore(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers."""

    @abc.abstractmethod
    async def heard(
        self, node_id: str, report: Report, at: float, *, fresh_after: float, detail_after: float
    ) -> Known | None:
        """The fast path of one heartbeat (see the module's docstring)."""

    @abc.abstractmethod
    async def record(self, node_id: str, report: Report | None, at: float, draining: bool) -> None:
        """After the database took a heartbeat: `seen` raised to `at`, the report stored (its
        detail as of `at`), or dropped when None (the node's runs need reconciling)."""

    @abc.abstractmethod
    async def invalidate(self, node_ids: Sequence[str]) -> None:
        """Drop the stored reports; `seen` stays."""

    @abc.abstractmethod
    async def forget(self, node_ids: Sequence[str]) -> None:
        """Drop everything known of these nodes (deleted)."""

    @abc.abstractmethod
    async def last_seen(self, node_ids: Sequence[str]) -> dict[str, float]:
        """`seen` of those of the nodes the store knows."""

    @abc.abstractmethod
    async def prime(self, entries: Sequence[Primed], at: float) -> int:
        """Store the entries of nodes not known yet (their detail as of `at`); how many were new."""
