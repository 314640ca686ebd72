// "Nodes" page: filters and a grid of node cards.

import { api, canChange } from "./api.js";
import { button, h, heldBackBadge, labelChips, message, replaceChildren, resourceSummary, statusBadge } from "./dom.js";
import { relativeTime, t } from "./i18n.js";
import { openEditDialog } from "./node-actions.js";

// survives navigation and language switches
const filters = { status: "", selector: "" };
const INPUT_DEBOUNCE_MS = 400;

function capacityMeter(node) {
  const max = node.capacity.max_concurrent;
  const percent = max > 0 ? Math.min(100, Math.round((node.running / max) * 100)) : 0;
  const fill = h("div", { class: `meter-fill${percent >= 100 ? " full" : ""}` });
  fill.style.width = `${percent}%`; // CSSOM, which the page's CSP allows (inline style attributes it does not)
  return h(
    "div",
    { class: "capacity" },
    h("span", { class: "capacity-text" }, `${node.running}/${max}`),
    h(
      "div",
      { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": max, "aria-valuenow": node.running },
      fill,
    ),
  );
}

function nodeCard(node) {
  const resources = resourceSummary(node);
  const href = `#/nodes/${encodeURIComponent(node.id)}`;
  const card = h(
    "article",
    { class: `card node-card status-border-${node.status}`, dataset: { nodeId: node.id } },
    h(
      "header",
      { class: "card-header" },
      h("a", { class: "card-title node-link", href }, node.id),
      h("span", { class: "badges" }, statusBadge(node.status), heldBackBadge(node)),
    ),
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
      h(
        "span",
        { class: "heartbeat", title: node.last_heartbeat_at || "" },
        `${t("nodes.heartbeat")}: ${relativeTime(node.last_heartbeat_at)}`,
      ),
      // a viewer gets no control that changes anything (absent, not disabled)
      canChange()
        ? button(t("action.edit"), (event) => {
            event.stopPropagation();
            openEditDialog(node);
          }, { kind: "ghost", class: "btn btn-ghost card-edit" })
        : null,
    ),
  );
  card.addEventListener("click", (event) => {
    if (!event.target.closest("a, button")) location.hash = href;
  });
  return card;
}

export function nodesView() {
  const statusSelect = h(
    "select",
    { id: "filter-status", "aria-label": t("nodes.filter.status") },
    h("option", { value: "" }, t("nodes.filter.all")),
    ["online", "offline", "draining"].map((status) => h("option", { value: status }, t(`status.${status}`))),
  );
  statusSelect.value = filters.status;
  const selectorInput = h("input", {
    id: "filter-selector",
    type: "search",
    placeholder: t("nodes.filter.selectorPlaceholder"),
    "aria-label": t("nodes.filter.selector"),
    value: filters.selector,
  });
  const count = h("span", { class: "muted count" });
  const feedback = h("div", {});
  const grid = h("div", { class: "card-grid", id: "node-grid" }, h("p", { class: "muted" }, t("common.loading")));
  let debounce = null;
  let generation = 0;

  const view = {
    element: h(
      "section",
      { class: "page" },
      h("div", { class: "page-header" }, h("h1", {}, t("nodes.title")), count),
      h(
        "div",
        { class: "toolbar" },
        h("label", { class: "field inline" }, h("span", {}, t("nodes.filter.status")), statusSelect),
        h("label", { class: "field inline grow" }, h("span", {}, t("nodes.filter.selector")), selectorInput),
      ),
      feedback,
      grid,
    ),
    async refresh() {
      const mine = ++generation;
      let list;
      try {
        list = await api.listNodes({ status: filters.status, selector: filters.selector });
      } catch (error) {
        if (error.status === 400 && mine === generation) {
          replaceChildren(feedback, message("error", error.detail));
          return;
        }
        throw error;
      }
      if (mine !== generation) return; // a newer filter answered first
      replaceChildren(feedback);
      count.textContent = t("nodes.count", { shown: list.items.length, total: list.total });
      if (!list.items.length) {
        replaceChildren(grid, h("p", { class: "empty" }, t("nodes.empty")));
        return;
      }
      replaceChildren(grid, list.items.map(nodeCard));
    },
  };

  statusSelect.addEventListener("change", () => {
    filters.status = statusSelect.value;
    view.refresh().catch(() => {});
  });
  selectorInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      filters.selector = selectorInput.value.trim();
      view.refresh().catch(() => {});
    }, INPUT_DEBOUNCE_MS);
  });
  view.unmount = () => clearTimeout(debounce);
  return view;
}
