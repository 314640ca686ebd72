"""Node selectors: the equality map `node_selector` plus Kubernetes-style set-based expressions.

Expression forms (one requirement per string; commas outside parentheses also separate
requirements, so "a=b,c in (x,y)" works too):

    key in (v1,v2)   key notin (v1,v2)   key   !key   key=v   key==v   key!=v

As in Kubernetes, `notin` and `!=` also match nodes that lack the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from nodeapi import validation

_SET_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s=()!,]*)$")
_EXISTS_RE = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=()]+)$")

Signature = tuple[tuple[str, str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        if self.op in ("!=", "notin"):
            return value is None or value not in self.values
        return (value is not None) == (self.op == "exists")

    def describe(self) -> str:
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{next(iter(self.values))}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return self.key if self.op == "exists" else f"!{self.key}"

    @property
    def sort_key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.key, self.op, tuple(sorted(self.values)))


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements; the empty selector matches every node."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def describe(self) -> str:
        return ",".join(requirement.describe() for requirement in self.requirements)

    @property
    def signature(self) -> Signature:
        """Equal for selectors that match the same nodes by construction (order-insensitive)."""
        return tuple(requirement.sort_key for requirement in self.requirements)


def compile_selector(node_selector: Mapping[str, str] | None, expressions: Iterable[str] = ()) -> Selector:
    """Parse and validate; raises ValueError with a message naming the bad part."""
    return _compile(tuple(sorted((node_selector or {}).items())), tuple(expressions))


@lru_cache(maxsize=4096)
def _compile(pairs: tuple[tuple[str, str], ...], expressions: tuple[str, ...]) -> Selector:
    requirements: dict[tuple[str, str, tuple[str, ...]], Requirement] = {}
    for key, value in pairs:
        _check_key(key, "node_selector")
        _check_value(value, key)
        requirement = Requirement(key, "=", frozenset({value}))
        requirements[requirement.sort_key] = requirement
    for expression in expressions:
        if not isinstance(expression, str):
            raise ValueError(f"selector expression {expression!r} is not a string")
        for part in _split_top_level(expression):
            requirement = parse_requirement(part)
            requirements[requirement.sort_key] = requirement
    return Selector(tuple(requirements[key] for key in sorted(requirements)))


def parse_requirement(text: str) -> Requirement:
    text = text.strip()
    if not text:
        raise ValueError("empty selector expression")
    if match := _SET_RE.match(text):
        key, op = match["key"], match["op"]
        values = [value.strip() for value in match["values"].split(",")]
        if values == [""]:
            raise ValueError(f"{text!r}: '{op}' needs at least one value inside the parentheses")
        _check_key(key, text)
        for value in values:
            _check_value(value, key)
        return Requirement(key, op, frozenset(values))
    if match := _EQ_RE.match(text):
        key, value = match["key"], match["value"]
        _check_key(key, text)
        _check_value(value, key)
        return Requirement(key, "!=" if match["op"] == "!=" else "=", frozenset({value}))
    if match := _EXISTS_RE.match(text):
        _check_key(match["key"], text)
        return Requirement(match["key"], "!exists" if match["neg"] else "exists", frozenset())
    raise ValueError(
        f"cannot parse selector expression {text!r}: expected 'key in (a,b)', 'key notin (a,b)', "
        "'key', '!key', 'key=value' or 'key!=value'"
    )


def _split_top_level(expression: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in expression:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in selector expression {expression!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"unbalanced '(' in selector expression {expression!r}")
    parts.append("".join(current))
    if len(parts) > 1 and any(not part.strip() for part in parts):
        raise ValueError(f"empty requirement in selector expression {expression!r}")
    return parts


def _check_key(key: str, where: str) -> None:
    validation.validate_label_key(key, f"selector expression {where!r}")


def _check_value(value: str, key: str) -> None:
    validation.validate_label_value(key, value, "selector expression")
