"""How each resource looks in tables and detail views (columns, colours, masking)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nodeapi.units import format_cpus, format_duration, format_memory_mb
from nodectl.output import Cell, ago, iso, labels_text, status_cell

if TYPE_CHECKING:
    from nodeapi import models as m

NODE_HEADERS = ["ID", "STATUS", "LOAD", "HEARTBEAT", "AGE"]
# new columns go last: scripts read the earlier ones by position
NODE_WIDE_HEADERS = [
    *NODE_HEADERS,
    *("LABELS", "HOSTNAME", "OS/ARCH", "RUNTIME", "VERSION", "CONDITIONS", "CPU", "MEMORY"),
]
RUN_HEADERS = ["ID", "STATUS", "IMAGE", "NODE", "EXIT", "AGE"]
RUN_WIDE_HEADERS = [*RUN_HEADERS, "COMMAND", "SELECTOR", "MESSAGE", "REASON"]
EVENT_HEADERS = ["SEQ", "TYPE", "AT", "DATA"]
AUDIT_HEADERS = ["ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAILS"]


def load_cell(node: m.Node) -> Cell:
    text = f"{node.running}/{node.capacity.max_concurrent}"
    full = node.running >= node.capacity.max_concurrent
    return (text, "bold red" if full else "")


def node_status_cell(node: m.Node) -> Cell:
    """The status, marked like kubectl's `Ready,SchedulingDisabled` when an online node is held
    back (a condition fails, or it is quarantined)."""
    if node.status == "online" and not node.schedulable:
        return ("online,unschedulable", "yellow")
    return status_cell(node.status)


def failing_conditions(node: m.Node) -> str:
    return ",".join(c.type for c in node.conditions if not c.ok) or ("ok" if node.conditions else "-")


def cpu_usage(node: m.Node) -> str:
    """Requested of allocatable, e.g. `1.5/4`; `-` of a node that reports no CPUs."""
    if node.capacity.cpus is None:
        return f"{format_cpus(node.requested.cpus)}/-" if node.requested.cpus else "-"
    return f"{format_cpus(node.requested.cpus)}/{format_cpus(node.capacity.cpus)}"


def memory_usage(node: m.Node) -> str:
    """Requested of allocatable, e.g. `2Gi/16Gi`."""
    requested = format_memory_mb(node.requested.memory_mb) if node.requested.memory_mb else "0"
    if node.capacity.memory_mb is None:
        return f"{requested}/-" if node.requested.memory_mb else "-"
    return f"{requested}/{format_memory_mb(node.capacity.memory_mb)}"


def node_row(node: m.Node, wide: bool = False, now: datetime | None = None) -> list[Cell]:
    now = now or datetime.now(UTC)
    row: list[Cell] = [
        node.id,
        node_status_cell(node),
        load_cell(node),
        ago(node.last_heartbeat_at, now),
        ago(node.created_at, now).removesuffix(" ago"),
    ]
    if wide:
        info = node.info
        os_arch = "/".join(part for part in (info.os, info.arch) if part) or "-"
        runtime = " ".join(part for part in (info.runtime, info.runtime_version) if part) or "-"
        row += [
            labels_text(node.labels),
            info.hostname or "-",
            os_arch,
            runtime,
            info.agent_version or "-",
            failing_conditions(node),
            cpu_usage(node),
            memory_usage(node),
        ]
    return row


def node_fields(node: m.Node) -> list[tuple[str, Cell]]:
    info = node.info
    fields: list[tuple[str, Cell]] = [
        ("ID", node.id),
        ("Status", node_status_cell(node)),
        ("Draining", "yes" if node.draining else "no"),
        ("Schedulable", ("yes", "green") if node.schedulable else ("no", "yellow")),
        ("Load", load_cell(node)),
        ("Labels", labels_text(node.labels)),
        ("Last heartbeat", f"{iso(node.last_heartbeat_at)} ({ago(node.last_heartbeat_at)})"),
        ("Created", iso(node.created_at)),
        ("Hostname", info.hostname or "-"),
        ("OS/Arch", "/".join(p for p in (info.os, info.arch) if p) or "-"),
        ("Runtime", " ".join(p for p in (info.runtime, info.runtime_version) if p) or "-"),
        ("Agent", info.agent_version or "-"),
        ("CPUs (requested/allocatable)", cpu_usage(node)),
        ("Memory (requested/allocatable)", memory_usage(node)),
        ("Memory enforced by", info.memory_enforcement or "-"),
        ("Resource version", str(node.resource_version)),
    ]
    for condition in node.conditions:
        mark = ("ok", "green") if condition.ok else ("failing", "red")
        since = f", since {iso(condition.since)}" if condition.since is not None else ""
        text = f"{mark[0]}{since}: {condition.message}" if condition.message else f"{mark[0]}{since}"
        fields.append((f"Condition {condition.type}", (text, mark[1])))
    if node.last_proxy_test is not None:
        test = node.last_proxy_test
        verdict = ("ok", "green") if test.ok else (f"failed ({test.reason})", "red")
        fields.append(("Last proxy test", (f"{verdict[0]} at {iso(test.tested_at)}", verdict[1])))
    return fields


def run_row(run: m.Run, wide: bool = False, now: datetime | None = None) -> list[Cell]:
    now = now or datetime.now(UTC)
    row: list[Cell] = [
        run.id,
        status_cell(run.status),
        run.image,
        run.node_id or "-",
        "-" if run.exit_code is None else str(run.exit_code),
        ago(run.created_at, now).removesuffix(" ago"),
    ]
    if wide:
        selector = [labels_text(run.node_selector)] if run.node_selector else []
        row += [
            " ".join(run.command) or "-",
            ",".join(selector + run.selector_expressions) or "-",
            run.message or "-",
            run.reason or "-",
        ]
    return row


def run_fields(run: m.Run) -> list[tuple[str, Cell]]:
    return [
        ("ID", run.id),
        ("Status", status_cell(run.status)),
        ("Image", run.image),
        ("Command", " ".join(run.command) or "-"),
        ("Node", run.node_id or "-"),
        ("Exit code", "-" if run.exit_code is None else str(run.exit_code)),
        ("Selector", labels_text(run.node_selector)),
        ("Expressions", ", ".join(run.selector_expressions) or "-"),
        ("Env", ", ".join(f"{k}={v}" for k, v in sorted(run.env.items())) or "-"),
        ("Secret env", ", ".join(f"{k}={v}" for k, v in sorted(run.secret_env.items())) or "-"),
        ("Attempts", str(run.attempts)),
        ("Created", iso(run.created_at)),
        ("Started", iso(run.started_at)),
        ("Finished", iso(run.finished_at)),
        ("Reason", run.reason or "-"),
        ("Message", run.message or "-"),
        ("Deadline", format_duration(run.deadline_seconds) if run.deadline_seconds else "none"),
        ("Resources", resources_text(run.resources)),
        ("Sandbox", sandbox_text(run.sandbox)),
    ]


def resources_text(resources: m.Resources) -> str:
    parts = []
    if resources.cpus is not None:
        parts.append(f"cpus={format_cpus(resources.cpus)}")
    if resources.memory_mb is not None:
        parts.append(f"memory={format_memory_mb(resources.memory_mb)}")
    return ", ".join(parts) or "none requested"


def sandbox_text(sandbox: m.Sandbox) -> str:
    parts = [f"network={sandbox.network}"]
    if sandbox.read_only_rootfs:
        parts.append("read-only rootfs")
    if sandbox.pids_limit is not None:
        parts.append(f"pids<={sandbox.pids_limit}")
    return ", ".join(parts)


def event_summary(event: m.RunEvent) -> str:
    if event.type == "log":
        return f"[{event.data.get('stream', 'stdout')}] {str(event.data.get('text', '')).rstrip()}"
    import json

    return json.dumps(event.data, separators=(",", ":"), sort_keys=True) if event.data else "-"


def event_row(event: m.RunEvent) -> list[Cell]:
    return [str(event.seq), event.type, iso(event.at), event_summary(event)]


def audit_row(entry: m.AuditEntry) -> list[Cell]:
    import json

    details = json.dumps(entry.details, separators=(",", ":"), sort_keys=True) if entry.details else "-"
    return [
        str(entry.id),
        iso(entry.at),
        entry.actor,
        entry.action,
        f"{entry.target_type}/{entry.target_id}",
        details,
    ]


def env_fields(data: dict[str, Any]) -> list[tuple[str, Cell]]:
    proxy = data.get("proxy") or {}
    fields: list[tuple[str, Cell]] = [
        ("HTTP proxy", proxy.get("http_proxy") or "-"),
        ("HTTPS proxy", proxy.get("https_proxy") or "-"),
        ("No proxy", proxy.get("no_proxy") or "-"),
    ]
    env = data.get("env") or {}
    fields.append(("Env", "-" if not env else f"{len(env)} variable(s)"))
    fields += [(f"  {name}", value) for name, value in sorted(env.items())]
    secret_env = data.get("secret_env") or {}
    fields.append(("Secret env", "-" if not secret_env else f"{len(secret_env)} variable(s)"))
    fields += [(f"  {name}", value) for name, value in sorted(secret_env.items())]
    if data.get("resource_version") is not None:
        fields.append(("Resource version", str(data["resource_version"])))
    return fields
