"""Node liveness off the database's transactional path.

A heartbeat that repeats what the database already holds of its node (labels, capacity, info,
condition states, the runs it holds and their attempts: the report's `state` digest) and comes
from a node that is not coming back from offline changes nothing but the node's liveness. It
is taken by the liveness store (server.liveness: this process's memory, or Redis shared by the
replicas) in one step and answered at once; every other heartbeat takes the database path
(NodeService), which then records its report here.

- **Batches**: the times of heartbeats taken here reach `nodes.last_heartbeat_at` once per
  LIVENESS_FLUSH_INTERVAL, in one statement per flush (server.repositories.liveness).
- **The runs**: a node's report can stay the same while the server's side changes (a run
  placed on it, one ended by the server). So each flush also reads the runs the server
  expects on the nodes it wrote, and a node whose held runs differ has its stored report
  dropped: its next heartbeat takes the database path and is reconciled there.
- **Condition messages** (`detail`, e.g. a disk's free space, which changes all the time) are
  written at most every DETAIL_REFRESH_INTERVALS heartbeat intervals; a condition's `ok`
  changing is part of `state` and goes to the database at once.
- **Why SQL status stays exact**: a heartbeat is taken here only when the node was heard at
  least `fresh_margin` (more than a flush's lag) inside its offline window, so the time the
  database holds never lets a node look offline while the store knows it is alive: the status
  rule's SQL forms (listing filter, scheduler snapshot, placement guard) need no merge. Reads
  that show the time (node listing, GET) and the reaper read the newer of the two.
- **Restart**: times stored before a restart are stale by the server's absence. Until one
  offline window has passed since the start, no node goes offline on a time at or after the
  newest stored heartbeat minus NODE_OFFLINE_AFTER (StatusRule.hold): a restart makes no node
  offline that keeps heartbeating, and a node already offline stays so. The in-process store
  is primed from the database (times, report digests, draining), and while the hold lasts a
  node it keeps online counts as fresh, so after a restart unchanged heartbeats stay off the
  database path (a fleet does not come back through it all at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from nodeapi import models as m
from server.background import Periodic
from server.liveness import Known, LivenessStore, LivenessUnavailable, Primed, Report
from server.repositories import liveness as repo
from server.services.context import ServiceContext

log = logging.getLogger("server.liveness")

DETAIL_REFRESH_INTERVALS = 10
VERIFY_CHUNK = 2000  # nodes per query of their expected runs
HeldRuns = tuple[tuple[str, int | None], ...]  # (run id, attempt the node gave, if it did)

_encode = msgspec.json.encode


def report_of(req: m.HeartbeatRequest) -> Report:
    """Digests of what a heartbeat reports. The runs are sorted: their order means nothing."""
    conditions = req.conditions
    state = _encode(
        (
            req.labels,
            req.capacity,
            req.info,
            sorted(req.active_runs),
            req.run_attempts,
            [(c.type, c.ok) for c in conditions],
        )
    )
    detail = _encode([c.message for c in conditions])
    return Report(
        state=hashlib.blake2b(state, digest_size=16).hexdigest(),
        detail=hashlib.blake2b(detail, digest_size=8).hexdigest(),
    )


def held_runs(req: m.HeartbeatRequest) -> HeldRuns:
    if not req.active_runs:
        return ()
    attempts = req.run_attempts
    return tuple((run_id, attempts.get(run_id)) for run_id in req.active_runs)


@dataclass(frozen=True)
class _Heard:
    at: datetime
    runs: HeldRuns


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


class Liveness:
    """Heartbeats taken off the database path, their batched writes, and the merged view."""

    def __init__(self, ctx: ServiceContext, store: LivenessStore) -> None:
        self._ctx = ctx
        self.store = store
        settings = ctx.settings
        self.offline_after = settings.offline_after
        # a flush's lag has to stay well inside the margin below
        self.flush_interval = min(settings.liveness_flush_interval, settings.offline_after / 4)
        # a flush's lag: its interval, and as long again for the write (and a failed one retried)
        self.fresh_margin = min(settings.offline_after / 2, max(2.0, 3 * self.flush_interval))
        self.detail_refresh = DETAIL_REFRESH_INTERVALS * settings.heartbeat_interval
        self._pending: dict[str, _Heard] = {}  # taken here, not written to the database yet
        self._loop = Periodic("liveness flush", self._flush_step, self.flush_interval)
        self._hold_until: datetime | None = None  # the restart hold, until the live views hear it ended
        self.flushed = 0  # node times written, for tests and benches
        self.invalidated = 0

    # ------------------------------------------------------------------ heartbeats

    async def heard(self, node_id: str, report: Report, runs: HeldRuns, now: datetime) -> Known | None:
        """Take the heartbeat if it changes nothing but liveness; None: take the database path."""
        at = now.timestamp()
        fresh_after = at - self.offline_after + self.fresh_margin
        rule = self._ctx.status_rule
        if rule.held_cutoff is not None and rule.held_until is not None and now < rule.held_until:
            # after a restart every node's time is stale by the server's absence: those the hold
            # keeps online stay off the database path (no burst of a whole fleet's writes)
            fresh_after = min(fresh_after, rule.held_cutoff.timestamp())
        try:
            known = await self.store.heard(
                node_id,
                report,
                at,
                fresh_after=fresh_after,
                detail_after=at - self.detail_refresh,
            )
        except LivenessUnavailable as exc:
            log.debug("liveness store unavailable, heartbeat of %s goes to the database: %s", node_id, exc)
            return None
        if known is not None:
            self._pending[node_id] = _Heard(now, runs)
        return known

    async def recorded(self, node_id: str, report: Report | None, now: datetime, draining: bool) -> None:
        """The database took the node's heartbeat; `report` None: its runs need reconciling, so
        the next one goes there too."""
        try:
            await self.store.record(node_id, report, now.timestamp(), draining)
        except LivenessUnavailable as exc:
            log.debug("liveness store unavailable, %s not recorded: %s", node_id, exc)

    # ------------------------------------------------------------------ reads and changes

    async def last_seen(self, node_ids: Sequence[str]) -> dict[str, float]:
        """When the store last heard each node (epoch seconds); empty while it is unavailable."""
        try:
            return await self.store.last_seen(node_ids)
        except LivenessUnavailable as exc:
            log.debug("liveness store unavailable, showing the database's times: %s", exc)
            return {}

    async def heard_since(self, node_ids: Sequence[str], cutoff: datetime) -> set[str]:
        """Those of the nodes heard at or after `cutoff`, though the database may not say so yet."""
        limit = cutoff.timestamp()
        return {node_id for node_id, seen in (await self.last_seen(node_ids)).items() if seen >= limit}

    async def invalidate(self, node_ids: Sequence[str]) -> None:
        """The server changed something the heartbeat answer depends on (draining): the next
        heartbeat of these nodes takes the database path."""
        try:
            await self.store.invalidate(node_ids)
        except LivenessUnavailable as exc:
            log.warning("liveness store unavailable, could not invalidate %s: %s", list(node_ids), exc)

    async def forget(self, node_id: str) -> None:
        self._pending.pop(node_id, None)
        try:
            await self.store.forget([node_id])
        except LivenessUnavailable as exc:
            log.warning("liveness store unavailable, could not forget %s: %s", node_id, exc)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            await self.store.start()
        except LivenessUnavailable as exc:
            log.warning("liveness store not reachable at start-up; heartbeats go to the database: %s", exc)
        await self._prime_and_hold()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        try:
            await self.flush_once()
        except Exception:  # stopping anyway: the restart hold covers what was not written
            log.exception("the last liveness flush failed")
        with contextlib.suppress(LivenessUnavailable):
            await self.store.close()

    async def _prime_and_hold(self) -> None:
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker() as session:
            newest = await repo.newest_heartbeat(session)
            rows = await repo.liveness_rows(session)
        if newest is not None:
            newest = newest if newest.tzinfo is not None else newest.replace(tzinfo=UTC)
            window = timedelta(seconds=self.offline_after)
            self._ctx.status_rule.hold(min(newest, now) - window, now + window)
            self._hold_until = now + window
        entries = [
            Primed(node_id, _timestamp(seen), state, bool(draining), detail)
            for node_id, seen, digest, draining in rows
            if seen is not None
            for state, detail in [Report.parse_stored(digest)]
        ]
        try:
            added = await self.store.prime(entries, now.timestamp())
        except LivenessUnavailable as exc:
            log.warning("liveness store unavailable, not primed: %s", exc)
            return
        log.info("liveness store primed with %d of %d node(s)", added, len(rows))

    # ------------------------------------------------------------------ flush

    async def _flush_step(self) -> None:
        await self.flush_once()
        if self._hold_until is not None and self._ctx.clock.now() >= self._hold_until:
            # nodes the hold kept online whose time had passed long before are offline now, which
            # no time sweep of the live node stream announces: its views reload instead
            self._hold_until = None
            self._ctx.node_feed.reset()

    async def flush_once(self) -> int:
        """Write the pending times in one statement, then check the runs of those nodes."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        heard = sorted((node_id, entry.at) for node_id, entry in pending.items())
        try:
            async with self._ctx.sessionmaker.begin() as session:
                await repo.write_last_seen(session, heard)
        except Exception:
            for node_id, entry in pending.items():  # again next time, unless a newer one came
                newer = self._pending.get(node_id)
                if newer is None or newer.at < entry.at:
                    self._pending[node_id] = entry
            raise
        self.flushed += len(heard)
        await self._verify_runs(pending)
        return len(heard)

    async def _verify_runs(self, pending: dict[str, _Heard]) -> None:
        node_ids = list(pending)
        differing: list[str] = []
        try:
            for start in range(0, len(node_ids), VERIFY_CHUNK):
                chunk = node_ids[start : start + VERIFY_CHUNK]
                async with self._ctx.sessionmaker() as session:
                    expected = await repo.active_runs_of(session, chunk)
                differing += [n for n in chunk if not _same_runs(pending[n].runs, expected.get(n, {}))]
        except Exception as exc:  # the next flush checks the next heartbeats of these nodes
            log.warning("could not check the runs of %d heartbeat(s): %s", len(node_ids), exc)
        if differing:
            self.invalidated += len(differing)
            await self.invalidate(differing)


def _same_runs(held: HeldRuns, expected: dict[str, int]) -> bool:
    """Whether reconciliation would find nothing to do: the node holds exactly the runs placed
    on it, each in the attempt it was placed in (where the node says)."""
    if len(held) != len(expected):
        return False
    for run_id, attempt in held:
        placed = expected.get(run_id)
        if placed is None or (attempt is not None and attempt != placed):
            return False
    return True
