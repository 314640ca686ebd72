"""`nodectl` / `python -m nodectl`."""

from __future__ import annotations


def main() -> None:
    from nodectl.app import app

    app(prog_name="nodectl")


if __name__ == "__main__":
    main()
