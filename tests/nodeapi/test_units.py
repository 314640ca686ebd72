"""Human units parsed once, for nodectl and anyone else: durations and memory sizes."""

from __future__ import annotations

import pytest

from nodeapi.units import format_duration, format_memory_mb, parse_duration, parse_memory_mb


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45", 45), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), ("0.2s", 1)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "1h 30m", "-5", "m30", "0", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "mebibytes"),
    [
        ("512", 512),
        ("512M", 512),
        ("512Mi", 512),
        ("512MB", 512),
        ("512m", 512),
        ("2G", 2048),
        ("1.5Gi", 1536),
        ("1T", 1048576),
        ("2048K", 2),
        ("1k", 1),
    ],
)
def test_memory_sizes_are_binary(text: str, mebibytes: int) -> None:
    assert parse_memory_mb(text) == mebibytes


@pytest.mark.parametrize("text", ["", "lots", "5X", "-1G", "0", "0M"])
def test_bad_memory_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory_mb(text)


def test_formats_read_back() -> None:
    assert [format_duration(s) for s in (45, 1800, 5400, 172800, 90061)] == [
        "45s",
        "30m",
        "1h30m",
        "2d",
        "1d1h1m1s",
    ]
    assert [format_memory_mb(v) for v in (512, 1024, 1536, 16384)] == ["512Mi", "1Gi", "1.5Gi", "16Gi"]
    assert parse_memory_mb(format_memory_mb(1536)) == 1536
