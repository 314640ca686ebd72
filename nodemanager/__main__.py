"""`nodemanager` / `python -m nodemanager`. The daemon (nodemanager.daemon) needs the `node` extra;
without it this says which pip command installs it (exit 2) instead of failing on an import."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from nodeapi.extras import missing_extra, require

    require("nodemanager", "node")
    try:
        from nodemanager.daemon import main as run
    except ModuleNotFoundError as exc:
        missing_extra("nodemanager", "node", exc)
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
