"""Checks on a run create request; each failure names the field and the rule (400)."""

from __future__ import annotations

from nodeapi import validation
from nodeapi.masking import MASK
from nodeapi.models import RunCreate
from server.errors import InvalidInput
from server.scheduler.selectors import compile_selector

MAX_IMAGE_LENGTH = 512
MAX_COMMAND_ARGS = 1024
MAX_COMMAND_BYTES = 128 * 1024
MAX_SELECTOR_EXPRESSIONS = 32
MAX_EXPRESSION_LENGTH = 1024


def validate_run_create(req: RunCreate) -> None:
    try:
        _validate_image(req.image)
        _validate_command(req.command)
        validation.validate_env(req.env, "env")
        validation.validate_env(req.secret_env, "secret_env")
        validation.validate_env_total(req.env, req.secret_env)
        if MASK in req.secret_env.values():
            raise ValueError(f"secret_env: {MASK} is what reads show in place of a value; send the value")
        validation.validate_labels(req.node_selector, "node_selector")
        _validate_expressions(req.selector_expressions)
        compile_selector(req.node_selector, req.selector_expressions)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _validate_image(image: str) -> None:
    if not image.strip():
        raise ValueError("image must not be empty (e.g. busybox:1.36)")
    if len(image) > MAX_IMAGE_LENGTH:
        raise ValueError(f"image must be at most {MAX_IMAGE_LENGTH} characters, got {len(image)}")
    if any(ch.isspace() or not ch.isprintable() for ch in image):
        raise ValueError(f"image {image[:80]!r} must not contain whitespace or control characters")


def _validate_command(command: list[str]) -> None:
    if len(command) > MAX_COMMAND_ARGS:
        raise ValueError(f"command has {len(command)} arguments; at most {MAX_COMMAND_ARGS} are allowed")
    if any("\x00" in arg for arg in command):
        raise ValueError("command arguments must not contain NUL characters")
    if sum(len(arg.encode()) for arg in command) > MAX_COMMAND_BYTES:
        raise ValueError(f"command is longer than {MAX_COMMAND_BYTES} bytes in total")


def _validate_expressions(expressions: list[str]) -> None:
    if len(expressions) > MAX_SELECTOR_EXPRESSIONS:
        raise ValueError(
            f"selector_expressions: at most {MAX_SELECTOR_EXPRESSIONS} are allowed, got {len(expressions)}"
        )
    for text in expressions:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ValueError(f"selector_expressions: {text[:40]!r}... is longer than {MAX_EXPRESSION_LENGTH}")
