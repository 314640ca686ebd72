"""Human units, parsed in one place: durations (`90s`, `30m`, `1h30m`, `2d`) and memory sizes
(`512M`, `2G`, `1.5Gi`). Memory units are binary, as Docker's are: M, Mi and MB all mean MiB.
Each parser raises ValueError with a message that names the accepted forms."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b?)$", re.IGNORECASE)
_MEMORY_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_duration(text: str) -> int:
    """Whole seconds of `90`, `90s`, `30m`, `1h30m`, `2d`; at least 1."""
    raw = text.strip().lower()
    if raw.isdigit():
        seconds = float(raw)
    else:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(number + unit for number, unit in parts) != raw:
            raise ValueError(f"{text!r} is not a duration; use seconds or e.g. 90s, 30m, 1h30m, 2d")
        seconds = sum(float(number) * _DURATION_SECONDS[unit] for number, unit in parts)
    whole = math.ceil(seconds)
    if whole < 1:
        raise ValueError(f"{text!r}: a duration must be at least 1 second")
    return whole


def parse_memory_mb(text: str) -> int:
    """MiB in `512`, `512M`, `512Mi`, `2G`, `1.5GiB`, `1T` (a bare number is MiB); at least 1."""
    match = _MEMORY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a memory size; use e.g. 512M, 2G, 1.5Gi (binary units)")
    number, unit = match.groups()
    mebibytes = math.ceil(float(number) * _MEMORY_MB[unit.lower()])
    if mebibytes < 1:
        raise ValueError(f"{text!r}: a memory size must be at least 1 MiB")
    return mebibytes


def format_memory_mb(mebibytes: int) -> str:
    """`512Mi`, `2Gi`, `1.5Gi`: the shortest exact-enough binary form."""
    if mebibytes >= 1024 and mebibytes % 1024 == 0:
        return f"{mebibytes // 1024}Gi"
    if mebibytes >= 1024:
        return f"{mebibytes / 1024:.1f}Gi"
    return f"{mebibytes}Mi"


def format_duration(seconds: int) -> str:
    """`45s`, `30m`, `1h30m`, `2d`."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def format_cpus(cpus: float) -> str:
    return f"{cpus:g}"
