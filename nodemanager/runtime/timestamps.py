"""Log line timestamps: RFC 3339 UTC with exactly nine fraction digits.

Docker trims trailing zeros of its nanosecond timestamps, so its strings do not sort; both
runtimes hand out this fixed-width form, which sorts as text, and compare by integer ns.
"""

from __future__ import annotations

import calendar
import re
import time

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


def format_ns(epoch_ns: int) -> str:
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def parse_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch; raises ValueError on anything but RFC 3339."""
    match = _RFC3339.fullmatch(timestamp.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {timestamp!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))
