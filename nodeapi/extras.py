"""What a program does when the extra it needs is not installed.

`pip install agent-nodes` installs nodectl and this package alone; the apiserver and the
nodemanager need `agent-nodes[server]` and `agent-nodes[node]`. Their entry points call
`require()` before importing the program, so a missing extra ends in one line naming the pip
command that fixes it (exit 2), never in an ImportError's traceback. Standard library only.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import NoReturn

EXIT_MISSING_EXTRA = 2
DISTRIBUTION = "agent-nodes"
OWN_PACKAGES = frozenset({"nodeapi", "server", "nodemanager", "nodectl"})
# the modules each extra brings, as the programs import them (uvloop and httptools are optional:
# the apiserver falls back to asyncio and h11); tests/test_packaging.py keeps this in step with
# pyproject.toml
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": (
        "pydantic_settings",
        "litestar",
        "cryptography",
        "swagger_ui_bundle",
        "uvicorn",
        "sqlmodel",
        "sqlalchemy",
        "alembic",
        "aiosqlite",
        "asyncpg",
        "redis",
        "prometheus_client",
        "structlog",
    ),
    "node": ("pydantic_settings", "docker", "prometheus_client", "structlog"),
}


def pip_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(program: str, extra: str) -> None:
    """Exit 2 with the pip hint unless every module of `extra` can be imported."""
    for module in EXTRA_MODULES[extra]:
        if importlib.util.find_spec(module) is None:
            _exit(program, extra, module)


def missing_extra(program: str, extra: str, exc: ModuleNotFoundError) -> NoReturn:
    """Exit 2 with the pip hint for the module `exc` found missing; `exc` is re-raised when that
    module is one of the project's own (a broken install, not a missing extra)."""
    top = (exc.name or "").split(".", 1)[0]
    if not top or top in OWN_PACKAGES:
        raise exc
    _exit(program, extra, top)


def _exit(program: str, extra: str, module: str) -> NoReturn:
    sys.stderr.write(
        f"{program}: the {extra!r} extra is not installed (no module named {module!r}); "
        f"install it with: {pip_hint(extra)}\n"
    )
    sys.exit(EXIT_MISSING_EXTRA)
