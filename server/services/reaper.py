"""Lost-run reaper: runs on nodes that stopped sending heartbeats.

A node silent for longer than NODE_OFFLINE_AFTER + RUN_LOST_GRACE is presumed gone:
- a run it was running, or had claimed (it may have started it without the server hearing of
  it), becomes `lost`: it is never placed again while the node might still run it;
- a run placed there and never claimed goes back to `queued` for another node, unless it was
  already placed RUN_MAX_ATTEMPTS times (then `lost`);
- a run with a pending cancel becomes `cancelled`.
Each change is a conditional UPDATE on the run's status and node, in its own transaction
together with the node's slot release, so two apiserver replicas never handle a run twice.

With replicas, only the one holding the leader lease (server.leader) runs these checks; another
takes over when it dies. Silence is counted from this process's start at the earliest:
heartbeats missing because the server itself was down (or restarting) must not declare a
healthy node's runs lost. Likewise from the end of a database outage: while the database was
unreachable no heartbeat could be stored, so the first pass that reads it again starts the
count anew.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from server.background import Periodic
from server.db.models import RunRow
from server.leader import LeaderLease, SoleLeader
from server.repositories import nodes as node_repo
from server.repositories import runs as run_repo
from server.repositories.events import record_events
from server.services.context import ServiceContext
from server.services.liveness import Liveness

log = logging.getLogger("server.reaper")

REAP_INTERVAL = 2.0
REAP_BATCH = 500
REPAIR_INTERVAL = 30.0  # seconds between checks of every node's active-run count


class LostRunReaper:
    def __init__(
        self,
        ctx: ServiceContext,
        liveness: Liveness,
        interval: float = REAP_INTERVAL,
        lease: LeaderLease | None = None,
    ) -> None:
        self._ctx = ctx
        self._liveness = liveness  # heartbeats the database may not hold yet
        self._lease: LeaderLease = lease or SoleLeader()
        self._loop = Periodic("lost-run reaper", self._reap, interval)
        self._started = ctx.clock.now()
        self._repaired_at: datetime | None = None
        self._database_failed = False  # a pass could not read the database: heartbeats were not stored

    async def start(self) -> None:
        self._started = self._ctx.clock.now()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _reap(self) -> None:
        if not self._lease.held:
            return  # another replica runs the fleet-wide checks (server.leader)
        await self.reap_once()
        await self.end_overdue_runs()
        now = self._ctx.clock.now()
        if self._repaired_at is None or (now - self._repaired_at).total_seconds() >= REPAIR_INTERVAL:
            await self.repair_running()
            self._repaired_at = now

    async def repair_running(self) -> list[tuple[str, int]]:
        """Set right any node whose `running` differs from its run rows (it should never happen:
        each transition recounts; this is the safety net), and say so in the log."""
        async with self._ctx.sessionmaker.begin() as session:
            repaired = await run_repo.repair_running(session)
        for node_id, wrong in repaired:
            log.warning(
                "node %s counted %d active run(s), which its run rows do not match; repaired", node_id, wrong
            )
        if repaired:
            self._ctx.wake_scheduler()
            self._ctx.node_feed.changed_each([node_id for node_id, _ in repaired])
        return repaired

    async def end_overdue_runs(self) -> list[str]:
        """Runs still `running` RUN_DEADLINE_GRACE after their deadline: their node should have
        stopped them and did not say so (it is silent, or does not enforce deadlines). They end
        `failed` with reason `deadline_exceeded`; a node that comes back is told to stop them."""
        grace = self._ctx.settings.run_deadline_grace
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker() as session:
            rows = await run_repo.overdue_runs(session, now - timedelta(seconds=grace), REAP_BATCH)
        ended = []
        for row in rows:
            message = (
                f"passed its deadline of {row.deadline_seconds}s by more than {grace:g}s "
                f"(RUN_DEADLINE_GRACE) without its node {row.node_id} ending it"
            )
            values = {
                "status": "failed",
                "reason": "deadline_exceeded",
                "message": message,
                "finished_at": now,
                "updated_at": now,
            }
            async with self._ctx.sessionmaker.begin() as session:
                if not await run_repo.update_run(session, row.id, {"status": "running"}, values):
                    continue
                await run_repo.recount_running(session, row.node_id)
                event = {"reason": message, "node_id": row.node_id, "by": "server"}
                await record_events(session, row.id, [("deadline_exceeded", event)], now)
            ended.append(row.id)
            self._ctx.run_updates.notify(row.id)
            if row.node_id is not None:
                self._ctx.node_work.notify(row.node_id)
                self._ctx.node_feed.changed(row.node_id)
        if ended:
            log.warning("ended %d run(s) past their deadline that their nodes did not stop", len(ended))
            self._ctx.wake_scheduler()
        return ended

    async def reap_once(self) -> int:
        """Handle every run on a silent node once; the number of runs changed."""
        settings = self._ctx.settings
        silence = settings.offline_after + settings.run_lost_grace
        now = self._ctx.clock.now()
        try:  # read on every pass, so that no database outage goes unnoticed
            async with self._ctx.sessionmaker() as session:
                rows = await run_repo.active_runs_on_silent_nodes(
                    session, now - timedelta(seconds=silence), REAP_BATCH
                )
        except Exception:
            self._database_failed = True
            raise
        if self._database_failed:
            # back from a database outage: the nodes' heartbeats of that time were refused, not missed
            self._database_failed = False
            self._started = now
            log.info(
                "the database answers again: nodes get %gs from now to be heard before their runs are lost",
                silence,
            )
            return 0
        if (now - self._started).total_seconds() < silence:
            return 0  # nodes have not had a full grace to reach this server yet
        cutoff = now - timedelta(seconds=silence)
        heard = await self._liveness.heard_since(list({row.node_id for row in rows if row.node_id}), cutoff)
        rows = [row for row in rows if row.node_id not in heard]
        requeued: list[str] = []
        changed = 0
        for row in rows:
            outcome = await self._handle(row, silence, now)
            if outcome is None:
                continue
            changed += 1
            self._ctx.run_updates.notify(row.id)
            self._ctx.node_feed.changed(row.node_id)
            if outcome == "queued":
                requeued.append(row.id)
        if requeued:
            await self._ctx.publish(requeued)
        if changed:
            log.info("reaped %d run(s) on silent nodes (%d requeued)", changed, len(requeued))
            self._ctx.wake_scheduler()
        return changed

    async def _handle(self, row: RunRow, silence: float, now: datetime) -> str | None:
        node = row.node_id
        gone = f"node {node} sent no heartbeat for more than {silence:g}s"
        # a claimed run may have started although the node's `started` never arrived: it is never
        # placed again while the node might still be running it (at most one execution at a time)
        maybe_started = (
            row.status == "running"
            or row.claimed_at is not None
            or row.started_at is not None
            or row.container_id is not None
        )
        values: dict[str, Any] = {"updated_at": now}
        data: dict[str, Any]
        if row.cancel_requested:
            status, kind, data = (
                "cancelled",
                "cancelled",
                {"reason": f"{gone}; cancelled without its confirmation"},
            )
            values.update(status=status, finished_at=now, message=data["reason"], reason="cancelled")
        elif maybe_started:
            reason = (
                gone
                if row.status == "running"
                else f"{gone} after it claimed the run; it may have started it"
            )
            status, kind, data = "lost", "lost", {"reason": reason, "node_id": node}
            values.update(status=status, finished_at=now, message=reason, reason="node_lost")
        elif row.attempts >= self._ctx.settings.run_max_attempts:
            reason = f"{gone} before starting it; giving up after {row.attempts} attempt(s)"
            status, kind, data = "lost", "lost", {"reason": reason, "node_id": node}
            values.update(status=status, finished_at=now, message=reason, reason="node_lost")
        else:
            reason = f"{gone} before starting it; queued again"
            status, kind, data = "queued", "requeued", {"reason": reason, "node_id": node}
            values.update(
                status=status,
                node_id=None,
                scheduled_at=None,
                claimed_at=None,
                enqueued=False,
                message=reason,
            )
        if await self._liveness.heard_since([node] if node else [], now - timedelta(seconds=silence)):
            return None
        async with self._ctx.sessionmaker.begin() as session:
            # a heartbeat may have arrived since the scan; the row lock makes it wait for this check
            if not await node_repo.still_silent(session, node, now - timedelta(seconds=silence)):
                return None
            if not await run_repo.update_run(
                session, row.id, {"status": row.status, "node_id": node}, values
            ):
                return None
            await run_repo.recount_running(session, node)
            await record_events(session, row.id, [(kind, data)], now)
        return status
