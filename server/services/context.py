"""What the services of one apiserver process share: settings, the database, the run queue,
the node status rule, and the in-process wake-ups that answer long-polls."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.clock import Clock, SystemClock
from server.config import Settings
from server.node_status import StatusRule
from server.queue.base import QueueUnavailable, RunQueue
from server.repositories import runs as run_repo
from server.secrets import SecretBox
from server.services.node_feed import NodeFeed
from server.services.notifier import Notifier

log = logging.getLogger("server.runs")


@dataclass
class ServiceContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: RunQueue
    secrets: SecretBox
    # re-examine parked runs: a slot freed up or a node became usable
    wake_scheduler: Callable[[], None]
    # a node's status, labels, capacity or health changed: the scheduler drops the node snapshot it
    # keeps between passes, so a node made usable is placed on at once, not a second later
    nodes_changed: Callable[[], None]
    # key: run id; set when a run gets new events or changes status
    run_updates: Notifier = field(default_factory=Notifier)
    # key: node id; set when a node has new work (assignment, cancel, command)
    node_work: Notifier = field(default_factory=Notifier)
    # key: command id; set when a node answered a command
    command_results: Notifier = field(default_factory=Notifier)
    clock: Clock = field(default_factory=SystemClock)
    # node ids whose status, load, schedulability, labels or capacity changed: the live node stream
    node_feed: NodeFeed = field(default_factory=NodeFeed)
    # the one node status rule of this process, shared with the scheduler (its restart hold is
    # set at start by server.services.liveness); None: a rule of its own from the settings
    shared_status_rule: StatusRule | None = None

    def __post_init__(self) -> None:
        self._status_rule = self.shared_status_rule or StatusRule(self.settings.offline_after)

    @property
    def status_rule(self) -> StatusRule:
        return self._status_rule

    def begin_shutdown(self) -> None:
        """Answer every long-poll at once, and later ones without waiting: the server is
        stopping, and uvicorn waits for open requests before it stops."""
        for notifier in (self.node_work, self.run_updates, self.command_results):
            notifier.close()
        self.node_feed.close()

    async def publish(self, run_ids: Sequence[str]) -> bool:
        """Put committed queued runs on the queue and mark them enqueued.

        A queue outage is not an error here: the runs stay enqueued=false and the
        scheduler's outbox publishes them once the queue is back.
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
