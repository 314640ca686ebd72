"""The scheduler service: queue -> place -> apply -> commit -> ack, plus its safety nets.

Tasks (all supervised: errors are logged and retried with backoff and jitter):
- consume: up to `batch_size` messages (blocking ~1 s), placed and applied in one transaction,
  acked only after the commit; the next batch is read while this one is placed and committed;
  a batch whose pass fails stays pending and its runs join the parked ones;
- parked: runs that fit nowhere wait in memory and are placed again on `wake()` or every
  `recheck_interval` (skipped while the node snapshot is unchanged); every `rescan_interval`
  (and at start) all queued runs are loaded from the database, so runs parked by a replica
  that died, or whose message was lost, are never forgotten (and parked runs no longer queued
  are dropped). A parked run is kept as loaded (its selector, requests and avoided nodes do not
  change while it stays queued), so a re-examination reads only the node snapshot, goes through
  the parked runs oldest first and stops as soon as no node has a free slot: under load, when
  one run ends, one parked run is looked at, not all of them;
- outbox: runs committed while the queue was down (`enqueued = false`) are published;
- reclaim: messages left pending by a dead consumer for `reclaim_min_idle` are taken over.

Node snapshot: a pass reuses the previous pass's `Placer` (snapshot, label groups, candidate
heaps, and the load this process added since) for up to `snapshot_max_age` seconds, so a
batch does not pay for loading and grouping every node. Staleness is safe: the apply step
re-checks capacity in SQL. It is bounded: a run is only declared unschedulable on a snapshot
loaded in that pass, and a pass whose writes were refused (another replica filled a node,
a run moved) drops the kept snapshot. Capacity freed meanwhile is seen on the next load.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.background import run_forever
from server.clock import Clock, SystemClock
from server.metrics import Metrics
from server.node_status import StatusRule
from server.queue.base import Message, RunQueue
from server.repositories import runs as run_repo
from server.repositories import scheduling as repo
from server.scheduler.placement import (
    Decision,
    NodeSnapshot,
    NodeState,
    PendingRun,
    Placer,
    Unschedulable,
    avoid_time,
)
from server.scheduler.selectors import Selector, compile_selector

log = logging.getLogger("server.scheduler")

OnAssigned = Callable[[list[tuple[str, str]]], Awaitable[None] | None]
RESCAN_LIMIT = 50_000  # queued runs re-read per rescan
OUTBOX_BATCH = 1000


@dataclass(slots=True)
class _Known:
    """A parked run as loaded, and the reason its row holds (to write only a changed one)."""

    selector: Selector | None  # None: its selector does not parse (the reason says why)
    avoid_nodes: dict[str, str]
    cpu_millis: int
    memory_mb: int
    reason: str | None

    def pending(self, run_id: str, avoid_since: str) -> PendingRun:
        assert self.selector is not None
        avoid = frozenset(node for node, at in self.avoid_nodes.items() if at > avoid_since)
        return PendingRun(run_id, self.selector, avoid, self.cpu_millis, self.memory_mb)


@dataclass
class SchedulerStats:
    passes: int = 0
    assigned: int = 0
    unschedulable: int = 0
    retried: int = 0
    published: int = 0
    reclaimed: int = 0
    errors: int = 0


class Scheduler:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession] | AsyncEngine,
        queue: RunQueue,
        *,
        offline_after: float = 90.0,
        batch_size: int = 256,
        block: float = 1.0,
        recheck_interval: float = 5.0,
        rescan_interval: float = 30.0,
        outbox_interval: float = 2.0,
        outbox_grace: float = 1.0,
        reclaim_interval: float = 10.0,
        reclaim_min_idle: float = 30.0,
        snapshot_max_age: float = 1.0,
        start_failure_cooldown: float = 300.0,
        on_assigned: OnAssigned | None = None,
        clock: Clock | None = None,
        status_rule: StatusRule | None = None,
        metrics: Metrics | None = None,
        on_reasons: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.sessionmaker = (
            async_sessionmaker(db, expire_on_commit=False) if isinstance(db, AsyncEngine) else db
        )
        self.queue = queue
        self.status_rule = status_rule or StatusRule(offline_after)
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.block = block
        self.recheck_interval = recheck_interval
        self.rescan_interval = rescan_interval
        self.outbox_interval = outbox_interval
        self.outbox_grace = outbox_grace
        self.reclaim_interval = reclaim_interval
        self.reclaim_min_idle = reclaim_min_idle
        self.snapshot_max_age = snapshot_max_age
        self.start_failure_cooldown = timedelta(seconds=start_failure_cooldown)
        self.on_assigned = on_assigned
        self.on_reasons = on_reasons  # runs that got an `unschedulable` event: their watchers wake
        self.metrics = metrics
        self.stats = SchedulerStats()
        self.parked: dict[str, None] = {}  # run ids, oldest first
        self._known: dict[str, _Known] = {}  # parked runs as loaded
        self._woken = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_fingerprint: int | None = None
        self._next_batch: asyncio.Task[list[Message]] | None = None
        self._placer: Placer | None = None
        self._placer_loaded_at = 0.0
        self._nodes_generation = 0  # bumped by nodes_changed(): a pass then keeps no snapshot

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        steps: dict[str, tuple[Callable[[], Awaitable[None]], float]] = {
            "consume": (self._consume_once, 0.0),
            "parked": (self._parked_once, 0.0),
            "rescan": (self._rescan_once, self.rescan_interval),
            "outbox": (self._outbox_once, self.outbox_interval),
            "reclaim": (self._reclaim_once, self.reclaim_interval),
        }
        self._tasks = [
            asyncio.create_task(
                run_forever(f"scheduler {name}", step, every, on_failure=self._count_failure),
                name=f"scheduler-{name}",
            )
            for name, (step, every) in steps.items()
        ]

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks]
        if self._next_batch is not None:
            # messages it may have read stay pending and are reclaimed, as after a crash
            tasks.append(self._next_batch)
        self._tasks, self._next_batch = [], None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        """Capacity may have appeared: place the parked runs again now. Call from the event loop."""
        self._last_fingerprint = None
        self._woken.set()

    def nodes_changed(self) -> None:
        """A node's status, labels, capacity or health changed: load the node snapshot anew."""
        self._placer = None
        self._nodes_generation += 1
        self.wake()

    def _count_failure(self, _: Exception) -> None:
        self.stats.errors += 1

    # ------------------------------------------------------------------ steps

    async def _consume_once(self) -> None:
        fetch, self._next_batch = self._next_batch or self._fetch(), None
        messages = await fetch
        if messages:
            self._next_batch = self._fetch()  # the queue round trip overlaps the database work
            await self._settle_messages(messages)

    def _fetch(self) -> asyncio.Task[list[Message]]:
        return asyncio.create_task(self.queue.consume(self.batch_size, self.block), name="scheduler-fetch")

    async def _reclaim_once(self) -> None:
        messages = await self.queue.reclaim(self.reclaim_min_idle, self.batch_size)
        if messages:
            self.stats.reclaimed += len(messages)
            log.info("reclaimed %d message(s) from idle consumers", len(messages))
            await self._settle_messages(messages)

    async def _settle_messages(self, messages: Sequence[Message]) -> None:
        run_ids = list(dict.fromkeys(m.run_id for m in messages))
        try:
            await self.schedule(run_ids)
        except Exception:
            # the pass failed (database unavailable): the messages stay pending in case this
            # replica dies, and the runs are tried again with the parked ones, on the next pass
            # that works, instead of waiting for the messages to be reclaimed (reclaim_min_idle)
            for run_id in run_ids:
                self.parked.setdefault(run_id, None)
            self.wake()
            raise
        await self.queue.ack([m.id for m in messages])

    async def _parked_once(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), self.recheck_interval)
        woken = self._woken.is_set()
        self._woken.clear()
        if not self.parked:
            return
        if not woken and self._last_fingerprint == await self._fingerprint():
            return  # nothing changed on the nodes since the last look: same decisions
        await self.place_parked()
        # woken (a run ended, a node changed) happens all the time under load: the next timed
        # look compares with a fresh fingerprint instead of paying for one after every pass
        self._last_fingerprint = None if woken else await self._fingerprint()

    async def _rescan_once(self) -> None:
        async with self.sessionmaker() as session:
            queued = await repo.queued_run_ids(session, RESCAN_LIMIT)
        if len(queued) < RESCAN_LIMIT:  # the whole list: a parked run missing from it is no longer queued
            still = set(queued)
            for run_id in [run_id for run_id in self.parked if run_id not in still]:
                self._unpark(run_id)
        fresh = [run_id for run_id in queued if run_id not in self.parked]
        if fresh:
            self.parked.update(dict.fromkeys(fresh))
            self.wake()

    async def _outbox_once(self) -> None:
        async with self.sessionmaker() as session:
            run_ids = await repo.unpublished_run_ids(
                session, self.clock.now() - timedelta(seconds=self.outbox_grace), OUTBOX_BATCH
            )
        if not run_ids:
            return
        await self.queue.publish(run_ids)
        async with self.sessionmaker() as session:
            await run_repo.mark_enqueued(session, run_ids)
            await session.commit()
        self.stats.published += len(run_ids)
        log.info("outbox published %d run(s) committed while the queue was unavailable", len(run_ids))

    # ------------------------------------------------------------------ one pass

    async def schedule(self, run_ids: Sequence[str]) -> None:
        """Place the given runs (those still queued) and commit the result in one transaction."""
        async with self._pass_lock:
            began = time.perf_counter()
            now = self.clock.now()
            placer, self._placer = self._placer, None  # kept again only if the pass commits cleanly
            nodes_seen = self._nodes_generation
            async with self.sessionmaker() as session:
                pending, invalid = await self._load_runs(session, run_ids)
                placer, placed = await self._place(session, placer, pending, now) if pending else (placer, [])
                result = await self._apply(session, [*placed, *invalid], now)
            loaded = {run.id for run in pending} | {d.run_id for d in invalid}
            for run_id in run_ids:
                if run_id not in loaded:
                    self._unpark(run_id)
            self._settle(result, placer, nodes_seen)
            if self.metrics is not None:
                self.metrics.placement.observe(time.perf_counter() - began)
        if result.reasons_recorded and self.on_reasons is not None:
            self.on_reasons(result.reasons_recorded)
        if result.assigned and self.on_assigned is not None:
            await self._notify(result.assigned)

    async def place_parked(self) -> None:
        """Re-examine the parked runs, oldest first, on a fresh node snapshot, until no node has a
        free slot; runs not loaded yet (found by a rescan) are read first."""
        async with self._pass_lock:
            now = self.clock.now()
            self._placer = None
            nodes_seen = self._nodes_generation
            async with self.sessionmaker() as session:
                placer = Placer(await self._snapshot(session, now))
                self._placer_loaded_at = time.monotonic()
                if not placer.has_room():
                    return
                unknown = [run_id for run_id in self.parked if run_id not in self._known]
                decisions: list[Decision] = []
                for start in range(0, len(unknown), OUTBOX_BATCH):
                    chunk = unknown[start : start + OUTBOX_BATCH]
                    _, invalid = await self._load_runs(session, chunk)
                    decisions.extend(invalid)
                    for run_id in chunk:
                        if run_id not in self._known:
                            self._unpark(run_id)  # no longer queued
                avoid_since = avoid_time(now - self.start_failure_cooldown)
                for run_id in list(self.parked):
                    if not placer.has_room():
                        break
                    known = self._known.get(run_id)
                    if known is not None and known.selector is not None:
                        decisions.extend(placer.place([known.pending(run_id, avoid_since)]))
                result = await self._apply(session, decisions, now)
            self._settle(result, placer, nodes_seen)
        if result.reasons_recorded and self.on_reasons is not None:
            self.on_reasons(result.reasons_recorded)
        if result.assigned and self.on_assigned is not None:
            await self._notify(result.assigned)

    async def _apply(
        self, session: AsyncSession, decisions: list[Decision], now: datetime
    ) -> repo.ApplyResult:
        """Write the decisions (an unschedulable run only when its reason changed) and commit."""
        writes = [
            d
            for d in decisions
            if not (
                isinstance(d, Unschedulable)
                and (known := self._known.get(d.run_id))
                and known.reason == d.reason
            )
        ]
        result = await repo.apply_decisions(session, writes, now=now, rule=self.status_rule)
        await session.commit()
        for decision in writes:
            if (
                isinstance(decision, Unschedulable)
                and (known := self._known.get(decision.run_id)) is not None
            ):
                known.reason = decision.reason
        result.unschedulable.extend(
            d.run_id for d in decisions if isinstance(d, Unschedulable) and d not in writes
        )
        return result

    def _settle(self, result: repo.ApplyResult, placer: Placer | None, nodes_seen: int) -> None:
        if placer is not None and not (result.retry or result.gone) and nodes_seen == self._nodes_generation:
            self._placer = placer
        if self.metrics is not None:
            self.metrics.placed.inc(len(result.assigned))
        self.stats.passes += 1
        self.stats.assigned += len(result.assigned)
        self.stats.unschedulable += len(result.unschedulable)
        self.stats.retried += len(result.retry)
        for run_id, _ in result.assigned:
            self._unpark(run_id)
        for run_id in result.gone:
            self._unpark(run_id)
        for run_id in (*result.unschedulable, *result.retry):
            self.parked.setdefault(run_id, None)
        if result.retry:
            self._woken.set()

    def _unpark(self, run_id: str) -> None:
        self.parked.pop(run_id, None)
        self._known.pop(run_id, None)

    async def _notify(self, assigned: list[tuple[str, str]]) -> None:
        assert self.on_assigned is not None
        try:
            outcome = self.on_assigned(assigned)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("on_assigned callback failed for %d assignment(s)", len(assigned))

    async def _place(
        self, session: AsyncSession, placer: Placer | None, pending: list[PendingRun], now: datetime
    ) -> tuple[Placer, list[Decision]]:
        if placer is not None and time.monotonic() - self._placer_loaded_at < self.snapshot_max_age:
            decisions = placer.place(pending)
            if not any(isinstance(decision, Unschedulable) for decision in decisions):
                return placer, decisions
        # the placer that said "unschedulable" counted this batch's other runs as load: drop it
        placer = Placer(await self._snapshot(session, now))
        self._placer_loaded_at = time.monotonic()
        return placer, placer.place(pending)

    async def _load_runs(
        self, session: AsyncSession, run_ids: Sequence[str]
    ) -> tuple[list[PendingRun], list[Unschedulable]]:
        pending: list[PendingRun] = []
        invalid: list[Unschedulable] = []
        avoid_since = avoid_time(self.clock.now() - self.start_failure_cooldown)
        for (
            run_id,
            selector,
            expressions,
            avoid_nodes,
            cpu_millis,
            memory_mb,
            message,
        ) in await repo.pending_runs(session, run_ids):
            try:
                compiled = compile_selector(selector or {}, expressions or ())
            except ValueError as exc:
                invalid.append(Unschedulable(run_id, f"invalid node selector: {exc}"))
                self._known[run_id] = _Known(None, {}, 0, 0, message)
                continue
            known = _Known(compiled, dict(avoid_nodes or {}), cpu_millis or 0, memory_mb or 0, message)
            self._known[run_id] = known
            pending.append(known.pending(run_id, avoid_since))
        return pending, invalid

    async def _snapshot(self, session: AsyncSession, now: datetime) -> list[NodeSnapshot]:
        decoded: dict[str | None, dict[str, str]] = {}
        nodes = []
        for node_id, text, running, max_concurrent, status, *resources in await repo.node_snapshot(
            session, self.status_rule, now
        ):
            labels = decoded.get(text)
            if labels is None:
                labels = decoded[text] = (msgspec.json.decode(text) if text else None) or {}
            cpu_millis, memory_mb, requested_cpu_millis, requested_memory_mb = resources
            nodes.append(
                NodeSnapshot(
                    node_id,
                    labels,
                    running,
                    max_concurrent,
                    cast(NodeState, status),
                    cpu_millis,
                    memory_mb,
                    requested_cpu_millis or 0,
                    requested_memory_mb or 0,
                )
            )
        return nodes

    async def _fingerprint(self) -> int:
        async with self.sessionmaker() as session:
            nodes = await self._snapshot(session, self.clock.now())
        return hash(
            tuple(
                (
                    n.id,
                    tuple(sorted(n.labels.items())),
                    n.running,
                    n.max_concurrent,
                    n.state,
                    n.cpu_millis,
                    n.memory_mb,
                    n.requested_cpu_millis,
                    n.requested_memory_mb,
                )
                for n in nodes
            )
        )
