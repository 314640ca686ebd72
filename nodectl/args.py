"""Parsing of command-line values (k=v pairs, label changes) with nodeapi's validation rules."""

from __future__ import annotations

from collections.abc import Iterable

from nodeapi import validation
from nodeapi.masking import MASK, has_masked_password
from nodectl.errors import UsageError


def parse_env_pairs(values: Iterable[str], option: str = "--env") -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"{option} {item!r} must look like NAME=value")
        try:
            validation.validate_env_name(name, option)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        env[name] = value
    return env


def parse_selector_pairs(values: Iterable[str], option: str = "--selector") -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in values:
        try:
            selector.update(validation.parse_selector(item, option))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return selector


def parse_label_changes(values: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """kubectl style: `k=v` sets, `k-` removes. Returns (to set, to remove)."""
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    for item in values:
        try:
            if "=" in item:
                key, _, value = item.partition("=")
                validation.validate_label_key(key, "label")
                validation.validate_label_value(key, value, "label")
                to_set[key] = value
            elif item.endswith("-") and len(item) > 1:
                key = item[:-1]
                validation.validate_label_key(key, "label")
                to_remove.append(key)
            else:
                raise UsageError(f"label change {item!r} must be key=value (set) or key- (remove)")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    both = set(to_set) & set(to_remove)
    if both:
        raise UsageError(f"label {sorted(both)[0]!r} is both set and removed")
    return to_set, to_remove


def check_proxy_url(url: str, option: str) -> str | None:
    """Empty string clears the setting."""
    if url == "":
        return None
    try:
        if has_masked_password(url):  # `***` keeps the stored password (env edit)
            return validation.validate_proxy_url(url.replace(MASK, "x", 1), option) and url
        return validation.validate_proxy_url(url, option)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
