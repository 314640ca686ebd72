"""The nodectl command tree. Sub-commands import the API client lazily, so `--help` stays fast."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nodectl import cmd_audit, cmd_completion, cmd_context, cmd_env, cmd_nodes, cmd_runs, cmd_version, output
from nodectl.errors import EXIT_FAILED, CliError, from_api_error
from nodectl.session import Session


class NodectlGroup(TyperGroup):
    """Turns every nodectl and API error into `error: ...` on stderr and the contract's exit code."""

    def invoke(self, ctx: Any) -> Any:
        from nodeapi.errors import ApiError

        try:
            return super().invoke(ctx)
        except CliError as exc:
            output.error(exc.message)
            raise typer.Exit(exc.exit_code) from exc
        except ApiError as exc:
            failure = from_api_error(exc)
            output.error(failure.message)
            raise typer.Exit(failure.exit_code) from exc
        except BrokenPipeError as exc:  # `nodectl nodes list | head`
            raise typer.Exit(EXIT_FAILED) from exc


app = typer.Typer(
    name="nodectl",
    cls=NodectlGroup,
    help="Admin CLI for the agent node control plane: nodes, env config, runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering it with rich costs ~0.15 s of imports
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(cmd_nodes.app, name="nodes")
app.add_typer(cmd_env.app, name="env")
app.add_typer(cmd_runs.app, name="runs")
app.add_typer(cmd_context.app, name="context")
app.add_typer(cmd_audit.app, name="audit")
app.command("completion")(cmd_completion.completion)
app.command("version")(cmd_version.version)


def _version(value: bool) -> None:
    if value:
        from nodeapi import __version__

        typer.echo(f"nodectl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option("--server", help="API server URL (env NODECTL_SERVER; default from the context)."),
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token (env NODECTL_TOKEN).")] = None,
    context: Annotated[
        str | None,
        typer.Option("--context", help="Use this context from the config file (env NODECTL_CONTEXT)."),
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option(
            "--ca",
            metavar="FILE",
            help="CA file (PEM) that verifies an https:// server (env NODECTL_CA; default: system CAs).",
        ),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="Seconds to wait for each API answer.")
    ] = 30.0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Global options come before the command: `nodectl --server https://host:8080 --ca ca.pem nodes list`."""
    sess = Session(server, token, context, request_timeout, ca)
    ctx.obj = sess
    ctx.call_on_close(sess.close)
