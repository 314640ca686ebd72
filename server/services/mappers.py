"""Row -> wire mappers for nodes, runs and env configs (shared by every service).

Rows may come as ORM objects or as Core `Row`s with the same column names.
SQLite hands back naive datetimes: everything stored is UTC, so they get tzinfo=UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from nodeapi import models as m
from nodeapi.masking import mask_values
from server.node_status import StatusRule
from server.services.run_limits import cpus_of, sandbox_of


def utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


def node_from_columns(values: Any, rule: StatusRule, now: datetime, seen: float | None = None) -> m.Node:
    """`values` in repositories.nodes.NODE_FIELDS order; `seen`: when the liveness store last
    heard the node (epoch seconds), shown when newer than the database's time.

    The hot path of the node listing (10,000 rows): tuple unpacking instead of attribute
    lookups, each datetime converted once.
    """
    (
        node_id,
        labels,
        max_concurrent,
        running,
        draining,
        info,
        heartbeat,
        created,
        updated,
        version,
        proxy_test,
        conditions,
        healthy,
        quarantined_at,
        quarantined_until,
        cpu_millis,
        memory_mb,
        requested_cpu_millis,
        requested_memory_mb,
    ) = values
    if heartbeat is not None and heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    if seen is not None and (heartbeat is None or seen > heartbeat.timestamp()):
        heartbeat = datetime.fromtimestamp(seen, UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if updated is not None and updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    status = rule.of(heartbeat, draining, now)
    return m.Node(
        id=node_id,
        status=status,
        draining=bool(draining),
        labels=labels or {},
        capacity=m.Capacity(max_concurrent=max_concurrent, cpus=cpus_of(cpu_millis), memory_mb=memory_mb),
        requested=m.ResourceUsage(cpus=requested_cpu_millis / 1000, memory_mb=requested_memory_mb),
        running=running,
        last_heartbeat_at=heartbeat,
        created_at=created,
        schedulable=rule.schedulable(status, bool(healthy), quarantined_until, now, heartbeat),
        conditions=_conditions(conditions, (quarantined_at, quarantined_until), now),
        updated_at=updated,
        info=_info(info),
        resource_version=version,
        last_proxy_test=msgspec.convert(proxy_test, m.ProxyTestResult) if proxy_test else None,
    )


def _conditions(
    stored: list[dict[str, Any]] | None,
    quarantine: tuple[datetime | None, datetime | None],
    now: datetime,
) -> list[m.NodeCondition]:
    """The reported conditions, and `quarantine` (not ok) while the server holds the node back."""
    conditions = [
        m.NodeCondition(
            type=str(c.get("type", "")),
            ok=bool(c.get("ok")),
            message=str(c.get("message", "")),
            since=_parse_time(c.get("since")),
        )
        for c in stored or []
    ]
    since, until = utc(quarantine[0]), utc(quarantine[1])
    if until is not None and until > now:
        message = f"runs kept failing to start here; no new runs until {until.isoformat()}"
        conditions.append(m.NodeCondition(type="quarantine", ok=False, message=message, since=since))
    return conditions


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def condition_rows(
    reports: list[m.ConditionReport], previous: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """What to store of a heartbeat's conditions: each with `since`, kept from `previous` while its
    `ok` is unchanged (the server's clock, so a node's clock being off changes nothing)."""
    before = {str(c.get("type")): c for c in previous}
    rows = []
    for report in reports:
        old = before.get(report.type)
        since = old.get("since") if old is not None and bool(old.get("ok")) == report.ok else None
        rows.append(
            {
                "type": report.type,
                "ok": report.ok,
                "message": report.message,
                "since": since or now.isoformat(),
            }
        )
    return rows


def _info(info: dict[str, Any] | None) -> m.NodeInfo:
    """What the node reported; a value stored before its range was checked reads as unknown."""
    if not info:
        return m.NodeInfo()
    try:
        return msgspec.convert(info, m.NodeInfo)
    except msgspec.ValidationError:
        fields = m.NodeInfo.__struct_fields__
        strings = {key: value for key, value in info.items() if key in fields and isinstance(value, str)}
        return msgspec.convert(strings, m.NodeInfo)


def run_to_wire(row: Any) -> m.Run:
    return m.Run(
        id=row.id,
        status=row.status,
        image=row.image,
        command=list(row.command or []),
        env=dict(row.env or {}),
        node_selector=dict(row.node_selector or {}),
        node_id=row.node_id,
        exit_code=row.exit_code,
        created_at=utc(row.created_at),  # type: ignore[arg-type]
        secret_env=mask_values(dict.fromkeys((row.secret_env or {}).get("names", []), "")),
        selector_expressions=list(row.selector_expressions or []),
        updated_at=utc(row.updated_at),
        scheduled_at=utc(row.scheduled_at),
        started_at=utc(row.started_at),
        finished_at=utc(row.finished_at),
        attempts=row.attempts,
        cancel_requested=bool(row.cancel_requested),
        container_id=row.container_id,
        message=row.message,
        last_node_seq=row.last_node_seq,
        deadline_seconds=row.deadline_seconds,
        resources=m.Resources(cpus=cpus_of(row.cpu_millis), memory_mb=row.memory_mb),
        sandbox=sandbox_of(row.sandbox),
        reason=row.reason,
    )
