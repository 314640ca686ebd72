"""Shell completion: `nodectl completion SHELL` scripts, and the protocol those scripts speak."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from nodectl.app import app
from tests.support.nodectl import base_env, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No server: completion never calls the API."""
    return base_env(None, tmp_path / "config")


def complete_bash(env: dict[str, str], line: str) -> list[str]:
    """What a Tab after `line` offers in bash: the calls the bash script makes, by hand."""
    words = line.split(" ")
    done = run(
        {**env, "_NODECTL_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_completion_prints_a_script_per_shell(env: dict[str, str]) -> None:
    bash = run(env, "completion", "bash")
    assert bash.returncode == 0, bash.stderr
    assert "_NODECTL_COMPLETE=complete_bash" in bash.stdout
    assert bash.stdout.rstrip().endswith("complete -o default -F _nodectl_completion nodectl")
    assert bash.stderr == ""

    zsh = run(env, "completion", "zsh")
    assert zsh.returncode == 0, zsh.stderr
    assert zsh.stdout.startswith("#compdef nodectl")
    assert "_NODECTL_COMPLETE=complete_zsh" in zsh.stdout

    fish = run(env, "completion", "fish")
    assert fish.returncode == 0, fish.stderr
    assert fish.stdout.startswith("complete --command nodectl")
    assert "_NODECTL_COMPLETE=complete_fish" in fish.stdout


@pytest.mark.parametrize("args", [[], ["tcsh"]])
def test_completion_needs_a_known_shell(env: dict[str, str], args: list[str]) -> None:
    done = run(env, "completion", *args)
    assert done.returncode == 2
    assert done.stdout == ""


def test_bash_protocol_completes_commands_options_and_choices(env: dict[str, str]) -> None:
    assert complete_bash(env, "nodectl no") == ["nodes"]
    assert complete_bash(env, "nodectl nodes dr") == ["drain"]
    assert complete_bash(env, "nodectl nodes un") == ["undrain"]
    assert complete_bash(env, "nodectl env test-") == ["test-proxy"]
    assert complete_bash(env, "nodectl nodes drain --ti") == ["--timeout"]
    assert complete_bash(env, "nodectl --serv") == ["--server"]
    assert complete_bash(env, "nodectl nodes list -o ") == ["table", "wide", "json", "yaml"]
    assert complete_bash(env, "nodectl completion ") == ["bash", "zsh", "fish"]
    assert "completion" in complete_bash(env, "nodectl ")


def test_zsh_protocol_keeps_help_texts_whole(env: dict[str, str]) -> None:
    done = run({**env, "_NODECTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "nodectl --"})
    assert done.returncode == 0, done.stderr
    assert '"--server":"API server URL (env NODECTL_SERVER; default from the context)."' in done.stdout


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every command of the tree (typer's own vendored click objects), with its command line."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_help_texts_have_no_square_brackets() -> None:
    """zsh and fish completion show help texts through rich markup, whatever rich_markup_mode says:
    `[env X]` would vanish there."""
    bracketed = []
    for path, command in _commands(typer.main.get_command(app), "nodectl"):
        texts = [command.get_short_help_str(limit=1000)]
        texts += [getattr(param, "help", None) or "" for param in command.params]
        bracketed += [f"{path}: {text}" for text in texts if "[" in text]
    assert bracketed == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_with_the_generated_script(env: dict[str, str]) -> None:
    """The script as a user sources it, in a real bash, with nodectl found on PATH."""
    scripts = Path(sys.executable).parent
    if not (scripts / "nodectl").exists():
        pytest.skip("the nodectl console script is not installed next to this Python")
    check = (
        "source <(nodectl completion bash)\n"
        "COMP_WORDS=(nodectl no); COMP_CWORD=1; _nodectl_completion nodectl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(nodectl nodes drain --w); COMP_CWORD=3; _nodectl_completion nodectl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", check],
        env={**env, "PATH": f"{scripts}{os.pathsep}{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nodes", "--wait"]
