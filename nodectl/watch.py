"""Polling loops: `--watch` redraws a table in place; non-terminals get only the rows that changed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nodeapi.errors import ApiError
from nodectl import output
from nodectl.output import Cell


@dataclass
class Snapshot:
    """One poll: the table, and per row an (id, fingerprint) that changes only when the object does
    (relative times in the rows change on every poll, so plain output compares fingerprints)."""

    headers: Sequence[str]
    rows: list[list[Cell]]
    keys: list[tuple[str, object]]


@dataclass
class Deadline:
    """A monotonic deadline; None waits forever (until Ctrl-C)."""

    seconds: float | None

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    @property
    def expired(self) -> bool:
        return self.seconds is not None and self.elapsed >= self.seconds

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self, cap: float) -> float:
        if self.seconds is None:
            return cap
        return max(0.0, min(cap, self.seconds - self.elapsed))


def watch_table(
    snapshot: Callable[[], Snapshot],
    interval: float = 2.0,
    timeout: float | None = None,
    no_headers: bool = False,
) -> None:
    """Poll `snapshot` every `interval` seconds until Ctrl-C or `timeout`. Errors after the first
    successful poll are shown and retried: a watch outlives a server restart."""
    deadline = Deadline(timeout)
    first = snapshot()  # the first failure is the command's failure
    try:
        if output.stdout_is_tty():
            _watch_live(snapshot, first, interval, deadline, no_headers)
        else:
            _watch_plain(snapshot, first, interval, deadline, no_headers)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends


def _sleep(deadline: Deadline, interval: float) -> bool:
    """Sleep until the next poll; False when the deadline has passed."""
    pause = deadline.remaining(interval)
    if pause <= 0:
        return False
    time.sleep(pause)
    return not deadline.expired


def _watch_live(
    snapshot: Callable[[], Snapshot], current: Snapshot, interval: float, deadline: Deadline, no_headers: bool
) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def frame(view: Snapshot, problem: str | None) -> Group:
        footer = Text(
            f"every {interval:g}s, {len(view.rows)} item(s), "
            f"updated {time.strftime('%H:%M:%S')} - Ctrl-C to stop",
            style="dim",
        )
        table = output.rich_table(view.headers, view.rows, no_headers)
        return Group(table, footer, Text(problem, style="red")) if problem else Group(table, footer)

    with Live(frame(current, None), console=output.stdout_console(), auto_refresh=False) as live:
        while _sleep(deadline, interval):
            problem = None
            try:
                current = snapshot()
            except ApiError as exc:
                problem = f"{exc} (retrying)"
            live.update(frame(current, problem), refresh=True)


def _watch_plain(
    snapshot: Callable[[], Snapshot], current: Snapshot, interval: float, deadline: Deadline, no_headers: bool
) -> None:
    seen: dict[str, object] = {}

    def emit(view: Snapshot) -> None:
        lines = output.plain_lines(view.headers, view.rows, no_headers=True)
        for (key, fingerprint), line in zip(view.keys, lines, strict=True):
            if key not in seen or seen[key] != fingerprint:
                seen[key] = fingerprint
                sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if not no_headers:
        sys.stdout.write("\t".join(current.headers) + "\n")
    emit(current)
    while _sleep(deadline, interval):
        try:
            current = snapshot()
        except ApiError as exc:  # as in the terminal view: a 503 or a restart is retried, not fatal
            output.warn(f"{exc} (retrying)")
            continue
        emit(current)
