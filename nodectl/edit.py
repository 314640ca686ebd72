"""`nodes edit` and `env edit`: open a YAML document in $VISUAL/$EDITOR, apply what changed.

The resource_version read before editing goes back with the change, so an edit made while
someone else changed the object is refused by the server (409) instead of overwriting theirs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nodectl.errors import EXIT_CONFLICT, CliError, UsageError

CANCELLED = "Edit cancelled, no changes made."


class Unchanged(Exception):
    """The user saved the document without changing it (or emptied it)."""


def editor_command() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        return shlex.split(editor)
    except ValueError as exc:
        raise UsageError(f"cannot parse the editor command {editor!r}: {exc}") from exc


def run_editor(text: str, name: str) -> str:
    """The document after the user edited it in a temporary file."""
    fd, raw_path = tempfile.mkstemp(prefix=f"nodectl-{name}-", suffix=".yaml")
    path = Path(raw_path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        command = [*editor_command(), str(path)]
        try:
            result = subprocess.run(command, check=False)
        except FileNotFoundError as exc:
            raise UsageError(f"editor {command[0]!r} not found; set VISUAL or EDITOR") from exc
        if result.returncode != 0:
            raise CliError(f"editor exited with status {result.returncode}; no changes made")
        return path.read_text(encoding="utf-8")
    finally:
        path.unlink(missing_ok=True)


def load_document(text: str, original: str) -> dict[str, Any]:
    import yaml

    if text == original or not _without_comments(text).strip():
        raise Unchanged
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"the edited document is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError("the edited document must be a YAML mapping")
    return data


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def dump(data: dict[str, Any], header: str) -> str:
    import yaml

    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def string_map(value: Any, field: str) -> dict[str, str]:
    """A YAML mapping of strings; numbers/bools are taken as their text (`gpu: true` -> 'true')."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{field} must be a mapping of names to values")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, (dict, list)):
            raise UsageError(f"{field}.{key} must be a plain value, not a {type(item).__name__}")
        if item is None:
            out[str(key)] = ""
        elif isinstance(item, bool):
            out[str(key)] = "true" if item else "false"
        else:
            out[str(key)] = str(item)
    return out


def stale_edit(kind: str, node_id: str, detail: str) -> CliError:
    return CliError(
        f"{kind} of node {node_id} was changed by someone else while you were editing ({detail}); "
        f"your edit was not applied. Run `nodectl {'nodes' if kind == 'node' else 'env'} edit {node_id}` "
        "again to edit the current version.",
        EXIT_CONFLICT,
    )
