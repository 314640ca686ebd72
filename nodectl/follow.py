"""Reading a run's events: page through them, or follow them live with the events long-poll."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from nodectl.errors import WaitTimeout
from nodectl.watch import Deadline

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session

LONG_POLL = 20.0
MIN_POLL_GAP = 0.5  # if the server answers a long-poll at once with nothing, do not spin


def write_log(event: m.RunEvent) -> None:
    """A log event's text to our stdout or stderr, like the container wrote it."""
    stream = sys.stderr if event.data.get("stream") == "stderr" else sys.stdout
    text = str(event.data.get("text", ""))
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def all_events(sess: Session, run_id: str, type: str | None = None) -> Iterator[m.RunEvent]:
    """Every stored event once, in order, without waiting for new ones."""
    from nodeapi.client import Calls

    after = 0
    for _ in range(1_000_000):
        page = sess.send(Calls.run_events(run_id, after=after, type=type))
        if not page.items:
            return
        for event in page.items:
            after = max(after, event.seq)
            yield event


def follow(
    sess: Session,
    run_id: str,
    on_event: Callable[[m.RunEvent], None],
    timeout: float | None = None,
    type: str | None = None,
) -> str:
    """Hand every event (old and new) to on_event until the run is terminal; the final status.

    WaitTimeout when `timeout` seconds pass first (the run keeps going)."""
    from nodeapi.client import Calls
    from nodeapi.models import TERMINAL_RUN_STATUSES

    clock = Deadline(timeout)
    after = 0
    terminal = False
    while True:
        wait = None if terminal else clock.remaining(LONG_POLL)
        if wait is not None and wait <= 0:
            raise WaitTimeout(f"run/{run_id} is not finished after {clock.seconds:g}s (it keeps running)")
        started = time.monotonic()
        page = sess.send(Calls.run_events(run_id, after=after, type=type, wait=wait))
        for event in page.items:
            after = max(after, event.seq)
            on_event(event)
        if page.status in TERMINAL_RUN_STATUSES:
            if terminal and not page.items:
                return page.status
            terminal = True  # one more read without waiting drains what arrived meanwhile
            continue
        if not page.items and time.monotonic() - started < MIN_POLL_GAP:
            time.sleep(clock.remaining(MIN_POLL_GAP))
