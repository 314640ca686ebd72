"""Query/header parameters shared by controllers (pagination, If-Match)."""

from __future__ import annotations

from nodeapi.validation import validate_node_id
from server.errors import InvalidInput, NotFound

MAX_OFFSET = 1_000_000_000


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: 7`, `"7"` or `W/"7"` -> 7 (the node's resource_version)."""
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(f"If-Match must be a resource_version (an integer), got {value[:40]!r}")
    return int(text)


def existing_node_id(node_id: str) -> str:
    """A path id that breaks the node id syntax can name no node: 404 without asking the database
    (PostgreSQL rejects some such strings, e.g. with NUL characters, outright)."""
    try:
        return validate_node_id(node_id)
    except ValueError:
        raise NotFound(f"node {node_id[:300]!r} not found") from None
