"""Exit codes for scripts, and the one place API errors become messages and codes."""

from __future__ import annotations

from nodeapi import errors as api

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3  # timed out waiting, or a confirmation was declined
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_CONFLICT = 6


class CliError(Exception):
    """A failure nodectl reports as `error: <message>` on stderr with a given exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class WaitTimeout(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_TIMEOUT)


def from_api_error(exc: api.ApiError) -> CliError:
    """Translate a client error into what the user sees and the exit code."""
    if isinstance(exc, api.TransportError):
        return CliError(str(exc), EXIT_FAILED)
    if isinstance(exc, api.Unauthorized):
        hint = (
            "not authenticated: pass --token, set NODECTL_TOKEN or use a context with a token"
            if exc.status_code == 401
            else "not allowed"
        )
        return CliError(f"{hint} ({exc.status_code}: {exc.detail})", EXIT_AUTH)
    if isinstance(exc, api.NotFound):
        return CliError(f"not found: {exc.detail}", EXIT_NOT_FOUND)
    if isinstance(exc, api.Conflict):
        return CliError(f"conflict: {exc.detail}", EXIT_CONFLICT)
    if isinstance(exc, api.GatewayTimeout):
        return CliError(f"timed out: {exc.detail}", EXIT_TIMEOUT)
    if isinstance(exc, api.BadRequest):
        return CliError(f"rejected by the server ({exc.status_code}): {exc.detail}", EXIT_FAILED)
    if isinstance(exc, api.HTTPStatusError):
        return CliError(f"server error ({exc.status_code}): {exc.detail}", EXIT_FAILED)
    return CliError(str(exc), EXIT_FAILED)
