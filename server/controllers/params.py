"""Path, query and header parameters shared by controllers (ids, pagination, If-Match).

Every id in a path follows one syntax (nodeapi.validation), stated in the OpenAPI schema as a
`pattern` and checked before the handler runs: a path id that breaks it answers 400.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from nodeapi.validation import (
    MAX_SAFE_INT,
    NODE_ID_MAX_LENGTH,
    NODE_ID_PATTERN,
    RUN_ID_MAX_LENGTH,
    RUN_ID_PATTERN,
    validate_node_id,
    validate_run_id,
)
from server.errors import InvalidInput

MAX_OFFSET = 1_000_000_000

NodeId = Annotated[
    str,
    Parameter(
        description="node id: 1-253 characters, a letter or digit, then letters, digits, '.', '_' or '-'",
        min_length=1,
        max_length=NODE_ID_MAX_LENGTH,
        pattern=NODE_ID_PATTERN,
    ),
]
RunId = Annotated[
    str,
    Parameter(
        description="run id (run-<hex>): 1-64 characters, a letter or digit, "
        "then letters, digits, '.', '_' or '-'",
        min_length=1,
        max_length=RUN_ID_MAX_LENGTH,
        pattern=RUN_ID_PATTERN,
    ),
]
NodeIdFilter = Annotated[
    str | None,
    Parameter(
        description="only runs placed on this node", max_length=NODE_ID_MAX_LENGTH, pattern=NODE_ID_PATTERN
    ),
]
CommandId = Annotated[
    str,
    Parameter(description="command id (cmd-<hex>)", min_length=1, max_length=64, pattern=RUN_ID_PATTERN),
]
Offset = Annotated[int, Parameter(ge=0, le=MAX_OFFSET)]
EventSeq = Annotated[int, Parameter(ge=0, le=MAX_SAFE_INT, description="only events with a greater seq")]


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: 7`, `"7"` or `W/"7"` -> 7 (the node's resource_version)."""
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 16 or int(text) > MAX_SAFE_INT:
        raise InvalidInput(f"If-Match must be a resource_version (an integer), got {value[:40]!r}")
    return int(text)


def existing_node_id(node_id: str) -> str:
    """The path's node id, checked in full (the schema's pattern lets a trailing newline through)."""
    try:
        return validate_node_id(node_id)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def existing_run_id(run_id: str) -> str:
    try:
        return validate_run_id(run_id)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def existing_command_id(command_id: str) -> str:
    """Command ids (cmd-<hex>) follow the run id syntax."""
    try:
        return validate_run_id(command_id, "command_id")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
