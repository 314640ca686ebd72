"""The node page with 10,000 registered nodes: it renders in under a second, fetches one page,
and follows changes live from the node stream without fetching the list again.

A real apiserver process on SQLite; the 10,000 node rows are inserted straight into its
database (tests.support.db.insert_nodes, as bench/node_listing.py does), since 10,000 first
heartbeats over HTTP would take most of a minute. The changes the page sees go through the API.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, expect

from nodeapi import models as m
from nodeapi.client import Calls, Client
from tests.console.browser import card
from tests.support import db
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NODES = 10_000
PAGE_SIZE = 50  # server/console/nodes.js
# the figure: the node page of a 10,000-node fleet renders in under a second, measured
# in the browser from the start of the navigation to the first page of cards on screen
RENDER_LIMIT_MS = 1000.0
DASH = "\u2013"  # the en dash of "1-50 of 10000 nodes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("fleet")
    database_url = f"sqlite:///{data_dir / 'fleet.db'}"
    # no seeded node turns offline while the module runs
    env = {"DATABASE_URL": database_url, "NODE_OFFLINE_AFTER": "3600", "LOG_LEVEL": "WARNING"}
    with ServerProcess(env=env, data_dir=data_dir) as process:
        # node-00000 .. node-09999, labels os=linux, rack=r0..r9; in a thread of its own, since it
        # runs an event loop and playwright's sync API may already run one in this thread
        seeding = ThreadPoolExecutor(max_workers=1)
        seeding.submit(db.insert_nodes, database_url, NODES).result(timeout=120)
        seeding.shutdown()
        yield process


def list_requests(page: Page) -> list[dict[str, list[str]]]:
    """The query of every request the page makes for the node list (GET /api/v1/nodes), live."""
    seen: list[dict[str, list[str]]] = []

    def on_request(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path.rstrip("/") == "/api/v1/nodes":
            seen.append(parse_qs(url.query))

    page.on("request", on_request)
    return seen


def rendered_ms(page: Page) -> float:
    """When the first page of node cards was on screen, in ms since the navigation started."""
    value: float = page.evaluate(
        "() => performance.getEntriesByName('console:nodes-rendered')[0]?.startTime ?? -1"
    )
    assert value >= 0, "the node page marks its first render"
    return value


def test_node_page_of_10000_nodes_renders_in_under_a_second_and_updates_live(
    page: Page, server: ServerProcess, api: Client
) -> None:
    assert api.send(Calls.list_nodes(limit=1)).total >= NODES
    # warm the server (its first listing compiles statements and fills the connection pool)
    api.send(Calls.list_nodes(limit=PAGE_SIZE))
    requests = list_requests(page)

    page.goto(f"{server.base_url}/#/nodes")
    expect(page.locator(".node-card")).to_have_count(PAGE_SIZE)
    elapsed = rendered_ms(page)
    print(f"node page of {NODES} nodes: first page on screen {elapsed:.0f} ms after navigation start")
    assert elapsed < RENDER_LIMIT_MS, f"the node page took {elapsed:.0f} ms to render"
    expect(page.locator("#node-count")).to_have_text(f"1{DASH}{PAGE_SIZE} of {NODES} nodes")
    # one request, for one page
    assert len(requests) == 1, requests
    assert requests[0]["limit"] == [str(PAGE_SIZE)]
    assert requests[0]["offset"] == ["0"]

    expect(page.locator("#live-state")).to_have_attribute("data-live", "true")
    target = "node-00003"
    expect(card(page, target).locator(".badge").first).to_have_text("Online")

    # an admin drains the node: its card changes without the list being fetched again, and the
    # keyboard focus on it stays
    card(page, target).locator(".node-link").focus()
    api.send(Calls.patch_node(target, m.NodePatch(status="draining", labels={"team": "blue"})))
    expect(card(page, target).locator(".badge").first).to_have_text("Draining")
    expect(card(page, target).locator(".node-link")).to_be_focused()
    expect(card(page, target)).to_have_attribute("data-status", "draining")
    expect(card(page, target).locator(".chip")).to_contain_text(["team=blue"])
    # ... and back
    api.send(Calls.patch_node(target, m.NodePatch(status="online")))
    expect(card(page, target).locator(".badge").first).to_have_text("Online")
    # a change to a node on another page changes nothing shown, and fetches nothing either
    api.send(Calls.patch_node("node-09999", m.NodePatch(status="draining")))
    page.wait_for_timeout(300)
    assert len(requests) == 1, f"the list was fetched again: {requests}"

    # the refresh loop ticks (every 5 s) without fetching while the stream is live
    page.evaluate("window.dispatchEvent(new Event('console:refresh'))")
    page.wait_for_timeout(200)
    assert len(requests) == 1, f"the list was fetched again: {requests}"

    # the next page is one more request for one more page
    page.click("#page-next")
    expect(card(page, "node-00050")).to_have_count(1)
    expect(page.locator("#node-count")).to_have_text(f"51{DASH}{2 * PAGE_SIZE} of {NODES} nodes")
    assert len(requests) == 2, requests
    assert requests[1]["offset"] == [str(PAGE_SIZE)]


def test_filters_and_search_run_on_the_server(page: Page, server: ServerProcess, api: Client) -> None:
    requests = list_requests(page)
    page.goto(f"{server.base_url}/#/nodes")
    expect(page.locator(".node-card")).to_have_count(PAGE_SIZE)

    page.fill("#filter-search", "node-0999")
    expect(page.locator(".node-card")).to_have_count(10)
    expect(page.locator("#node-count")).to_have_text(f"1{DASH}10 of 10 nodes")
    assert requests[-1]["q"] == ["node-0999"]

    page.fill("#filter-search", "")
    page.fill("#filter-selector", "rack=r3")
    expect(page.locator("#node-count")).to_have_text(f"1{DASH}{PAGE_SIZE} of {NODES // 10} nodes")
    expect(card(page, "node-00003")).to_have_count(1)
    assert requests[-1]["selector"] == ["rack=r3"]

    # a node that stops matching the status filter is marked, not silently dropped
    page.select_option("#filter-status", "online")
    expect(page.locator("#node-count")).to_contain_text("of ")
    expect(card(page, "node-00013")).to_have_count(1)
    fetched = len(requests)
    api.send(Calls.patch_node("node-00013", m.NodePatch(status="draining")))
    expect(card(page, "node-00013").locator(".stale-note")).to_be_visible()
    assert len(requests) == fetched
    api.send(Calls.patch_node("node-00013", m.NodePatch(status="online")))
    expect(card(page, "node-00013").locator(".stale-note")).to_have_count(0)


def test_after_a_server_restart_the_page_resyncs_once_and_goes_on_live(
    page: Page, server: ServerProcess, api: Client
) -> None:
    """Runs last in this module: it restarts the module's server (same port, same database)."""
    requests = list_requests(page)
    page.goto(f"{server.base_url}/#/nodes")
    expect(page.locator("#live-state")).to_have_attribute("data-live", "true")
    assert len(requests) == 1

    # the server stops with the stream open: it ends the stream and exits on SIGTERM (uvicorn
    # re-raises the signal once it has shut down) without being killed
    stopped = time.monotonic()
    assert server.stop() in (0, -signal.SIGTERM)
    stopping = time.monotonic() - stopped
    assert "graceful shutdown" not in server.log().lower(), f"stopping took {stopping:.1f} s"
    expect(page.locator("#live-state")).to_have_attribute("data-live", "false")
    server.start()
    # changed while the page was away from the server: the restarted server cannot replay
    # what it never saw, so it tells the reconnecting stream to resync and the page reloads
    api.send(Calls.patch_node("node-00007", m.NodePatch(status="draining")))
    expect(page.locator("#live-state")).to_have_attribute("data-live", "true")
    expect(card(page, "node-00007")).to_have_attribute("data-status", "draining")
    fetched = len(requests)
    assert fetched >= 2, requests
    # and then live again, without fetching
    api.send(Calls.patch_node("node-00007", m.NodePatch(status="online")))
    expect(card(page, "node-00007")).to_have_attribute("data-status", "online")
    page.wait_for_timeout(300)
    assert len(requests) == fetched, requests
