"""Turning raw output chunks into LogLines: partial lines, long lines, non-UTF-8 bytes."""

from __future__ import annotations

from nodemanager.runtime.base import LogLine

MAX_LINE_BYTES = 64 * 1024  # a longer line without a newline is handed on in pieces


def decode_line(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class LineAssembler:
    """Joins pieces of one stream into whole lines; each line keeps the timestamp of its first piece."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._pending = b""
        self._pending_ts: str | None = None

    def feed(self, data: bytes, ts: str | None) -> list[LogLine]:
        lines: list[LogLine] = []
        if not self._pending:
            self._pending_ts = ts
        self._pending += data
        while True:
            newline = self._pending.find(b"\n")
            if newline < 0:
                break
            lines.append(LogLine(self.stream, decode_line(self._pending[:newline]), self._pending_ts))
            self._pending = self._pending[newline + 1 :]
            self._pending_ts = ts
        if len(self._pending) >= MAX_LINE_BYTES:
            lines.extend(self.flush())
        return lines

    def flush(self) -> list[LogLine]:
        """The unterminated rest, as a line of its own (at the end of the stream)."""
        if not self._pending:
            return []
        line = LogLine(self.stream, decode_line(self._pending), self._pending_ts)
        self._pending = b""
        return [line]
