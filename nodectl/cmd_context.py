"""`nodectl context ...`: named servers (URL, token, CA file) in ~/.config/nodectl/config.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodectl import config, output
from nodectl.errors import EXIT_NOT_FOUND, CliError, UsageError
from nodectl.options import NoHeadersOpt, OutputOpt, session
from nodectl.output import Format

app = typer.Typer(help="Named contexts (server, token, CA file) in the config file.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Context name.", show_default=False)]


def _load() -> config.Config:
    try:
        return config.load()
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from exc


@app.command("list")
def list_contexts(fmt: OutputOpt = Format.table, no_headers: NoHeadersOpt = False) -> None:
    """All contexts; the current one is marked with *."""
    cfg = _load()
    names = sorted(cfg.contexts)
    if fmt in (Format.json, Format.yaml):
        items = [
            {
                "name": n,
                "server": cfg.contexts[n].server,
                "has_token": bool(cfg.contexts[n].token),
                "ca": cfg.contexts[n].ca,
                "current": n == cfg.current,
            }
            for n in names
        ]
        output.print_data({"current": cfg.current, "items": items}, fmt)
        return
    rows: list[list[output.Cell]] = [
        [
            ("*", "bold green") if n == cfg.current else "",
            n,
            cfg.contexts[n].server,
            "yes" if cfg.contexts[n].token else "no",
        ]
        for n in names
    ]
    output.print_table(["CURRENT", "NAME", "SERVER", "TOKEN"], rows, no_headers)


@app.command("set")
def set_context(
    name: NameArg,
    server: Annotated[str | None, typer.Option("--server", help="API server URL.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token; '' removes it.")] = None,
    ca: Annotated[
        str | None,
        typer.Option("--ca", metavar="FILE", help="CA file (PEM) that verifies the server; '' removes it."),
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
) -> None:
    """Create or change a context: `nodectl context set prod --server https://... --token ... --use`."""
    cfg = _load()
    existing = cfg.contexts.get(name)
    if existing is None and server is None:
        raise UsageError(f"context {name!r} is new: --server is required")
    url = server if server is not None else existing.server  # type: ignore[union-attr]
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--server must be an http:// or https:// URL, not {url!r}")
    new_token = (token or None) if token is not None else (existing.token if existing else None)
    new_ca = existing.ca if existing else None
    if ca:
        from nodeapi.tls import CAFileError, check_ca_file

        try:
            new_ca = str(check_ca_file(Path(ca).expanduser().absolute()))
        except CAFileError as exc:
            raise UsageError(f"--ca: {exc}") from exc
    elif ca is not None:
        new_ca = None
    cfg.contexts[name] = config.Context(name, url.rstrip("/"), new_token, new_ca)
    if use or cfg.current is None:
        cfg.current = name
    path = config.save(cfg)
    output.info(f"context {name!r} {'created' if existing is None else 'updated'} in {path}")


@app.command("use")
def use_context(name: NameArg) -> None:
    """Make a context the current one."""
    cfg = _load()
    if name not in cfg.contexts:
        raise CliError(f"context {name!r} is not defined (see `nodectl context list`)", EXIT_NOT_FOUND)
    cfg.current = name
    config.save(cfg)
    output.info(f"switched to context {name!r}")


@app.command("delete")
def delete_context(name: NameArg) -> None:
    """Remove a context."""
    cfg = _load()
    if cfg.contexts.pop(name, None) is None:
        raise CliError(f"context {name!r} is not defined", EXIT_NOT_FOUND)
    if cfg.current == name:
        cfg.current = None
    config.save(cfg)
    output.info(f"context {name!r} deleted")


@app.command("current")
def current_context(ctx: typer.Context) -> None:
    """The context, server and token source this invocation would use."""
    target = session(ctx).target()
    output.print_fields(
        [
            ("Context", target.context or "(none)"),
            ("Server", f"{target.server} (from {target.server_source})"),
            ("Token", "set" if target.token else "none"),
            ("CA", f"{target.ca} (from {target.ca_source})" if target.ca else "the system CA store"),
            ("Config file", str(config.config_path())),
        ]
    )
