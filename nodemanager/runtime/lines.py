"""Turning raw output chunks into LogLines: partial lines, long lines, non-UTF-8 bytes."""

from __future__ import annotations

from nodemanager.runtime.base import LogLine

MAX_LINE_BYTES = 64 * 1024  # a longer line without a newline is handed on in pieces


def decode_line(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class LineAssembler:
    """Joins pieces of one stream into whole lines.

    A line gets the timestamp of the piece that completes it: lines of the other stream
    handed out meanwhile then never carry a later stamp, so resuming after a stamp skips
    nothing.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._pending = b""
        self._last_ts: str | None = None

    def feed(self, data: bytes, ts: str | None) -> list[LogLine]:
        lines: list[LogLine] = []
        self._last_ts = ts
        self._pending += data
        while (newline := self._pending.find(b"\n")) >= 0:
            lines.append(LogLine(self.stream, decode_line(self._pending[:newline]), ts))
            self._pending = self._pending[newline + 1 :]
        if len(self._pending) >= MAX_LINE_BYTES:
            lines.extend(self.flush())
        return lines

    def flush(self) -> list[LogLine]:
        """The unterminated rest, as a line of its own (at the end of the stream)."""
        if not self._pending:
            return []
        line = LogLine(self.stream, decode_line(self._pending), self._last_ts)
        self._pending = b""
        return [line]
