"""Runs as the admin API sees them: create, list, get, cancel, events (with long-poll)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, get_args

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nodeapi import models as m
from nodeapi.models import TERMINAL_RUN_STATUSES
from server.db.models import RunEventRow, RunRow
from server.errors import Conflict, InvalidInput, NotFound, Unavailable
from server.repositories import idempotency as key_repo
from server.repositories import runs as repo
from server.repositories.events import event_row, insert_event_rows, record_events
from server.secrets import sealed_with_names
from server.services.audit import record, record_many
from server.services.context import ServiceContext
from server.services.longpoll import long_poll
from server.services.mappers import run_to_wire, utc
from server.services.run_limits import limits_of
from server.services.run_validation import validate_run_create

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
DEFAULT_EVENTS_LIMIT = 1000
MAX_EVENTS_WAIT = 30.0
# long-polls re-read the database this often even without a wake-up: a safety net, since events
# written on any replica wake the waiter through the wake bus (server.wake)
EVENTS_RECHECK = 5.0
MAX_CANCEL_ATTEMPTS = 5
IDEMPOTENCY_KEY_TTL = 24 * 3600.0  # seconds an Idempotency-Key is kept (at least)
RUN_STATUSES: frozenset[str] = frozenset(get_args(m.RunStatus))
SUBMIT_BATCH = 500  # new runs written in one transaction at most


@dataclass
class _Submission:
    row: RunRow
    actor: str
    secret_names: list[str]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _fingerprint(req: m.RunCreate) -> str:
    """The request body as decoded, independent of key order and spacing."""
    canonical = json.dumps(msgspec.to_builtins(req), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_run_id() -> str:
    return f"run-{secrets.token_hex(10)}"


def check_page(limit: int, offset: int, maximum: int = MAX_LIMIT) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be between 1 and {maximum}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset must be 0 or more, got {offset}")


def parse_statuses(status: str | None) -> list[str]:
    """`status` may name several, comma-separated: `queued,scheduled`."""
    if not status:
        return []
    statuses = [part.strip() for part in status.split(",") if part.strip()]
    unknown = [s for s in statuses if s not in RUN_STATUSES]
    if unknown:
        raise InvalidInput(f"status must be one of {', '.join(sorted(RUN_STATUSES))}; got {unknown[0]!r}")
    return statuses


CREATION_EVENTS: tuple[tuple[str, bool], ...] = (("created", True), ("queued", False))


async def _write_new_runs(session: AsyncSession, batch: list[_Submission]) -> None:
    """New runs with their `created` and `queued` events (seqs 1 and 2) and audit entries."""
    await repo.add_many(session, [submission.row for submission in batch])
    events = []
    for submission in batch:
        row = submission.row
        for seq, (kind, described) in enumerate(CREATION_EVENTS, start=1):
            data = {"image": row.image, "command": row.command} if described else {}
            events.append(event_row(row.id, seq, kind, data, row.created_at))
    await insert_event_rows(session, events)
    by_actor: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for submission in batch:
        row = submission.row
        details = {
            "image": row.image,
            "node_selector": row.node_selector,
            "env": sorted(row.env),
            "secret_env": submission.secret_names,
        }
        by_actor.setdefault(submission.actor, []).append((row.id, details))
    for actor, items in by_actor.items():
        await record_many(session, actor, "run.create", "run", items)


class RunService:
    """Submissions without an Idempotency-Key are written in group commits: those that arrive
    while one transaction is out go together in the next (runs, their `created` and `queued`
    events and their audit entries, each one executemany), then are published with one queue call
    and one `enqueued` update; each request answers once its run is committed and published."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._submissions: list[_Submission] = []
        self._submitter: asyncio.Task[None] | None = None

    async def create(
        self, req: m.RunCreate, actor: str = "admin", idempotency_key: str | None = None
    ) -> tuple[m.Run, bool]:
        """The new run, and whether it is new: with an Idempotency-Key already used for the same
        body the run that one made is answered (False); for another body, Conflict."""
        validate_run_create(req)
        limits_of(req, self._ctx.settings)  # 400 before a key is looked at
        if idempotency_key is None:
            return await self._create(req, actor, None), True
        fingerprint = _fingerprint(req)
        for _ in range(MAX_CANCEL_ATTEMPTS):
            async with self._ctx.sessionmaker() as session:
                used = await key_repo.find(session, idempotency_key, self._key_cutoff())
            if used is not None:
                if used[0] != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was used for another run request; use a new key for "
                        "a different request",
                        extra={"run_id": used[1]},
                    )
                return await self.get(used[1]), False
            try:
                return await self._create(req, actor, (idempotency_key, fingerprint)), True
            except IntegrityError:
                continue  # the same key committed concurrently: answer what that request made
        raise Unavailable("the Idempotency-Key is being used concurrently; retry")

    def _key_cutoff(self) -> datetime:
        return self._ctx.clock.now() - timedelta(seconds=IDEMPOTENCY_KEY_TTL)

    async def _create(self, req: m.RunCreate, actor: str, key: tuple[str, str] | None) -> m.Run:
        now = self._ctx.clock.now()
        limits = limits_of(req, self._ctx.settings)
        row = RunRow(
            id=new_run_id(),
            status="queued",
            image=req.image.strip(),
            command=list(req.command),
            env=dict(req.env),
            secret_env=sealed_with_names(self._ctx.secrets, list(req.secret_env), dict(req.secret_env)),
            node_selector=dict(req.node_selector),
            selector_expressions=list(req.selector_expressions),
            cpu_millis=limits.cpu_millis,
            memory_mb=limits.memory_mb,
            deadline_seconds=limits.deadline_seconds,
            sandbox=limits.sandbox,
            created_at=now,
            updated_at=now,
            enqueued=False,
            last_event_seq=len(CREATION_EVENTS),
        )
        submission = _Submission(row, actor, sorted(req.secret_env))
        if key is None:
            self._submissions.append(submission)
            if self._submitter is None or self._submitter.done():
                self._submitter = asyncio.create_task(self._submit_loop(), name="run-submissions")
            await asyncio.shield(submission.done)
            return run_to_wire(row)
        async with self._ctx.sessionmaker.begin() as session:
            await _write_new_runs(session, [submission])
            await key_repo.add(session, key[0], key[1], row.id, now, self._key_cutoff())
        await self._ctx.publish([row.id])
        return run_to_wire(row)

    async def _submit_loop(self) -> None:
        while self._submissions:
            batch = self._submissions[:SUBMIT_BATCH]
            del self._submissions[:SUBMIT_BATCH]
            try:
                async with self._ctx.sessionmaker.begin() as session:
                    await _write_new_runs(session, batch)
            except Exception as exc:  # every request of the batch answers the error (503 for an outage)
                for submission in batch:
                    submission.done.set_exception(exc)
                continue
            try:
                await self._ctx.publish([submission.row.id for submission in batch])
            except Exception as exc:  # committed, the outbox publishes them; the requests say what failed
                for submission in batch:
                    submission.done.set_exception(exc)
                continue
            for submission in batch:
                submission.done.set_result(None)

    async def list(
        self,
        status: str | None = None,
        node_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> m.RunList:
        check_page(limit, offset)
        statuses = parse_statuses(status)
        async with self._ctx.sessionmaker() as session:
            rows, total = await repo.list_runs(
                session, statuses=statuses, node_id=node_id, limit=limit, offset=offset
            )
        return m.RunList(items=[run_to_wire(row) for row in rows], total=total, limit=limit, offset=offset)

    async def get(self, run_id: str) -> m.Run:
        async with self._ctx.sessionmaker() as session:
            row = await repo.get_run(session, run_id)
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        return run_to_wire(row)

    async def cancel(self, run_id: str, actor: str = "admin") -> m.Run:
        """Queued (or placed but not yet claimed by its node): cancelled at once.
        Claimed or running: `cancel_requested`, handed to the node, which stops the container
        and reports `cancelled`. Already finished: 409."""
        for _ in range(MAX_CANCEL_ATTEMPTS):
            outcome = await self._try_cancel(run_id, actor)
            if outcome is not None:
                return outcome
        raise Conflict(f"run {run_id!r} is changing state concurrently; retry the cancel")

    async def _try_cancel(self, run_id: str, actor: str) -> m.Run | None:
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker.begin() as session:
            row = await repo.get_run(session, run_id, for_update=True)
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            if row.status in TERMINAL_RUN_STATUSES:
                raise Conflict(f"run {run_id} already {row.status}")
            node_id = row.node_id
            not_started = row.status == "queued" or (row.status == "scheduled" and row.claimed_at is None)
            if not_started:
                expect: dict[str, Any] = {"status": row.status, "node_id": node_id, "claimed_at": None}
                values = {
                    "status": "cancelled",
                    "cancel_requested": True,
                    "finished_at": now,
                    "updated_at": now,
                    "message": "cancelled before it started",
                    "reason": "cancelled",
                }
                if not await repo.update_run(session, run_id, expect, values):
                    return None
                if row.status == "scheduled":
                    await repo.recount_running(session, node_id)
                await record_events(
                    session, run_id, [("cancelled", {"reason": "cancelled before it started"})], now
                )
            elif not row.cancel_requested:
                expect = {"status": row.status, "cancel_requested": False}
                if not await repo.update_run(
                    session, run_id, expect, {"cancel_requested": True, "updated_at": now}
                ):
                    return None
                await record_events(session, run_id, [("cancel_requested", {"node_id": node_id})], now)
            else:
                return run_to_wire(row)  # cancel already requested: nothing changes
            await record(session, actor, "run.cancel", "run", run_id, {"status": row.status})
            fresh = await repo.get_run(session, run_id)
        assert fresh is not None
        self._ctx.run_updates.notify(run_id)
        if node_id is not None:
            self._ctx.node_work.notify(node_id)
            if not_started:
                self._ctx.wake_scheduler()
                self._ctx.node_feed.changed(node_id)  # its load
        return run_to_wire(fresh)

    async def events(
        self,
        run_id: str,
        after: int = 0,
        event_type: str | None = None,
        wait: float = 0.0,
        limit: int = DEFAULT_EVENTS_LIMIT,
    ) -> m.RunEventList:
        """Events with seq > `after`. With `wait`, hold the answer until there is at least one
        or the run is finished (at most MAX_EVENTS_WAIT seconds)."""
        check_page(limit, 0)
        if after < 0:
            raise InvalidInput(f"after must be 0 or more, got {after}")
        if wait < 0:
            raise InvalidInput(f"wait must be 0 or more seconds, got {wait:g}")

        async def check() -> tuple[str, list[RunEventRow]]:
            async with self._ctx.sessionmaker() as session:
                row = await repo.get_run(session, run_id)
                if row is None:
                    raise NotFound(f"run {run_id!r} not found")
                # seq never passes last_event_seq: a larger `after` (up to 2^53) needs no query
                rows = (
                    await repo.list_events(session, run_id, after=after, event_type=event_type, limit=limit)
                    if after < row.last_event_seq
                    else []
                )
            return row.status, rows

        status, rows = await long_poll(
            self._ctx.run_updates,
            run_id,
            check,
            lambda found: bool(found[1]) or found[0] in TERMINAL_RUN_STATUSES,
            wait=min(wait, MAX_EVENTS_WAIT),
            recheck=lambda _: EVENTS_RECHECK,
        )
        items = [
            m.RunEvent(seq=e.seq, type=e.type, at=utc(e.at), data=e.data or {})  # type: ignore[arg-type]
            for e in rows
        ]
        return m.RunEventList(items=items, run_id=run_id, status=status)  # type: ignore[arg-type]
