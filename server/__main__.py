"""`apiserver` / `python -m server`. The program (server.cli) needs the `server` extra; without it
this says which pip command installs it (exit 2) instead of failing on an import."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    from nodeapi.extras import missing_extra, require

    require("apiserver", "server")
    try:
        from server.cli import main as run
    except ModuleNotFoundError as exc:
        missing_extra("apiserver", "server", exc)
    run(argv)


if __name__ == "__main__":
    main()
