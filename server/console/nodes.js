// "Nodes" page: filters, one page of node cards, and live updates from the node stream.
//
// The server filters and pages (status, label selector, id search; PAGE_SIZE cards a page), so
// a fleet of any size costs one small request. While the live stream (GET /api/v1/watch/nodes,
// server-sent events) is open, the page never fetches the list again: each `node` event updates
// the card it names in place, `deleted` removes it, and only `resync` (changes were missed)
// reloads the page. While the stream is down the page falls back to the refresh loop.

import { api, canChange, watchNodes } from "./api.js";
import { button, h, heldBackBadge, labelChips, message, replaceChildren, resourceSummary, statusBadge } from "./dom.js";
import { relativeTime, t } from "./i18n.js";
import { openEditDialog } from "./node-actions.js";

export const PAGE_SIZE = 50;
const RENDERED_MARK = "console:nodes-rendered";
// survives navigation and language switches
const filters = { status: "", selector: "", q: "", offset: 0 };
const INPUT_DEBOUNCE_MS = 400;

function capacityMeter(node) {
  const max = node.capacity.max_concurrent;
  const percent = max > 0 ? Math.min(100, Math.round((node.running / max) * 100)) : 0;
  const fill = h("div", { class: `meter-fill${percent >= 100 ? " full" : ""}` });
  fill.style.width = `${percent}%`; // CSSOM, which the page's CSP allows (inline style attributes it does not)
  const name = t("nodes.capacityMeter", { running: node.running, max });
  return h(
    "div",
    { class: "capacity" },
    h("span", { class: "capacity-text", "aria-hidden": "true" }, `${node.running}/${max}`),
    h(
      "div",
      {
        class: "meter",
        role: "meter",
        "aria-label": name,
        "aria-valuemin": 0,
        "aria-valuemax": max,
        "aria-valuenow": Math.min(node.running, max),
        "aria-valuetext": name,
      },
      fill,
    ),
  );
}

// Heartbeats that change nothing else are not streamed, so a live card could not keep an online
// node's heartbeat age current. It does not need to: a node is online or draining only while its
// last heartbeat is younger than NODE_OFFLINE_AFTER (and the stream says when that ends), so
// those cards say the heartbeat is on time; an offline node's age is exact, it sends none.
function heartbeatText(node) {
  if (node.status !== "offline") return t("nodes.heartbeatOnTime");
  return `${t("nodes.heartbeat")}: ${relativeTime(node.last_heartbeat_at)}`;
}

function nodeCard(node, { stale = false } = {}) {
  const resources = resourceSummary(node);
  const href = `#/nodes/${encodeURIComponent(node.id)}`;
  const card = h(
    "article",
    {
      class: `card node-card status-border-${node.status}${stale ? " stale" : ""}`,
      dataset: { nodeId: node.id, status: node.status },
    },
    h(
      "header",
      { class: "card-header" },
      h("a", { class: "card-title node-link", href }, node.id),
      h("span", { class: "badges" }, statusBadge(node.status), heldBackBadge(node)),
    ),
    stale ? h("p", { class: "stale-note" }, t("nodes.noLongerMatches")) : null,
    h(
      "div",
      { class: "card-row" },
      h("span", { class: "card-label" }, t("nodes.labels")),
      labelChips(node.labels),
    ),
    h(
      "div",
      { class: "card-row" },
      h("span", { class: "card-label" }, t("nodes.capacity")),
      capacityMeter(node),
    ),
    resources
      ? h(
          "div",
          { class: "card-row" },
          h("span", { class: "card-label" }, t("nodes.resources")),
          h("span", { class: "resources mono" }, resources),
        )
      : null,
    h(
      "footer",
      { class: "card-footer" },
      h("span", { class: "heartbeat", title: node.last_heartbeat_at || "" }, heartbeatText(node)),
      // a viewer gets no control that changes anything (absent, not disabled)
      canChange()
        ? button(t("action.edit"), (event) => {
            event.stopPropagation();
            openEditDialog(node);
          }, { kind: "ghost", class: "btn btn-ghost card-edit", "aria-label": `${t("action.edit")} ${node.id}` })
        : null,
    ),
  );
  card.addEventListener("click", (event) => {
    if (!event.target.closest("a, button")) location.hash = href;
  });
  return card;
}

// Whether a node (as a change event describes it) still belongs under the current filters.
function matchesFilters(node) {
  if (filters.status && node.status !== filters.status) return false;
  if (filters.q && !node.id.includes(filters.q)) return false;
  for (const pair of filters.selector.split(",")) {
    const [key, ...rest] = pair.split("=");
    if (!key.trim() || !rest.length) continue;
    if ((node.labels || {})[key.trim()] !== rest.join("=").trim()) return false;
  }
  return true;
}

export function nodesView() {
  const statusSelect = h(
    "select",
    { id: "filter-status" },
    h("option", { value: "" }, t("nodes.filter.all")),
    ["online", "offline", "draining"].map((status) => h("option", { value: status }, t(`status.${status}`))),
  );
  statusSelect.value = filters.status;
  const selectorInput = h("input", {
    id: "filter-selector",
    type: "search",
    placeholder: t("nodes.filter.selectorPlaceholder"),
    value: filters.selector,
  });
  const searchInput = h("input", {
    id: "filter-search",
    type: "search",
    placeholder: t("nodes.filter.searchPlaceholder"),
    value: filters.q,
    maxlength: 253,
  });
  const count = h("span", { class: "muted count", id: "node-count", "aria-live": "polite" });
  const live = h("span", { class: "live-state", id: "live-state", "data-live": "connecting" }, t("nodes.liveConnecting"));
  const feedback = h("div", {});
  const grid = h("div", { class: "card-grid", id: "node-grid" }, h("p", { class: "muted" }, t("common.loading")));
  const prev = button(t("nodes.page.prev"), () => turnPage(-1), { id: "page-prev", disabled: true });
  const next = button(t("nodes.page.next"), () => turnPage(1), { id: "page-next", disabled: true });
  const pager = h("nav", { class: "pager", "aria-label": t("nodes.pager") }, prev, next);
  let debounce = null;
  let generation = 0;
  let loaded = false; // the page shown came from the server and the stream keeps it current
  let total = 0;
  const shown = new Map(); // node id -> the node as last shown
  let stream = null;
  let position = null; // {epoch, seq}: the stream position of the list shown
  let loading = 0;
  const pending = new Map(); // node id -> [change or null (deleted), event id]: arrived while loading

  function showCount() {
    if (!total) {
      count.textContent = t("nodes.countNone");
      return;
    }
    count.textContent = t("nodes.count", {
      first: filters.offset + 1,
      last: filters.offset + shown.size,
      total,
    });
    prev.disabled = filters.offset <= 0;
    next.disabled = filters.offset + PAGE_SIZE >= total;
  }

  function setLive(on) {
    live.dataset.live = on ? "true" : "false";
    live.textContent = t(on ? "nodes.live" : "nodes.liveOff");
  }

  async function load() {
    loading += 1;
    try {
      await loadPage();
    } finally {
      loading -= 1;
      if (!loading) pending.clear();
    }
  }

  async function loadPage() {
    const mine = ++generation;
    let list;
    try {
      list = await api.listNodes({
        status: filters.status,
        selector: filters.selector,
        q: filters.q,
        limit: PAGE_SIZE,
        offset: filters.offset,
      });
    } catch (error) {
      if (error.status === 400 && mine === generation) {
        replaceChildren(feedback, message("error", error.detail));
        return;
      }
      throw error;
    }
    if (mine !== generation) return; // a newer filter answered first
    if (!list.items.length && list.total > 0 && filters.offset > 0) {
      // the page emptied (nodes went away): show the last page there is
      filters.offset = Math.max(0, Math.floor((list.total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return loadPage();
    }
    replaceChildren(feedback);
    total = list.total;
    shown.clear();
    for (const node of list.items) shown.set(node.id, node);
    loaded = true;
    if (!list.items.length) {
      replaceChildren(grid, h("p", { class: "empty" }, t("nodes.empty")));
    } else {
      replaceChildren(grid, list.items.map((node) => nodeCard(node)));
    }
    showCount();
    position = parsePosition(list.stream_position);
    // changes that arrived while the list was on its way and are newer than it
    for (const [id, [change, seq]] of pending) {
      if (!newerThanList(seq)) continue;
      if (change) applyChange(change);
      else applyDeleted(id);
    }
    pending.clear();
    if (!stream) openStream(list.stream_position);
    // when the first page of nodes was on screen, in ms since the navigation started (bench/ and
    // the browser tests read it)
    if (!performance.getEntriesByName(RENDERED_MARK).length) performance.mark(RENDERED_MARK);
  }

  function parsePosition(text) {
    const [epoch, seq] = String(text || "").split(":");
    return epoch && seq ? { epoch, seq: Number(seq) } : null;
  }

  // Whether a stream event (id "epoch:seq") is newer than the list shown; when that cannot be
  // told (another replica's numbering), it is applied: a change is the node's whole state.
  function newerThanList(eventId) {
    const event = parsePosition(eventId);
    if (!event || !position || event.epoch !== position.epoch) return true;
    return event.seq > position.seq;
  }

  function onNode(change, eventId) {
    if (loading) pending.set(change.id, [change, eventId]);
    else applyChange(change);
  }

  function onDeleted(nodeId, eventId) {
    if (loading) pending.set(nodeId, [null, eventId]);
    else applyDeleted(nodeId);
  }

  function applyChange(change) {
    const before = shown.get(change.id);
    if (!before) return; // not on this page: nothing shown changes
    const node = { ...before, ...change };
    shown.set(node.id, node);
    const old = grid.querySelector(`.node-card[data-node-id="${CSS.escape(node.id)}"]`);
    if (!old) return;
    const fresh = nodeCard(node, { stale: !matchesFilters(node) });
    // keyboard focus stays where it was: on the card's link or its Edit button
    const focused = old.contains(document.activeElement) ? document.activeElement : null;
    old.replaceWith(fresh);
    if (focused) fresh.querySelector(focused.classList.contains("card-edit") ? ".card-edit" : ".node-link")?.focus();
  }

  function applyDeleted(nodeId) {
    if (!shown.delete(nodeId)) return;
    grid.querySelector(`.node-card[data-node-id="${CSS.escape(nodeId)}"]`)?.remove();
    total = Math.max(0, total - 1);
    showCount();
  }

  function openStream(since) {
    stream?.close();
    stream = watchNodes(since, {
      onOpen: () => setLive(true),
      onNode,
      onDeleted,
      onResync: () => load().catch(() => {}),
      // the refresh loop loads the page until the stream is back (and resumes where it left off)
      onDown: () => setLive(false),
    });
  }

  function reload() {
    loaded = false;
    view.refresh().catch(() => {});
  }

  function turnPage(direction) {
    filters.offset = Math.max(0, filters.offset + direction * PAGE_SIZE);
    reload();
  }

  const view = {
    element: h(
      "section",
      { class: "page" },
      h("div", { class: "page-header" }, h("h1", {}, t("nodes.title")), h("div", { class: "page-meta" }, count, live)),
      h(
        "div",
        { class: "toolbar" },
        h("label", { class: "field inline" }, h("span", {}, t("nodes.filter.status")), statusSelect),
        h("label", { class: "field inline grow" }, h("span", {}, t("nodes.filter.selector")), selectorInput),
        h("label", { class: "field inline grow" }, h("span", {}, t("nodes.filter.search")), searchInput),
      ),
      feedback,
      grid,
      pager,
    ),
    async refresh() {
      if (loaded && live.dataset.live === "true") {
        // live: nothing to fetch; only the relative times move on
        for (const element of grid.querySelectorAll(".node-card")) {
          const node = shown.get(element.dataset.nodeId);
          const heartbeat = element.querySelector(".heartbeat");
          if (node && heartbeat) heartbeat.textContent = heartbeatText(node);
        }
        return;
      }
      await load();
    },
    unmount() {
      clearTimeout(debounce);
      stream?.close();
      stream = null;
    },
  };

  statusSelect.addEventListener("change", () => {
    filters.status = statusSelect.value;
    filters.offset = 0;
    clearTimeout(debounce);
    reload();
  });
  const onTyped = (input, key) =>
    input.addEventListener("input", () => {
      // the filter is taken at once, the request waits for a pause in typing
      filters[key] = input.value.trim();
      filters.offset = 0;
      clearTimeout(debounce);
      debounce = setTimeout(reload, INPUT_DEBOUNCE_MS);
    });
  onTyped(selectorInput, "selector");
  onTyped(searchInput, "q");
  return view;
}
