"""Retention: what the database forgets, and when.

- a finished run (succeeded, failed, cancelled, lost) with its events and log lines,
  `RUN_RETENTION` seconds (default 7 days) after it ended; queued, scheduled and running runs
  are never touched, however old;
- an audit entry `AUDIT_RETENTION` seconds (default 90 days) after it was written;
- an Idempotency-Key once it can no longer answer (IDEMPOTENCY_KEY_TTL), or with its run.

Off the hot paths: a background loop on the leader only (server.leader; one replica sweeps)
every SWEEP_INTERVAL, deleting in small transactions (RUN_BATCH runs, at most EVENT_BATCH
events or AUDIT_BATCH entries each) with a short pause between them, so heartbeats, event
reports and submissions are never queued behind a long delete (SQLite has one writer). A pass
stops after PASS_BUDGET seconds and the next one carries on: a backlog (retention shortened, a
database inherited) drains over several passes instead of in one long burst.

A run's events go first, then the run: a sweep cut short leaves an expired run with fewer events,
never events without a run, and the next pass finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from server.background import Periodic
from server.leader import LeaderLease, SoleLeader
from server.repositories import idempotency as key_repo
from server.repositories import retention as repo
from server.services.context import ServiceContext
from server.services.runs import IDEMPOTENCY_KEY_TTL

log = logging.getLogger("server.retention")

SWEEP_INTERVAL = 60.0  # seconds between passes
RUN_BATCH = 100  # runs deleted per transaction
EVENT_BATCH = 5000  # events deleted per transaction
AUDIT_BATCH = 5000  # audit entries (and idempotency keys) deleted per transaction
PAUSE = 0.02  # seconds between two transactions of a pass: the hot paths' turn
PASS_BUDGET = 5.0  # seconds of deleting per pass at most


@dataclass
class SweepResult:
    runs: int = 0
    events: int = 0
    audit: int = 0
    keys: int = 0
    complete: bool = True  # False: stopped at the budget with more to delete


class RetentionSweeper:
    def __init__(
        self,
        ctx: ServiceContext,
        lease: LeaderLease | None = None,
        interval: float = SWEEP_INTERVAL,
        pause: float = PAUSE,
        budget: float = PASS_BUDGET,
    ) -> None:
        self._ctx = ctx
        self._lease: LeaderLease = lease or SoleLeader()
        self._pause = pause
        self._budget = budget
        self._loop = Periodic("retention sweep", self._sweep_if_leader, interval)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _sweep_if_leader(self) -> None:
        if not self._lease.held:
            return  # another replica sweeps
        result = await self.sweep()
        if result.runs or result.audit or result.keys:
            log.info(
                "retention: deleted %d finished run(s) with %d event(s), %d audit entrie(s), "
                "%d idempotency key(s)%s",
                result.runs,
                result.events,
                result.audit,
                result.keys,
                "" if result.complete else "; more next pass",
            )

    async def sweep(self) -> SweepResult:
        """One pass: delete what is past its retention, a small transaction at a time, until
        nothing is left or the pass has used its budget."""
        settings = self._ctx.settings
        now = self._ctx.clock.now()
        run_cutoff = now - timedelta(seconds=settings.run_retention)
        audit_cutoff = now - timedelta(seconds=settings.audit_retention)
        key_cutoff = now - timedelta(seconds=IDEMPOTENCY_KEY_TTL)
        ends = time.monotonic() + self._budget
        result = SweepResult()
        sessionmaker = self._ctx.sessionmaker
        while True:
            async with sessionmaker() as session:
                run_ids = await repo.expired_run_ids(session, run_cutoff, RUN_BATCH)
            if not run_ids:
                break
            while True:
                async with sessionmaker.begin() as session:
                    deleted = await repo.delete_run_events(session, run_ids, EVENT_BATCH)
                result.events += deleted
                if deleted < EVENT_BATCH:  # the last of them: the runs go next, in this pass
                    break
                if not await self._go_on(ends, result):
                    return result
            async with sessionmaker.begin() as session:
                result.runs += len(await repo.delete_runs(session, run_ids, run_cutoff))
            if len(run_ids) < RUN_BATCH or not await self._go_on(ends, result):
                break
        while result.complete:
            async with sessionmaker.begin() as session:
                deleted = await repo.delete_audit_before(session, audit_cutoff, AUDIT_BATCH)
            result.audit += deleted
            if deleted < AUDIT_BATCH or not await self._go_on(ends, result):
                break
        while result.complete:
            async with sessionmaker.begin() as session:
                deleted = await key_repo.delete_older_than(session, key_cutoff, AUDIT_BATCH)
            result.keys += deleted
            if deleted < AUDIT_BATCH or not await self._go_on(ends, result):
                break
        return result

    async def _go_on(self, ends: float, result: SweepResult) -> bool:
        """Before the next transaction of a pass with more to delete: pause for the hot paths;
        False (and the pass incomplete) once the pass is over its budget."""
        await asyncio.sleep(self._pause)
        if time.monotonic() >= ends:
            result.complete = False
            return False
        return True
