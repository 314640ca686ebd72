"""Everything nodectl writes: tables (rich on a terminal, tab-separated otherwise), JSON, YAML, ids.

Data goes to stdout, messages to stderr. Colour only on a terminal and never with NO_COLOR.
rich and yaml are imported only when a command actually needs them, to keep startup fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class Format(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


# A table cell: plain text, or (text, rich style) for colour on a terminal.
Cell = str | tuple[str, str]

STATUS_STYLES = {
    "online": "green",
    "offline": "red",
    "draining": "yellow",
    "queued": "cyan",
    "scheduled": "blue",
    "running": "bold green",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "lost": "magenta",
}


def status_cell(status: str) -> Cell:
    return (status, STATUS_STYLES.get(status, ""))


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def color_enabled(stream: Any) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, no_color=not color_enabled(sys.stdout), soft_wrap=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, no_color=not color_enabled(sys.stderr))


# --------------------------------------------------------------------------- messages (stderr)


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    prefix = "\x1b[31merror:\x1b[0m" if color_enabled(sys.stderr) else "error:"
    print(f"{prefix} {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data (stdout)


def to_data(value: Any) -> Any:
    """msgspec structs (and lists of them) as plain JSON-able values; datetimes as ISO 8601."""
    import msgspec

    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    # msgspec encodes structs directly and is ~20x faster than json.dumps(indent=2) on 10,000 nodes
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def print_yaml(value: Any) -> None:
    import yaml

    sys.stdout.write(
        yaml.safe_dump(to_data(value), sort_keys=False, allow_unicode=True, default_flow_style=False)
    )


def print_data(value: Any, fmt: Format) -> bool:
    """Print as JSON or YAML when asked; False for table formats (the caller draws the table)."""
    if fmt is Format.json:
        print_json(value)
        return True
    if fmt is Format.yaml:
        print_yaml(value)
        return True
    return False


def print_ids(ids: Iterable[str]) -> None:
    for item in ids:
        sys.stdout.write(f"{item}\n")
    sys.stdout.flush()  # `nodectl runs submit --wait ... | read id` gets the id before the run ends


def _text(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else cell


def _plain(cell: Cell) -> str:
    # one record per line and one field per tab, whatever the value holds
    return _text(cell).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def plain_lines(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], no_headers: bool = False
) -> list[str]:
    lines = [] if no_headers else ["\t".join(headers)]
    lines.extend("\t".join(_plain(cell) for cell in row) for row in rows)
    return lines


def rich_table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], no_headers: bool = False) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_header=not no_headers, header_style="bold", pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(
            *(Text(cell[0], style=cell[1]) if isinstance(cell, tuple) else Text(cell) for cell in row)
        )
    return table


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], no_headers: bool = False) -> None:
    if stdout_is_tty():
        stdout_console().print(rich_table(headers, rows, no_headers))
    else:
        lines = plain_lines(headers, rows, no_headers)
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")


def print_fields(pairs: Sequence[tuple[str, Cell]]) -> None:
    """A detail view: `Key:  value` lines, aligned."""
    width = max((len(key) for key, _ in pairs), default=0) + 2
    if stdout_is_tty():
        from rich.text import Text

        console = stdout_console()
        for key, cell in pairs:
            line = Text(f"{key + ':':<{width}}", style="bold")
            line.append(cell[0], style=cell[1]) if isinstance(cell, tuple) else line.append(cell)
            console.print(line)
    else:
        for key, cell in pairs:
            sys.stdout.write(f"{key + ':':<{width}}{_text(cell)}\n")


# --------------------------------------------------------------------------- value formatting


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago'; '-' for never."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def iso(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
