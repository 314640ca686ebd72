"""`nodectl version`: the versions of nodectl and of the apiserver it talks to."""

from __future__ import annotations

from typing import Annotated

import typer

from nodectl import output
from nodectl.errors import EXIT_FAILED, from_api_error
from nodectl.options import OutputOpt, session
from nodectl.output import Format


def version(
    ctx: typer.Context,
    fmt: OutputOpt = Format.table,
    client_only: Annotated[
        bool, typer.Option("--client", help="Only nodectl's version; ask no server.")
    ] = False,
) -> None:
    """Print nodectl's version (`client`) and the apiserver's (`server`).

    Another minor version on either side works (one warning); another major version does not
    (a warning here, a refusal on every other command). An unreachable server prints the client's
    version, says why on stderr and exits 1.
    """
    from nodeapi import __version__
    from nodeapi.errors import ApiError, IncompatibleServer

    versions: dict[str, str | None] = {"client": __version__}
    failure = None
    if not client_only:
        from nodeapi.client import Calls

        try:
            versions["server"] = session(ctx).send(Calls.version()).version
        except IncompatibleServer as exc:
            versions["server"] = exc.server_version
            output.warn(str(exc))
        except ApiError as exc:
            versions["server"] = None
            failure = from_api_error(exc)
    if not output.print_data(versions, fmt):
        typer.echo(f"Client Version: {versions['client']}")
        if "server" in versions:
            typer.echo(f"Server Version: {versions['server'] or 'unknown'}")
    if failure is not None:
        output.error(failure.message)
        raise typer.Exit(EXIT_FAILED)
