"""Settings read from environment variables, for the apiserver and the nodemanager (pydantic-settings).

Each field names its variable with `validation_alias`; the validators below turn a bad value into
`ConfigError("<VARIABLE> must ..., got '...'")`, which the programs print before exiting with 2.
nodectl never imports this module: pydantic-settings would add to its start-up time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ONE_WEEK = 7 * 86400.0

# set while from_env() reads a given mapping instead of the process environment
_MAPPING_ONLY: ContextVar[bool] = ContextVar("settings_mapping_only", default=False)


class ConfigError(ValueError):
    """An environment variable holds a value the program cannot use."""


def integer(minimum: int, maximum: int) -> BeforeValidator:
    def check(raw: Any) -> int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return BeforeValidator(check)


def seconds(maximum: float = ONE_WEEK, *, allow_zero: bool = False) -> BeforeValidator:
    def check(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number of seconds, got {raw!r}") from None
        low_ok = value >= 0 if allow_zero else value > 0
        if not (low_ok and value <= maximum):  # also refuses nan
            lower = "0" if allow_zero else "0 (exclusive)"
            raise ValueError(f"must be between {lower} and {maximum:g} seconds, got {raw!r}")
        return value

    return BeforeValidator(check)


def per_second(maximum: float) -> BeforeValidator:
    """A rate: a number above 0 and at most `maximum`, per second."""

    def check(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number per second, got {raw!r}") from None
        if not 0 < value <= maximum:  # also refuses nan
            raise ValueError(f"must be above 0 and at most {maximum:g} per second, got {raw!r}")
        return value

    return BeforeValidator(check)


def positive(maximum: float) -> BeforeValidator:
    """A number above 0 and at most `maximum` (a count of CPUs, for instance)."""

    def check(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not 0 < value <= maximum:  # also refuses nan
            raise ValueError(f"must be above 0 and at most {maximum:g}, got {raw!r}")
        return value

    return BeforeValidator(check)


def choice(*choices: str, upper: bool = False) -> BeforeValidator:
    def check(raw: Any) -> str:
        value = str(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return BeforeValidator(check)


def readable_file() -> BeforeValidator:
    def check(raw: Any) -> Path:
        path = Path(str(raw))
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ValueError(f"must name a readable file, got {str(raw)!r}")
        return path

    return BeforeValidator(check)


def ca_file() -> BeforeValidator:
    """A readable PEM file of CA certificates that a TLS client can load (nodeapi.tls)."""

    def check(raw: Any) -> Path:
        from nodeapi.tls import CAFileError, check_ca_file

        path = Path(str(raw))
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ValueError(f"must name a readable PEM file of CA certificates, got {str(raw)!r}")
        try:
            return check_ca_file(path)
        except CAFileError as exc:
            raise ValueError(
                f"must name a PEM file of CA certificates, got {str(raw)!r} ({exc.reason})"
            ) from None

    return BeforeValidator(check)


def checked(rule: Callable[[str], Any]) -> BeforeValidator:
    """A validator from a function that raises ValueError with a message naming the rule."""

    def check(raw: Any) -> Any:
        return rule(str(raw))

    return BeforeValidator(check)


class EnvSettings(BaseSettings):
    """Base of the programs' settings: frozen, read once at start-up, empty variables count as unset."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=True,
        env_ignore_empty=True,
        str_strip_whitespace=True,
        validate_default=False,  # defaults are the program's own, already valid
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,) if _MAPPING_ONLY.get() else (init_settings, env_settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from the process environment, or from `environ` alone; ConfigError if invalid."""
        values: dict[str, str] = {}
        if environ is not None:
            values = {name: value for name, value in environ.items() if value.strip()}
        token = _MAPPING_ONLY.set(environ is not None)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None
        finally:
            _MAPPING_ONLY.reset(token)

    @classmethod
    def variables(cls) -> list[str]:
        """The environment variables these settings read."""
        return [str(field.validation_alias) for field in cls.model_fields.values() if field.validation_alias]


def describe(exc: ValidationError) -> str:
    """The first error, as `VARIABLE must ..., got ...`."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    if not where:
        return message
    if error["type"] != "value_error":  # one of pydantic's own checks
        message = f"{message[:1].lower()}{message[1:]}, got {error.get('input')!r}"
    return f"{where} {message}"
