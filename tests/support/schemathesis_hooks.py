"""schemathesis hooks for tests/server/test_schemathesis.py (loaded by the `st` CLI through
SCHEMATHESIS_HOOKS; never imported by the test suite itself).

The API's long-polls (`wait` on the work channel, run events and the proxy test) may hold a
request up to a minute by design. The fuzzer keeps every generated `wait` it likes, except that
a valid one above MAX_FUZZ_WAIT seconds is lowered to it, so a run stays within its time bound.
Values outside the documented range (negative, too large, not numbers) go out unchanged.
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_FUZZ_WAIT = 0.3
DOCUMENTED_MAX_WAIT = 60.0


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    query = case.query
    if not isinstance(query, dict):
        return
    wait = query.get("wait")
    if isinstance(wait, bool) or not isinstance(wait, int | float | str):
        return
    try:
        seconds = float(wait)  # some phases send parameters as the strings they serialise to
    except ValueError:
        return
    if MAX_FUZZ_WAIT < seconds <= DOCUMENTED_MAX_WAIT:
        query["wait"] = str(MAX_FUZZ_WAIT) if isinstance(wait, str) else MAX_FUZZ_WAIT
