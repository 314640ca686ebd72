"""A run's limits with the server's defaults applied, and the one conversion between the wire's
CPUs (a float) and the database's thousandths of a CPU (integers, so sums compare exactly)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from nodeapi import models as m
from server.config import Settings
from server.errors import InvalidInput


def cpu_millis_of_request(cpus: float | None) -> int | None:
    """A run's request rounded up: it gets at least what it asked for."""
    return None if cpus is None else max(1, math.ceil(cpus * 1000 - 1e-6))


def cpu_millis_of_capacity(cpus: float | None) -> int | None:
    """A node's allocatable CPUs rounded down: it never promises more than it has."""
    return None if cpus is None else max(0, math.floor(cpus * 1000 + 1e-6))


def cpus_of(millis: int | None) -> float | None:
    return None if millis is None else millis / 1000


@dataclass(frozen=True)
class RunLimits:
    cpu_millis: int | None
    memory_mb: int | None
    deadline_seconds: int | None
    sandbox: dict[str, Any]


def limits_of(req: m.RunCreate, settings: Settings) -> RunLimits:
    """The create request's limits, each field it leaves out taken from the server's defaults;
    InvalidInput (400) for one past a ceiling."""
    deadline = req.deadline_seconds if req.deadline_seconds is not None else settings.run_default_deadline
    if deadline is not None and deadline > settings.run_max_deadline:
        raise InvalidInput(
            f"deadline_seconds: at most {settings.run_max_deadline} (RUN_MAX_DEADLINE), got {deadline}"
        )
    resources = req.resources or m.Resources()
    cpus = resources.cpus if resources.cpus is not None else settings.run_default_cpus
    memory_mb = resources.memory_mb if resources.memory_mb is not None else settings.run_default_memory_mb
    sandbox = req.sandbox or m.Sandbox()
    pids_limit = sandbox.pids_limit if sandbox.pids_limit is not None else settings.run_default_pids_limit
    if pids_limit > settings.run_max_pids_limit:
        raise InvalidInput(
            f"sandbox.pids_limit: at most {settings.run_max_pids_limit} (RUN_MAX_PIDS_LIMIT), "
            f"got {pids_limit}"
        )
    return RunLimits(
        cpu_millis=cpu_millis_of_request(cpus),
        memory_mb=memory_mb,
        deadline_seconds=deadline,
        sandbox=msgspec.to_builtins(msgspec.structs.replace(sandbox, pids_limit=pids_limit)),
    )


def sandbox_of(stored: dict[str, Any] | None) -> m.Sandbox:
    """The stored sandbox; a run stored before sandboxes existed reads as the defaults."""
    try:
        return msgspec.convert(stored or {}, m.Sandbox)
    except msgspec.ValidationError:
        return m.Sandbox()
