"""Query/header parameters shared by controllers (pagination, If-Match)."""

from __future__ import annotations

from server.errors import InvalidInput

MAX_OFFSET = 1_000_000_000


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: 7`, `"7"` or `W/"7"` -> 7 (the node's resource_version)."""
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(f"If-Match must be a resource_version (an integer), got {value[:40]!r}")
    return int(text)
