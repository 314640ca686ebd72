"""The node work channel: GET /api/v1/nodes/{id}/work?wait=S (long-poll).

Answers at once when the node has something new: runs placed on it and not started yet
(each with the node's current env config, read at answer time, so a PUT that answered
before applies to every container started from this answer on), runs to cancel, and
pending commands (marked delivered). Otherwise it waits for an in-process wake-up
(scheduler assignment, cancel, new command) or re-reads the database every
WORK_RECHECK_* seconds, which is how work placed by another apiserver replica arrives.

Runs not started yet (claimed or not) and pending cancels stay in every answer until the
node reports them started or cancelled, so a node that restarts loses nothing, not even a
run it claimed just before crashing; nodes ignore assignments they already hold. To keep a
node from spinning while its claim or start is in flight, an item only counts as *new*
(answer at once) if this process has not handed it to the node within the last
REDELIVER_AFTER seconds.
"""

from __future__ import annotations

import time
from typing import Any

from nodeapi import models as m
from server.errors import InvalidInput, NotFound
from server.repositories import commands as command_repo
from server.repositories import env_config as env_repo
from server.repositories import nodes as node_repo
from server.repositories import runs as run_repo
from server.secrets import SecretBox
from server.services.commands import unsealed_payload
from server.services.context import ServiceContext
from server.services.env_config import env_config_view
from server.services.longpoll import long_poll
from server.services.mappers import run_to_wire

MAX_WORK_WAIT = 60.0
# Every waiting node re-reads the database this often: a safety net only, since assignments made
# on any replica wake the waiter through the wake bus (server.wake) at once; with replicas it
# covers a wake-up the bus lost, so an idle fleet costs the database almost nothing either way.
WORK_RECHECK_REPLICATED = 5.0
WORK_RECHECK_SINGLE = 10.0
REDELIVER_AFTER = 2.0


class WorkService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        # (node id, "run:<id>" | "cancel:<id>") -> monotonic time of the last answer carrying it
        self._handed_out: dict[str, dict[str, float]] = {}
        self._recheck = WORK_RECHECK_REPLICATED if ctx.settings.redis_url else WORK_RECHECK_SINGLE

    async def poll(self, node_id: str, wait: float) -> m.WorkResponse:
        if wait < 0:
            raise InvalidInput(f"wait must be 0 or more seconds, got {wait:g}")

        def ready(work: m.WorkResponse) -> bool:
            return self._has_new(node_id, _item_keys(work))

        def recheck(work: m.WorkResponse) -> float:
            # items already handed out come due again after REDELIVER_AFTER; idle nodes wait longer
            return min(self._recheck, REDELIVER_AFTER) if _item_keys(work) else self._recheck

        work = await long_poll(
            self._ctx.node_work,
            node_id,
            lambda: self._collect(node_id),
            ready,
            wait=min(wait, MAX_WORK_WAIT),
            recheck=recheck,
        )
        self._remember(node_id, _item_keys(work))
        return work

    async def _collect(self, node_id: str) -> m.WorkResponse:
        now = self._ctx.clock.now()
        async with self._ctx.sessionmaker.begin() as session:
            node = await node_repo.get_node(session, node_id)
            if node is None:
                raise NotFound(f"node {node_id!r} not found; it registers with its first heartbeat")
            runs = await run_repo.pending_assignments(session, node_id)
            # this node's own channel: its secrets in clear, so it can inject them
            box = self._ctx.secrets
            env_config = (
                env_config_view(await env_repo.get(session, node_id), box, reveal=True)
                if runs
                else m.EnvConfig()
            )
            cancel_runs = await run_repo.cancel_requested_ids(session, node_id)
            running = await run_repo.running_ids(session, node_id)
            commands = await command_repo.deliverable(session, node_id, now)
        return m.WorkResponse(
            assignments=[m.Assignment(run=_revealed(row, box), env_config=env_config) for row in runs],
            cancel_runs=cancel_runs,
            commands=[
                m.NodeCommand(id=c.id, type=c.type, payload=unsealed_payload(c.payload or {}, box))
                for c in commands
            ],
            draining=bool(node.draining),
            running_runs=running,
        )

    def _has_new(self, node_id: str, keys: list[str]) -> bool:
        handed_out = self._handed_out.get(node_id, {})
        stale_before = time.monotonic() - REDELIVER_AFTER
        return any(handed_out.get(key, 0.0) < stale_before for key in keys)

    def _remember(self, node_id: str, keys: list[str]) -> None:
        if not keys:
            self._handed_out.pop(node_id, None)
            return
        previous = self._handed_out.get(node_id, {})
        now = time.monotonic()
        stale_before = now - REDELIVER_AFTER
        # forget what is no longer pending; refresh the time of what was (re)handed out
        self._handed_out[node_id] = {
            key: (now if previous.get(key, 0.0) < stale_before else previous[key]) for key in keys
        }


def _revealed(row: Any, box: SecretBox) -> m.Run:
    run = run_to_wire(row)
    run.secret_env = dict(box.open((row.secret_env or {}).get("sealed")))
    return run


def _item_keys(work: m.WorkResponse) -> list[str]:
    return (
        [f"run:{a.run.id}" for a in work.assignments]
        + [f"cancel:{run_id}" for run_id in work.cancel_runs]
        + [f"command:{command.id}" for command in work.commands]
    )
