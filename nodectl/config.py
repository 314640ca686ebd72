"""Where nodectl talks to: named contexts in ~/.config/nodectl/config.toml.

Precedence for the server, token and CA file: flags > NODECTL_SERVER / NODECTL_TOKEN /
NODECTL_CA > the selected context (--context, else NODECTL_CONTEXT, else the file's current
context) > http://localhost:8080 without a token, verified against the system CA store.

The file is read with tomllib and written with tomli_w:

    current-context = "prod"

    [contexts.prod]
    server = "https://nodes.example.com"
    token = "..."
    ca = "/etc/agent-nodes/ca.pem"

A relative `ca` path is relative to the file's directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SERVER = "http://localhost:8080"


class ConfigError(Exception):
    """The config file is unreadable or names a context that does not exist."""


@dataclass(frozen=True)
class Context:
    name: str
    server: str
    token: str | None = None
    ca: str | None = None  # CA file (PEM) that verifies an https:// server


@dataclass
class Config:
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None
    directory: Path | None = field(default=None, compare=False)  # of the file: relative `ca` paths start here


@dataclass(frozen=True)
class Target:
    """The server and token one invocation uses, and where each came from."""

    server: str
    token: str | None
    context: str | None
    server_source: str
    ca: str | None = None  # None: the system CA store
    ca_source: str | None = None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nodectl" / "config.toml"


def load(path: Path | None = None) -> Config:
    import tomllib

    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(directory=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    contexts: dict[str, Context] = {}
    for name, entry in (data.get("contexts") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("server"), str):
            raise ConfigError(f'{path}: context {name!r} needs a server = "URL" entry')
        token, ca = entry.get("token"), entry.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise ConfigError(f'{path}: context {name!r}: ca must be a file name, ca = "PATH"')
        contexts[name] = Context(
            name,
            entry["server"],
            token if isinstance(token, str) and token else None,
            ca or None,
        )
    current = data.get("current-context")
    return Config(contexts, current if isinstance(current, str) and current else None, path.parent)


HEADER = "# nodectl contexts; edit with `nodectl context set|use|delete`\n"


def dumps(config: Config) -> str:
    import tomli_w

    document: dict[str, object] = {}
    if config.current:
        document["current-context"] = config.current
    contexts: dict[str, dict[str, str]] = {}
    for name in sorted(config.contexts):
        ctx = config.contexts[name]
        contexts[name] = {"server": ctx.server}
        if ctx.token:
            contexts[name]["token"] = ctx.token
        if ctx.ca:
            contexts[name]["ca"] = ctx.ca
    if contexts:
        document["contexts"] = contexts
    body = tomli_w.dumps(document)
    return f"{HEADER}\n{body}" if body else HEADER


def save(config: Config, path: Path | None = None) -> Path:
    """Write atomically with mode 0600: the file holds bearer tokens."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dumps(config))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def resolve(
    server_flag: str | None,
    token_flag: str | None,
    context_flag: str | None,
    environ: dict[str, str] | None = None,
    config: Config | None = None,
    ca_flag: str | None = None,
) -> Target:
    env = os.environ if environ is None else environ
    context_name = context_flag or env.get("NODECTL_CONTEXT") or None
    explicit_context = context_name is not None
    cfg = config if config is not None else load()
    context_name = context_name or cfg.current
    context: Context | None = None
    if context_name:
        context = cfg.contexts.get(context_name)
        if context is None and explicit_context:
            raise ConfigError(f"context {context_name!r} is not defined (see `nodectl context list`)")

    if server_flag:
        server, source = server_flag, "--server"
    elif env.get("NODECTL_SERVER"):
        server, source = env["NODECTL_SERVER"], "NODECTL_SERVER"
    elif context is not None:
        server, source = context.server, f"context {context.name}"
    else:
        server, source = DEFAULT_SERVER, "default"

    # A context's token and CA go only with that context's server, never to one named by a flag or env var.
    own_server = context is not None and server.rstrip("/") == context.server.rstrip("/")
    token = token_flag or env.get("NODECTL_TOKEN") or None
    if token is None and context is not None and own_server:
        token = context.token
    ca, ca_source = None, None
    if ca_flag:
        ca, ca_source = ca_flag, "--ca"
    elif env.get("NODECTL_CA"):
        ca, ca_source = env["NODECTL_CA"], "NODECTL_CA"
    elif context is not None and own_server and context.ca:
        ca, ca_source = context_ca(cfg, context.ca), f"context {context.name}"
    return Target(server.rstrip("/"), token, context.name if context else None, source, ca, ca_source)


def context_ca(cfg: Config, ca: str) -> str:
    """A context's `ca` as a path: `~` expanded, a relative path taken from the file's directory."""
    return str((cfg.directory or Path()) / Path(ca).expanduser())
