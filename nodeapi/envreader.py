"""Reading typed settings from environment variables, for the apiserver and the nodemanager.

Every bad value raises `ConfigError` with a message that names the variable and the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

_C = TypeVar("_C", bound=str)

ONE_WEEK = 7 * 86400.0


class ConfigError(ValueError):
    """An environment variable holds a value the program cannot use."""


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def seconds(
        self, name: str, default: float, *, maximum: float = ONE_WEEK, allow_zero: bool = False
    ) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
        low_ok = value >= 0 if allow_zero else value > 0
        if not (low_ok and value <= maximum):  # also refuses nan
            lower = "0" if allow_zero else "0 (exclusive)"
            raise ConfigError(f"{name} must be between {lower} and {maximum:g} seconds, got {raw!r}")
        return value

    def choice(self, name: str, choices: tuple[_C, ...], default: _C) -> _C:
        raw = (self.text(name) or default).lower()
        for choice in choices:
            if raw == choice:
                return choice
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")

    def readable_file(self, name: str) -> Path | None:
        raw = self.text(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"{name} must name a readable file, got {raw!r}")
        return path
