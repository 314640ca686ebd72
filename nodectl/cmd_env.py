"""`nodectl env ...`: the proxy and environment variables a node injects into every agent container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nodectl import edit as editing
from nodectl import output, views
from nodectl.args import check_proxy_url, parse_env_pairs
from nodectl.bulk import DEFAULT_PARALLEL, Outcome, failed, for_each_node, selector_of
from nodectl.errors import EXIT_FAILED, CliError, UsageError
from nodectl.options import (
    BulkOutputOpt,
    BulkYesOpt,
    NodeIdArg,
    NodeIdOrSelectorArg,
    OutputOpt,
    ParallelOpt,
    SelectorOpt,
    session,
)
from nodectl.output import Format

if TYPE_CHECKING:
    from nodeapi import models as m
    from nodectl.session import Session

app = typer.Typer(help="Per-node proxy and environment variables for agent containers.", no_args_is_help=True)


@app.command("get")
def get_env(
    ctx: typer.Context,
    node_id: NodeIdArg,
    fmt: OutputOpt = Format.table,
    reveal: Annotated[
        bool,
        typer.Option(
            "--reveal",
            "--show-secrets",
            help="Show proxy passwords and secret_env values (admin only; written to the audit log).",
        ),
    ] = False,
) -> None:
    """Show a node's env config. The server shows proxy passwords and secret_env values as ***
    unless --reveal; plain env values as they are."""
    from nodeapi.client import Calls

    config = session(ctx).send(Calls.get_env_config(node_id, reveal=reveal))
    data: dict[str, Any] = output.to_data(config)
    if not output.print_data(data, fmt):
        output.print_fields(views.env_fields(data))


def _put(sess: Session, node_id: str, config: m.EnvConfig, kind: str) -> m.EnvConfig:
    from nodeapi.client import Calls
    from nodeapi.errors import Conflict

    try:
        return sess.send(Calls.put_env_config(node_id, config))
    except Conflict as exc:
        if kind == "edit":
            raise editing.stale_edit("env config", node_id, exc.detail) from exc
        raise


@dataclass
class EnvChanges:
    """What `env set` changes, checked once for all nodes; None leaves a proxy setting as it is.

    The config read from the server has its secrets masked (`***`); sent back unchanged they
    keep their stored values."""

    http_proxy: str | None
    https_proxy: str | None
    no_proxy: str | None
    to_set: dict[str, str]
    secret_to_set: dict[str, str]
    to_unset: list[str]

    def apply(self, config: m.EnvConfig) -> list[str]:
        """Change `config` in place; the names to unset that were not set. ValueError if the
        resulting env breaks a limit (e.g. too many variables)."""
        from nodeapi.validation import validate_env, validate_env_total

        if self.http_proxy is not None:
            config.proxy.http_proxy = self.http_proxy or None
        if self.https_proxy is not None:
            config.proxy.https_proxy = self.https_proxy or None
        if self.no_proxy is not None:
            config.proxy.no_proxy = self.no_proxy or None
        missing = [
            name
            for name in self.to_unset
            if config.env.pop(name, None) is None and config.secret_env.pop(name, None) is None
        ]
        for name, value in self.to_set.items():  # a name moves between env and secret_env
            config.secret_env.pop(name, None)
            config.env[name] = value
        for name, value in self.secret_to_set.items():
            config.env.pop(name, None)
            config.secret_env[name] = value
        validate_env(config.env)
        validate_env(config.secret_env, "secret_env")
        validate_env_total(config.env, config.secret_env)
        return missing


def _env_changes(
    http_proxy: str | None,
    https_proxy: str | None,
    no_proxy: str | None,
    env: list[str] | None,
    secret_env: list[str] | None,
    unset_env: list[str] | None,
) -> EnvChanges:
    from nodeapi.masking import looks_secret
    from nodeapi.validation import validate_no_proxy

    to_set = parse_env_pairs(env or [])
    secret_to_set = parse_env_pairs(secret_env or [], "--secret-env")
    to_unset = list(unset_env or [])
    nothing = not (to_set or secret_to_set or to_unset)
    if http_proxy is None and https_proxy is None and no_proxy is None and nothing:
        raise UsageError(
            "nothing to change: give --http-proxy, --https-proxy, --no-proxy, --env, --secret-env "
            "or --unset-env"
        )
    both = (set(to_set) | set(secret_to_set)) & set(to_unset) or set(to_set) & set(secret_to_set)
    if both:
        raise UsageError(f"{sorted(both)[0]} is named twice (set, secret and unset are exclusive)")
    for name in sorted(to_set):
        if looks_secret(name):
            output.warn(
                f"{name} looks like a secret: --secret-env {name}=... keeps its value masked everywhere"
            )
    if http_proxy is not None:
        http_proxy = check_proxy_url(http_proxy, "--http-proxy") or ""
    if https_proxy is not None:
        https_proxy = check_proxy_url(https_proxy, "--https-proxy") or ""
    if no_proxy is not None:
        try:
            no_proxy = validate_no_proxy(no_proxy, "--no-proxy") or ""
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return EnvChanges(http_proxy, https_proxy, no_proxy, to_set, secret_to_set, to_unset)


@app.command("set")
def set_env(
    ctx: typer.Context,
    node_id: NodeIdOrSelectorArg = None,
    http_proxy: Annotated[
        str | None, typer.Option("--http-proxy", help="Proxy URL for HTTP; '' clears.")
    ] = None,
    https_proxy: Annotated[
        str | None, typer.Option("--https-proxy", help="Proxy URL for HTTPS; '' clears.")
    ] = None,
    no_proxy: Annotated[
        str | None, typer.Option("--no-proxy", help="Comma-separated hosts that bypass the proxy; '' clears.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=value to set; repeatable.")
    ] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option("--secret-env", help="NAME=value to set as a secret (shown as ***); repeatable."),
    ] = None,
    unset_env: Annotated[
        list[str] | None, typer.Option("--unset-env", help="NAME to remove (env or secret); repeatable.")
    ] = None,
    selector: SelectorOpt = None,
    yes: BulkYesOpt = False,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
    fmt: BulkOutputOpt = None,
) -> None:
    """Change parts of a node's env config (or of every node matching -l, after asking);
    everything not named stays as it is."""
    from nodeapi.client import Calls

    labels = selector_of(node_id, selector, fmt)
    changes = _env_changes(http_proxy, https_proxy, no_proxy, env, secret_env, unset_env)
    sess = session(ctx)
    if labels is not None:
        _set_env_fleet(sess, labels, changes, yes, parallel, fmt or Format.table)
        return
    assert node_id is not None
    config = sess.send(Calls.get_env_config(node_id))
    try:
        missing = changes.apply(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for name in missing:
        output.warn(f"{name} is not set on node/{node_id}")
    # the resource_version read above rides along: a concurrent change answers 409 instead of being lost
    _put(sess, node_id, config, "set")
    output.info(f"env config of node/{node_id} updated; containers started from now on get it")


def _set_env_fleet(
    sess: Session, selector: dict[str, str], changes: EnvChanges, yes: bool, parallel: int, fmt: Format
) -> None:
    from nodeapi.client import Calls

    def set_one(node_id: str) -> Outcome:
        config = sess.send(Calls.get_env_config(node_id))
        try:
            missing = changes.apply(config)
        except ValueError as exc:
            return failed("invalid", str(exc))
        saved = _put(sess, node_id, config, "set")
        notes = [f"{name} was not set" for name in missing]
        detail = {"resource_version": saved.resource_version}
        return Outcome(True, "updated", "; ".join(notes) or "containers started from now on get it", detail)

    for_each_node(sess, selector, set_one, fmt, parallel, "Change the env config of", yes)


ENV_EDIT_HELP = """Env config of node {id}: proxy for agent containers and extra environment variables.
Lines starting with '#' are ignored. An empty proxy value clears it. Secrets (proxy passwords,
secret_env values) show as ***: leave *** to keep a stored value, or write a new one.
Save and quit to apply; quit without saving (or empty the file) to cancel."""


@app.command("edit")
def edit_env(ctx: typer.Context, node_id: NodeIdArg) -> None:
    """Edit a node's env config in $VISUAL / $EDITOR (YAML; secrets stay *** unless replaced)."""
    from nodeapi import models as m
    from nodeapi.client import Calls

    sess = session(ctx)
    config = sess.send(Calls.get_env_config(node_id))
    document = {
        "proxy": {
            "http_proxy": config.proxy.http_proxy or "",
            "https_proxy": config.proxy.https_proxy or "",
            "no_proxy": config.proxy.no_proxy or "",
        },
        "env": dict(sorted(config.env.items())),
        "secret_env": dict(sorted(config.secret_env.items())),
    }
    original = editing.dump(document, ENV_EDIT_HELP.format(id=node_id))
    try:
        edited = editing.load_document(editing.run_editor(original, node_id), original)
    except editing.Unchanged:
        output.info(editing.CANCELLED)
        return
    proxy, env, secret_env = _parse_env_document(edited)
    if proxy == config.proxy and env == config.env and secret_env == config.secret_env:
        output.info(editing.CANCELLED)
        return
    edited_config = m.EnvConfig(
        proxy=proxy, env=env, secret_env=secret_env, resource_version=config.resource_version
    )
    _put(sess, node_id, edited_config, "edit")
    output.info(f"env config of node/{node_id} edited")


def _parse_env_document(edited: dict[str, Any]) -> tuple[m.ProxyConfig, dict[str, str], dict[str, str]]:
    from nodeapi import models as m
    from nodeapi.validation import validate_env, validate_env_total, validate_no_proxy

    unknown = set(edited) - {"proxy", "env", "secret_env"}
    if unknown:
        raise UsageError(
            f"unknown top-level key(s): {', '.join(sorted(unknown))} (only proxy, env and secret_env)"
        )
    proxy_map = editing.string_map(edited.get("proxy"), "proxy")
    unknown = set(proxy_map) - {"http_proxy", "https_proxy", "no_proxy"}
    if unknown:
        raise UsageError(f"unknown proxy key(s): {', '.join(sorted(unknown))}")
    env = editing.string_map(edited.get("env"), "env")
    secret_env = editing.string_map(edited.get("secret_env"), "secret_env")
    try:
        validate_env(env)
        validate_env(secret_env, "secret_env")
        validate_env_total(env, secret_env)
        no_proxy = validate_no_proxy(proxy_map.get("no_proxy", ""), "proxy.no_proxy") or None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    proxy = m.ProxyConfig(
        http_proxy=check_proxy_url(proxy_map.get("http_proxy", ""), "proxy.http_proxy"),
        https_proxy=check_proxy_url(proxy_map.get("https_proxy", ""), "proxy.https_proxy"),
        no_proxy=no_proxy,
    )
    return proxy, env, secret_env


@app.command("test-proxy")
def run_proxy_test(
    ctx: typer.Context,
    node_id: NodeIdOrSelectorArg = None,
    url: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            help="Target to fetch through the proxy its scheme selects (http:// or https://); repeatable. "
            "Only these are fetched; without --url the server's default targets are.",
        ),
    ] = None,
    https_url: Annotated[
        str | None,
        typer.Option("--https-url", help="An HTTPS target, the same as --url https://...", hidden=True),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", help="Test this proxy URL instead of the saved one (for both schemes)."),
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds per step.")] = None,
    in_container: Annotated[
        bool, typer.Option("--in-container", help="Run the check inside a container on the node.")
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", min=1.0, max=60.0, help="Seconds to wait for the node (default from --timeout)."
        ),
    ] = None,
    fmt: OutputOpt = Format.table,
    selector: SelectorOpt = None,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
) -> None:
    """Test the node's proxy from the node itself; exit 0 when it works, 1 when it does not,
    3 when the node does not answer in time, 6 when it is offline. With -l: every matching node,
    one row each; exit 1 when any failed (offline and not answering included)."""
    from nodeapi import models as m
    from nodeapi.client import Calls
    from nodeapi.validation import validate_target_urls

    labels = selector_of(node_id, selector)
    proxy_config = None
    if proxy is not None:
        checked = check_proxy_url(proxy, "--proxy")
        proxy_config = m.ProxyConfig(http_proxy=checked, https_proxy=checked)
    urls = [*(url or []), *([https_url] if https_url else [])]
    try:
        validate_target_urls(urls, "--url")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    request = m.ProxyTestRequest(proxy=proxy_config, urls=urls, timeout=timeout, in_container=in_container)
    if wait is None:
        # the node runs a connect step and one step per target of `timeout` (its default: 10 s) each;
        # the server waits 60 s at most
        wait = min(60.0, max(30.0, (timeout or 10.0) * (1 + max(len(urls), 2)) + 10.0))
    sess = session(ctx)
    if labels is not None:
        _test_proxy_fleet(sess, labels, request, wait, parallel, fmt)
        return
    assert node_id is not None
    result = sess.send(Calls.test_proxy(node_id, request, wait=wait))
    if not output.print_data(result, fmt):
        _print_proxy_report(result)
    if not result.ok:
        raise CliError(f"proxy test failed: {result.reason}: {result.message}", EXIT_FAILED)


def _test_proxy_fleet(
    sess: Session,
    selector: dict[str, str],
    request: m.ProxyTestRequest,
    wait: float,
    parallel: int,
    fmt: Format,
) -> None:
    from nodeapi.client import Calls
    from nodeapi.errors import Conflict

    def test_one(node_id: str) -> Outcome:
        try:
            result = sess.send(Calls.test_proxy(node_id, request, wait=wait))
        except Conflict as exc:
            if "offline" not in exc.detail:
                raise
            return failed("offline", exc.detail, proxy_test=None)
        detail = {"proxy_test": output.to_data(result)}
        if result.ok:
            return Outcome(True, "ok", result.message, detail)
        return failed(result.reason, result.message, **detail)

    for_each_node(sess, selector, test_one, fmt, parallel)


def _print_proxy_report(result: m.ProxyTestResult) -> None:
    pairs: list[tuple[str, output.Cell]] = [
        ("Node", result.node_id or "-"),
        ("Proxy", result.proxy or "(none)"),
        ("Where", "in a container" if result.in_container else "on the node"),
        (
            "Targets",
            " ".join(result.targets or [t for t in (result.target_http, result.target_https) if t]) or "-",
        ),
    ]
    for step in result.steps:
        latency = "" if step.latency_ms is None else f" {step.latency_ms:.0f} ms"
        status = "" if step.status_code is None else f" HTTP {step.status_code}"
        detail = f" - {step.detail}" if step.detail else ""
        if step.skipped and step.target:
            detail += f" ({step.target})"
        if step.skipped:
            mark, style = "skipped", "yellow"
        else:
            mark, style = ("ok", "green") if step.ok else ("FAILED", "red")
        pairs.append((f"Step {step.name}", (f"{mark}{status}{latency}{detail}", style)))
    verdict = ("ok", "bold green") if result.ok else (f"failed ({result.reason})", "bold red")
    pairs += [("Result", verdict), ("Message", result.message)]
    output.print_fields(pairs)
