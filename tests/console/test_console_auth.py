"""The console with tokens set: sign-in, session cookie and CSRF, the viewer role, secrets.

A real apiserver with ADMIN_TOKEN, VIEWER_TOKEN and NODE_JOIN_TOKEN; nodes register the way a
NodeManager does (heartbeat with the join token). Every test opens a fresh browser context, so
it starts signed out, with no cookie and empty storage.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Page, Playwright, expect

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.console.browser import CHROMIUM, CHROMIUM_ARGS, card, close_page, new_page, refresh_now
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ADMIN = "console-admin-token"
VIEWER = "console-viewer-token"
JOIN = "console-join-token"
SESSION_COOKIE = "agentnodes_session"
# what must never reach the page unless an admin reveals it
SECRET_VALUE = "sk-console-secret-value-7f3a"
PROXY_PASSWORD = "Proxy-Pw-9c1e"
NO_CHANGE_CONTROLS = (
    "#edit-node, #drain-node, #undrain-node, #delete-node, .card-edit, #env-save, #env-test-proxy, "
    "#env-reveal, #env-add-var, #env-add-secret, #env-form"
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"ADMIN_TOKEN": ADMIN, "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN}
    with ServerProcess(env=env) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[Client]:
    with Client(server.base_url, ADMIN) as client:
        yield client


@pytest.fixture
def node_id() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


def register(server: ServerProcess, node_id: str, labels: dict[str, str]) -> str:
    """The first heartbeat of a new node, with the join token (as a NodeManager sends it);
    answers the node's own token."""
    with Client(server.base_url, JOIN) as join:
        reply = join.send(Calls.heartbeat(m.HeartbeatRequest(node_id=node_id, labels=labels)))
    assert reply.node_token, "registration answers the node's own token"
    return reply.node_token


def sign_in(page: Page, server: ServerProcess, token: str, path: str = "/") -> None:
    page.goto(f"{server.base_url}{path}")
    expect(page.locator("#signin-token")).to_be_focused()
    page.fill("#signin-token", token)
    page.click("#signin-submit")
    expect(page.locator("#app-shell")).to_be_visible()
    expect(page.locator("#signin-page")).to_be_hidden()


def session_cookie(page: Page) -> dict[str, Any] | None:
    cookies = [cookie for cookie in page.context.cookies() if cookie["name"] == SESSION_COOKIE]
    return dict(cookies[0]) if cookies and cookies[0]["value"] else None


def browser_storage(page: Page) -> str:
    """Everything the page keeps in localStorage and sessionStorage, as one string."""
    text: str = page.evaluate(
        "JSON.stringify({local: Object.entries(localStorage), session: Object.entries(sessionStorage)})"
    )
    return text


def status_of(page: Page, path: str) -> int:
    status: int = page.evaluate(
        "(path) => fetch(path, {credentials: 'same-origin'}).then((r) => r.status)",
        path,
    )
    return status


def patch_statuses(page: Page, node: str, attempts: list[tuple[str, str | None]]) -> list[int]:
    """PATCH the node's labels from inside the page, once per (label value, X-CSRF-Token or None)."""
    statuses: list[int] = page.evaluate(
        """async ([node, attempts]) => {
            const statuses = [];
            for (const [value, csrf] of attempts) {
                const headers = {"Content-Type": "application/json"};
                if (csrf !== null) headers["X-CSRF-Token"] = csrf;
                const response = await fetch(`/api/v1/nodes/${encodeURIComponent(node)}`, {
                    method: "PATCH", headers, credentials: "same-origin",
                    body: JSON.stringify({labels: {attempt: value}}),
                });
                statuses.push(response.status);
            }
            return statuses;
        }""",
        [node, attempts],
    )
    return statuses


def page_csrf_token(page: Page) -> str:
    info: dict[str, Any] = page.evaluate("fetch('/api/v1/auth/session').then((r) => r.json())")
    assert info["csrf_token"], info
    return str(info["csrf_token"])


def input_values(page: Page) -> str:
    text: str = page.evaluate("[...document.querySelectorAll('input')].map((i) => i.value).join('\\n')")
    return text


def reveal_count(admin: Client, node: str) -> int:
    entries = admin.send(Calls.audit(limit=500, target_id=node)).items
    return sum(entry.action == "env_config.reveal" for entry in entries)


def test_admin_signs_in_with_a_cookie_and_signs_out(
    page: Page, server: ServerProcess, admin: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("auth")
    register(server, node, {"os": "linux"})
    # a token an older console kept in the browser is removed
    page.goto(f"{server.base_url}/")
    page.evaluate("for (const s of [sessionStorage, localStorage]) s.setItem('console.adminToken', 'old')")
    page.reload()
    expect(page.locator("#signin-page")).to_be_visible()
    expect(page.locator("#app-shell")).to_be_hidden()
    assert "console.adminToken" not in browser_storage(page)

    sign_in(page, server, ADMIN)
    expect(card(page, node)).to_have_count(1)
    expect(page.locator("#role-badge")).to_have_text("Admin")
    expect(page.locator("#sign-out")).to_be_visible()
    # no token in the browser's storage, and scripts cannot read the session cookie
    assert ADMIN not in browser_storage(page)
    assert SESSION_COOKIE not in page.evaluate("document.cookie")
    cookie = session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert cookie["sameSite"] == "Strict"
    assert ADMIN not in cookie["value"]

    # after a reload the page asks the server for its CSRF token again, and changes still work
    page.reload()
    expect(card(page, node)).to_have_count(1)
    expect(page.locator("#signin-page")).to_be_hidden()
    page.goto(f"{server.base_url}/#/nodes/{node}")
    page.click("#drain-node")
    expect(page.locator("#undrain-node")).to_be_visible()
    assert admin.send(Calls.get_node(node)).status == "draining"
    entries = admin.send(Calls.audit(limit=50, target_id=node)).items
    assert any(entry.actor == "admin (console)" for entry in entries)

    page.click("#sign-out")
    expect(page.locator("#signin-page")).to_be_visible()
    expect(page.locator("#signin-feedback")).to_contain_text("signed out")
    expect(page.locator("#app-shell")).to_be_hidden()
    assert session_cookie(page) is None
    assert status_of(page, "/api/v1/nodes") == 401
    page.reload()
    expect(page.locator("#signin-page")).to_be_visible()
    assert ADMIN not in browser_storage(page)


def test_a_wrong_token_shows_an_error_and_makes_no_session(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.base_url}/")
    page.click("#signin-submit")
    expect(page.locator("#signin-feedback .message-error")).to_have_text("Enter a token.")

    page.fill("#signin-token", "not-the-right-token")
    page.click("#signin-submit")
    expect(page.locator("#signin-feedback .message-error")).to_contain_text("rejected")
    expect(page.locator("#app-shell")).to_be_hidden()
    assert session_cookie(page) is None
    assert status_of(page, "/api/v1/nodes") == 401

    # the join token may register nodes, not sign in to the console
    page.fill("#signin-token", JOIN)
    page.click("#signin-submit")
    expect(page.locator("#signin-feedback .message-error")).to_contain_text("admin or viewer token")
    assert session_cookie(page) is None

    # the sign-in page speaks Chinese too, and keeps what was typed
    page.fill("#signin-token", "typed")
    page.click("#signin-lang")
    expect(page.locator("#signin-form h1")).to_have_text("登录")
    expect(page.locator("#signin-submit")).to_have_text("登录")
    expect(page.locator("#signin-token")).to_have_value("typed")
    page.reload()
    expect(page.locator("#signin-page")).to_be_visible()


def test_changes_without_the_csrf_token_are_refused_in_the_browser(
    page: Page, server: ServerProcess, admin: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("csrf")
    register(server, node, {"os": "linux"})
    sign_in(page, server, ADMIN)
    expect(card(page, node)).to_have_count(1)
    csrf = page_csrf_token(page)

    statuses = patch_statuses(page, node, [("none", None), ("wrong", "0" * 32), ("right", csrf)])
    assert statuses == [403, 403, 200]
    assert admin.send(Calls.get_node(node)).labels.get("attempt") == "right"


def test_an_expired_session_returns_to_the_sign_in_page_and_keeps_unsaved_input(
    page: Page, server: ServerProcess, node_id: Callable[[str], str]
) -> None:
    node = node_id("expiry")
    register(server, node, {"os": "linux"})
    sign_in(page, server, ADMIN, f"/#/nodes/{node}")
    expect(page.locator("#node-basic")).to_contain_text(node)
    page.fill("#env-no-proxy", "unsaved.example")

    page.context.clear_cookies()  # as when the session expires or its token is removed
    refresh_now(page)
    expect(page.locator("#signin-page")).to_be_visible()
    expect(page.locator("#signin-feedback")).to_contain_text("expired")
    expect(page.locator("#app-shell")).to_be_hidden()

    page.fill("#signin-token", ADMIN)
    page.click("#signin-submit")
    expect(page.locator("#node-basic")).to_contain_text(node)
    expect(page.locator("#env-no-proxy")).to_have_value("unsaved.example")


def test_a_viewer_reads_everything_and_gets_no_control_that_changes_anything(
    page: Page, server: ServerProcess, admin: Client, node_id: Callable[[str], str]
) -> None:
    node, draining = node_id("view"), node_id("view-drain")
    register(server, node, {"os": "linux", "zone": "a"})
    register(server, draining, {"os": "linux"})
    admin.send(Calls.patch_node(draining, m.NodePatch(status="draining")))
    admin.send(
        Calls.put_env_config(
            node,
            m.EnvConfig(
                proxy=m.ProxyConfig(http_proxy=f"http://agent:{PROXY_PASSWORD}@proxy.internal:3128"),
                env={"PLAIN": "plain-visible"},
                secret_env={"API_KEY": SECRET_VALUE},
            ),
        )
    )

    sign_in(page, server, VIEWER)
    expect(page.locator("#role-badge")).to_have_text("Viewer (read-only)")
    expect(card(page, node).locator(".chip")).to_have_text(["os=linux", "zone=a"])
    expect(card(page, draining).locator(".badge")).to_have_text("Draining")
    expect(page.locator(NO_CHANGE_CONTROLS)).to_have_count(0)
    # the only buttons on the node list turn its pages
    expect(page.locator("#view button:not(.pager button)")).to_have_count(0)

    for shown in (node, draining):
        page.goto(f"{server.base_url}/#/nodes/{shown}")
        expect(page.locator("#node-basic")).to_contain_text(shown)
        expect(page.locator("#env-readonly")).to_be_visible()
        expect(page.locator(NO_CHANGE_CONTROLS)).to_have_count(0)
        expect(page.locator("#view button")).to_have_count(0)
        expect(page.locator("#env-config input, #env-config select")).to_have_count(0)

    page.goto(f"{server.base_url}/#/nodes/{node}")
    readonly = page.locator("#env-readonly")
    expect(readonly).to_contain_text("http://agent:***@proxy.internal:3128")
    expect(page.locator("#env-vars-table")).to_contain_text("plain-visible")
    expect(page.locator("#env-secrets-table tbody tr")).to_have_text([re.compile(r"API_KEY\s*\*\*\*")])
    content = page.content()
    assert SECRET_VALUE not in content
    assert PROXY_PASSWORD not in content

    page.click(".nav-link[data-nav=runs]")
    expect(page.locator("#runs-table")).to_be_visible()
    expect(page.locator("#view button")).to_have_count(0)

    # the server refuses a viewer's change even with the session's CSRF token, and any reveal
    csrf = page_csrf_token(page)
    assert patch_statuses(page, node, [("viewer", csrf)]) == [403]
    assert "attempt" not in admin.send(Calls.get_node(node)).labels
    assert status_of(page, f"/api/v1/nodes/{node}/env-config?reveal=true") == 403


def test_secrets_stay_masked_round_trip_and_reveal(
    page: Page, server: ServerProcess, admin: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("secret")
    register(server, node, {"os": "linux"})
    proxy_url = f"http://agent:{PROXY_PASSWORD}@proxy.internal:3128"
    sign_in(page, server, ADMIN, f"/#/nodes/{node}")
    expect(page.locator("#node-basic")).to_contain_text(node)
    expect(page.locator("#env-reveal")).to_be_visible()

    page.fill("#env-http-proxy", proxy_url)
    page.click("#env-add-var")
    page.locator(".env-row .env-name").last.fill("MODE")
    page.locator(".env-row .env-value").last.fill("fast")
    page.click("#env-add-secret")
    secret_value = page.locator(".secret-row .secret-value")
    expect(secret_value).to_have_attribute("type", "password")
    page.locator(".secret-row .secret-name").fill("API_KEY")
    secret_value.fill(SECRET_VALUE)
    page.click("#env-save")
    expect(page.locator("#env-config .message-success")).to_be_visible()
    stored = admin.send(Calls.get_env_config(node, reveal=True))
    assert stored.secret_env == {"API_KEY": SECRET_VALUE}
    assert stored.proxy.http_proxy == proxy_url
    assert stored.env == {"MODE": "fast"}

    page.reload()
    expect(page.locator(".secret-row .secret-name")).to_have_value("API_KEY")
    expect(secret_value).to_have_value("***")
    expect(secret_value).to_have_attribute("type", "password")
    expect(page.locator("#env-http-proxy")).to_have_value("http://agent:***@proxy.internal:3128")
    for text in (page.content(), page.inner_text("body"), input_values(page), browser_storage(page)):
        assert SECRET_VALUE not in text
        assert PROXY_PASSWORD not in text

    # saving again without touching the secrets keeps them
    page.locator(".env-row .env-value").fill("slow")
    page.click("#env-save")
    expect(page.locator("#env-config .message-success")).to_be_visible()
    stored = admin.send(Calls.get_env_config(node, reveal=True))
    assert stored.env == {"MODE": "slow"}
    assert stored.secret_env == {"API_KEY": SECRET_VALUE}
    assert stored.proxy.http_proxy == proxy_url

    # Reveal fetches the real values (the server audits it); Hide masks them again
    reveals = reveal_count(admin, node)
    page.click("#env-reveal")
    expect(secret_value).to_have_value(SECRET_VALUE)
    expect(secret_value).to_have_attribute("type", "text")
    expect(page.locator("#env-http-proxy")).to_have_value(proxy_url)
    expect(page.locator("#env-reveal")).to_have_text("Hide secrets")
    assert reveal_count(admin, node) == reveals + 1
    page.click("#env-reveal")
    expect(secret_value).to_have_value("***")
    expect(secret_value).to_have_attribute("type", "password")
    expect(page.locator("#env-http-proxy")).to_have_value("http://agent:***@proxy.internal:3128")
    assert SECRET_VALUE not in input_values(page)

    # a new value replaces the stored one; a removed row removes the secret
    secret_value.fill("replaced-value")
    page.click("#env-save")
    expect(page.locator("#env-config .message-success")).to_be_visible()
    assert admin.send(Calls.get_env_config(node, reveal=True)).secret_env == {"API_KEY": "replaced-value"}
    expect(secret_value).to_have_value("***")
    page.locator(".secret-row .remove-row").click()
    page.click("#env-save")
    expect(page.locator("#env-config .message-success")).to_be_visible()
    assert admin.send(Calls.get_env_config(node, reveal=True)).secret_env == {}
    expect(page.locator(".secret-row")).to_have_count(0)


def test_a_session_cookie_the_browser_drops_is_reported(
    playwright: Playwright, server: ServerProcess
) -> None:
    """Over plain HTTP to a host other than localhost a browser drops the Secure session cookie:
    the sign-in page says so instead of signing in and falling back to itself."""
    resolve = "--host-resolver-rules=MAP console.test 127.0.0.1"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, resolve])
    try:
        page = new_page(browser)
        page.goto(f"http://console.test:{server.port}/")
        page.fill("#signin-token", ADMIN)
        page.click("#signin-submit")
        expect(page.locator("#signin-feedback .message-error")).to_contain_text(
            "did not keep the session cookie"
        )
        expect(page.locator("#app-shell")).to_be_hidden()
        close_page(page)
    finally:
        browser.close()


def _answer_proxy_tests(server: ServerProcess, node: str, token: str, seen: list[dict[str, Any]]) -> None:
    """A stand-in NodeManager with the node's own token: answers two test_proxy commands."""
    with Client(server.base_url, token) as client:
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            for command in client.send(Calls.poll_work(node, wait=2.0)).commands:
                if command.type != "test_proxy":
                    continue
                seen.append(command.payload["proxy"])
                result = m.ProxyTestResult(ok=True, reason="ok", message="fetched through the proxy")
                client.send(
                    Calls.post_command_result(
                        node, command.id, m.CommandResult(ok=True, result=result_dict(result))
                    )
                )


def result_dict(result: m.ProxyTestResult) -> dict[str, Any]:
    answer: dict[str, Any] = msgspec.to_builtins(result)
    return answer


def test_test_proxy_uses_the_stored_password_while_the_form_shows_the_saved_proxy(
    page: Page, server: ServerProcess, admin: Client, node_id: Callable[[str], str]
) -> None:
    node = node_id("proxy-secret")
    token = register(server, node, {"os": "linux"})
    proxy_url = f"http://agent:{PROXY_PASSWORD}@proxy.internal:3128"
    admin.send(Calls.put_env_config(node, m.EnvConfig(proxy=m.ProxyConfig(http_proxy=proxy_url))))
    seen: list[dict[str, Any]] = []
    fake_node = threading.Thread(target=_answer_proxy_tests, args=(server, node, token, seen), daemon=True)
    fake_node.start()

    sign_in(page, server, ADMIN, f"/#/nodes/{node}")
    expect(page.locator("#env-http-proxy")).to_have_value("http://agent:***@proxy.internal:3128")
    page.click("#env-test-proxy")
    expect(page.locator("#proxy-test-output .proxy-result")).to_have_attribute("data-reason", "ok")
    # an edited form is what gets tested, saved or not
    page.fill("#env-http-proxy", "http://other.internal:3128")
    page.click("#env-test-proxy")
    expect(page.locator("#proxy-test-output .proxy-result")).to_have_attribute("data-reason", "ok")
    fake_node.join(timeout=10)
    assert [entry["http_proxy"] for entry in seen] == [proxy_url, "http://other.internal:3128"]
    assert PROXY_PASSWORD not in page.content()
