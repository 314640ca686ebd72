"""What the run-side services share in one apiserver process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.config import Settings
from server.queue.base import QueueUnavailable, RunQueue
from server.repositories import runs as run_repo
from server.repositories.events import append_run_events
from server.services.notifier import Notifier

log = logging.getLogger("server.runs")


def _no_wake() -> None:
    return None


@dataclass
class RunContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: RunQueue
    # key: run id; set when a run gets new events or changes status
    run_updates: Notifier = field(default_factory=Notifier)
    # key: node id; set when a node has new work (assignment, cancel, command)
    node_work: Notifier = field(default_factory=Notifier)
    # re-examine parked runs: a slot freed up or a node became usable
    wake_scheduler: Callable[[], None] = _no_wake

    @property
    def shutting_down(self) -> bool:
        return self.node_work.closed

    def begin_shutdown(self) -> None:
        """Answer every long-poll at once, and later ones without waiting: the server is
        stopping, and uvicorn waits for open requests before it stops."""
        self.node_work.close()
        self.run_updates.close()

    async def publish(self, run_ids: Sequence[str]) -> bool:
        """Put committed queued runs on the queue and mark them enqueued.

        A queue outage is not an error here: the runs stay enqueued=false and the
        scheduler's outbox reconciler publishes them once the queue is back.
        """
        if not run_ids:
            return True
        try:
            await self.queue.publish(list(run_ids))
        except QueueUnavailable as exc:
            log.warning("queue unavailable, %d run(s) left for the outbox: %s", len(run_ids), exc)
            return False
        try:
            async with self.sessionmaker() as session:
                await run_repo.mark_enqueued(session, run_ids)
                await session.commit()
        except SQLAlchemyError as exc:
            # harmless: the outbox republishes, and a duplicate message is ignored
            log.warning("could not mark %d run(s) enqueued: %s", len(run_ids), exc)
        return True


async def record_events(
    session: AsyncSession, run_id: str, events: Sequence[tuple[str, dict[str, Any]]], at: datetime
) -> None:
    """Append events with the next per-run seqs, all stamped `at`."""
    await append_run_events(session, run_id, [(kind, data, at) for kind, data in events])
