"""The node status rule, in one place for Python and SQL.

A node is `offline` when its last heartbeat is older than NODE_OFFLINE_AFTER (or it never sent
one), whatever else it is; otherwise `draining` when an admin drained it; otherwise `online`.
Status is never stored: it is derived from `last_heartbeat_at` and `draining` when read, so no
timer flips nodes offline. `StatusRule.of` applies it to values in Python, `StatusRule.sql` to
the `nodes` table's columns; a test holds the two to the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal, or_

from nodeapi.models import NodeStatus


@dataclass
class StatusRule:
    offline_after: float  # seconds
    # after a restart (server.services.liveness): until `held_until` no node goes offline whose
    # heartbeat is at or after `held_cutoff`, the cutoff of the last time heartbeats were stored
    held_cutoff: datetime | None = None
    held_until: datetime | None = None

    def hold(self, cutoff: datetime, until: datetime) -> None:
        """Keep every node's status as of `cutoff` until `until` unless it is heard again: the
        times stored before a restart are stale by the server's own absence, not the nodes'."""
        self.held_cutoff, self.held_until = cutoff, until

    def heard_before(self, now: datetime) -> datetime:
        """Heartbeats older than this are too old to place runs by, restart hold or not: a node
        the hold keeps online takes runs once it is heard again."""
        return now - timedelta(seconds=self.offline_after)

    def offline_before(self, now: datetime) -> datetime:
        """Heartbeats older than this are too old: the node is offline."""
        cutoff = now - timedelta(seconds=self.offline_after)
        held = self.held_cutoff
        if held is not None and self.held_until is not None and now < self.held_until and held < cutoff:
            return held
        return cutoff

    def of(self, last_heartbeat_at: datetime | None, draining: bool, now: datetime) -> NodeStatus:
        if last_heartbeat_at is None:
            return "offline"
        if last_heartbeat_at.tzinfo is None:  # SQLite hands back naive UTC
            last_heartbeat_at = last_heartbeat_at.replace(tzinfo=UTC)
        if last_heartbeat_at < self.offline_before(now):
            return "offline"
        return "draining" if draining else "online"

    def sql(self, columns: Any, now: datetime) -> ColumnElement[str]:
        """The status of each row of `columns` (a table's `.c` with last_heartbeat_at, draining)."""
        fresh = columns.last_heartbeat_at >= self.offline_before(now)  # NULL: never heard of
        return case(
            (fresh.is_not(True), literal("offline")),
            (columns.draining.is_(True), literal("draining")),
            else_=literal("online"),
        )

    def schedulable(
        self,
        status: NodeStatus,
        healthy: bool,
        quarantined_until: datetime | None,
        now: datetime,
        last_heartbeat_at: datetime | None = None,
    ) -> bool:
        """Whether the node takes new runs: online, heard within NODE_OFFLINE_AFTER (when
        `last_heartbeat_at` is given), every reported condition ok, not quarantined."""
        if quarantined_until is not None and quarantined_until.tzinfo is None:
            quarantined_until = quarantined_until.replace(tzinfo=UTC)
        if last_heartbeat_at is not None and last_heartbeat_at < self.heard_before(now):
            return False
        return status == "online" and healthy and (quarantined_until is None or quarantined_until <= now)

    def sql_schedulable(self, columns: Any, now: datetime) -> ColumnElement[bool]:
        """`schedulable` for the rows of `columns` (also healthy, quarantined_until)."""
        not_held_back = or_(columns.quarantined_until.is_(None), columns.quarantined_until <= now)
        wanted: ColumnElement[bool] = and_(
            self.sql_is("online", columns, now),
            columns.last_heartbeat_at >= self.heard_before(now),
            columns.healthy.is_(True),
            not_held_back,
        )
        return wanted

    def sql_state(self, columns: Any, now: datetime, placing: bool = False) -> ColumnElement[str]:
        """What the scheduler needs to know of each node: its status, or, for an online node held
        back, `unhealthy` (a condition fails) or `quarantined`. `placing`: a node not heard within
        NODE_OFFLINE_AFTER is `offline` even while the restart hold shows it online."""
        fresh = columns.last_heartbeat_at >= (self.heard_before(now) if placing else self.offline_before(now))
        return case(
            (fresh.is_not(True), literal("offline")),
            (columns.draining.is_(True), literal("draining")),
            (columns.healthy.is_not(True), literal("unhealthy")),
            (
                and_(columns.quarantined_until.is_not(None), columns.quarantined_until > now),
                literal("quarantined"),
            ),
            else_=literal("online"),
        )

    def sql_is(self, status: NodeStatus, columns: Any, now: datetime) -> ColumnElement[bool]:
        """Rows whose status is `status`, as a condition that can use the heartbeat index."""
        fresh = columns.last_heartbeat_at >= self.offline_before(now)
        if status == "offline":
            stale: ColumnElement[bool] = fresh.is_not(True)
            return stale
        wanted: ColumnElement[bool] = fresh & (columns.draining.is_(status == "draining"))
        return wanted
