"""The one version of agent-nodes, and the skew policy between a client and its apiserver.

The apiserver states its version in the `X-Agentnodes-Version` header of every answer and at
`GET /version`. As kubectl does with kube-apiserver, nodectl and the nodemanager work with a
server of another minor version of the same major version (they warn once per server version),
and refuse one of another major version. A server that states no version (older than this
check, or behind a proxy that drops the header) is not checked. docs/operations.md, Version skew.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum

from nodeapi import __version__
from nodeapi.errors import IncompatibleServer

VERSION_HEADER = "X-Agentnodes-Version"
CLIENT_VERSION = __version__
SKEW_DOC = "docs/operations.md#version-skew"

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


class Skew(Enum):
    NONE = "none"  # same major and minor
    MINOR = "minor"  # same major, another minor: works, with a warning
    MAJOR = "major"  # another major: refused
    UNKNOWN = "unknown"  # not a version this can read: not checked


def release(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of `version` (pre-release and local parts ignored), or None."""
    match = _RELEASE.match(version.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def skew(client: str, server: str) -> Skew:
    ours, theirs = release(client), release(server)
    if ours is None or theirs is None:
        return Skew.UNKNOWN
    if ours[0] != theirs[0]:
        return Skew.MAJOR
    return Skew.NONE if ours[1] == theirs[1] else Skew.MINOR


def minor_skew_warning(program: str, client: str, server: str) -> str:
    ahead = "ahead of" if (release(server) or (0, 0, 0)) > (release(client) or (0, 0, 0)) else "behind"
    return (
        f"the apiserver ({server}) is a minor version {ahead} this {program} ({client}): "
        f"supported, but upgrade the older one soon ({SKEW_DOC})"
    )


class VersionGate:
    """Checks the version each answer of the server states. Another minor version: `warn` once per
    server version. Another major version: `on_incompatible` (if given), then IncompatibleServer,
    before the answer is used."""

    def __init__(
        self,
        program: str,
        warn: Callable[[str], None],
        on_incompatible: Callable[[IncompatibleServer], None] | None = None,
        client_version: str = CLIENT_VERSION,
    ) -> None:
        self.program = program
        self.client_version = client_version
        self.server_version: str | None = None  # the last one stated
        self._warn = warn
        self._on_incompatible = on_incompatible
        self._warned: set[str] = set()

    def check(self, server_version: str | None) -> None:
        if not server_version:
            return
        self.server_version = server_version
        found = skew(self.client_version, server_version)
        if found is Skew.MAJOR:
            error = IncompatibleServer(self.program, self.client_version, server_version)
            if self._on_incompatible is not None:
                self._on_incompatible(error)
            raise error
        if found is Skew.MINOR and server_version not in self._warned:
            self._warned.add(server_version)
            self._warn(minor_skew_warning(self.program, self.client_version, server_version))
