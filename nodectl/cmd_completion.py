"""`nodectl completion bash|zsh|fish`: print the shell completion script, kubectl style.

The script calls nodectl back with `_NODECTL_COMPLETE=complete_<shell>` on every Tab; typer answers
those calls (sub-commands, options, choices) before any command runs.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

PROG_NAME = "nodectl"
COMPLETE_VAR = "_NODECTL_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(
    shell: Annotated[
        Shell,
        typer.Argument(help="bash, zsh or fish.", metavar="SHELL", case_sensitive=False, show_default=False),
    ],
) -> None:
    """Print the completion script for SHELL: `source <(nodectl completion bash)` in ~/.bashrc."""
    # what typer's own --show-completion prints; typer has no public name for it
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell.value)
    sys.stdout.write(script + "\n")
