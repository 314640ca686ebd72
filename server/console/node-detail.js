// Node detail page: basic info, labels, capacity, node info, current runs, proxy test, env config.

import { api, canChange } from "./api.js";
import {
  conditionList,
  facts,
  h,
  heldBackBadge,
  labelChips,
  message,
  replaceChildren,
  resourceSummary,
  runStatusBadge,
  statusBadge,
} from "./dom.js";
import { envConfigPanel, proxyResultView } from "./env-config.js";
import { absoluteTime, relativeTime, t } from "./i18n.js";
import { nodeActionButtons } from "./node-actions.js";

const ACTIVE_RUN_STATUSES = ["scheduled", "running"];

function panel(title, id, ...content) {
  return h("section", { class: "panel", id }, h("h2", {}, title), ...content);
}

function timeWithRelative(iso) {
  if (!iso) return t("common.never");
  return h("span", { title: iso }, `${absoluteTime(iso)} (${relativeTime(iso)})`);
}

function runsTable(runs) {
  if (!runs.length) return h("p", { class: "muted", id: "node-runs-empty" }, t("node.noRuns"));
  return h(
    "table",
    { class: "table", id: "node-runs" },
    h("thead", {}, h("tr", {}, [t("runs.id"), t("runs.status"), t("runs.image"), t("runs.created")].map((text) => h("th", {}, text)))),
    h(
      "tbody",
      {},
      runs.map((run) =>
        h(
          "tr",
          {},
          h("td", { class: "mono" }, h("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id)),
          h("td", {}, runStatusBadge(run.status)),
          h("td", { class: "mono wrap" }, run.image),
          h("td", { title: run.created_at }, relativeTime(run.created_at)),
        ),
      ),
    ),
  );
}

export function nodeDetailView(nodeId) {
  const heading = h("div", { class: "page-header" }, h("h1", { class: "mono" }, nodeId));
  const body = h("div", { class: "detail-grid" }, h("p", { class: "muted" }, t("common.loading")));
  const env = envConfigPanel(nodeId);
  let sections = null;

  const build = () => {
    sections = {
      status: h("span", {}),
      actions: h("div", {}),
      basic: panel(t("node.basic"), "node-basic"),
      labels: panel(t("node.labels"), "node-labels"),
      info: panel(t("node.info"), "node-info"),
      conditions: panel(t("node.conditions"), "node-conditions"),
      runs: panel(t("node.runs"), "node-runs-panel"),
      proxy: panel(t("node.lastProxyTest"), "node-proxy-test"),
    };
    replaceChildren(
      heading,
      h("div", { class: "title-row" }, h("h1", { class: "mono", id: "node-title" }, nodeId), sections.status),
      sections.actions,
    );
    replaceChildren(
      body,
      h(
        "div",
        { class: "detail-column" },
        sections.basic,
        sections.conditions,
        sections.labels,
        sections.info,
        sections.proxy,
      ),
      h("div", { class: "detail-column" }, sections.runs, env.element),
    );
  };

  const fillSection = (section, ...content) => {
    section.replaceChildren(section.firstChild);
    for (const child of content) if (child) section.append(child);
  };

  const render = (node, runs) => {
    if (!sections) build();
    replaceChildren(sections.status, statusBadge(node.status), heldBackBadge(node));
    // edit, drain and delete are for admins; a viewer's page has no such controls at all
    if (canChange()) {
      replaceChildren(sections.actions, nodeActionButtons(node, { onDeleted: () => (location.hash = "#/nodes") }));
    } else {
      replaceChildren(sections.actions);
    }
    fillSection(
      sections.basic,
      facts([
        [t("node.id"), h("span", { class: "mono" }, node.id)],
        [t("node.status"), statusBadge(node.status)],
        [t("node.schedulable"), t(node.schedulable ? "common.yes" : "common.no")],
        [t("node.created"), timeWithRelative(node.created_at)],
        [t("node.heartbeat"), timeWithRelative(node.last_heartbeat_at)],
        [t("node.capacity"), t("node.capacityValue", { running: node.running, max: node.capacity.max_concurrent })],
        [t("nodes.resources"), resourceSummary(node)],
      ]),
    );
    fillSection(sections.conditions, conditionList(node.conditions));
    fillSection(sections.labels, labelChips(node.labels));
    const info = node.info || {};
    fillSection(
      sections.info,
      facts([
        [t("node.hostname"), info.hostname],
        [t("node.os"), info.os],
        [t("node.arch"), info.arch],
        [t("node.agentVersion"), info.agent_version],
        [t("node.runtime"), info.runtime ? [info.runtime, info.runtime_version].filter(Boolean).join(" ") : null],
      ]),
    );
    fillSection(sections.runs, runsTable(runs));
    fillSection(
      sections.proxy,
      node.last_proxy_test ? proxyResultView(node.last_proxy_test) : h("p", { class: "muted" }, t("node.noProxyTest")),
    );
  };

  return {
    element: h(
      "section",
      { class: "page" },
      h("a", { class: "back-link", href: "#/nodes" }, `← ${t("node.back")}`),
      heading,
      body,
    ),
    async refresh() {
      let node;
      let runs;
      try {
        [node, runs] = await Promise.all([
          api.getNode(nodeId),
          api.nodeRuns(nodeId).catch((error) => (error.status === 404 ? { items: [] } : Promise.reject(error))),
        ]);
      } catch (error) {
        if (error.status === 404) {
          sections = null;
          replaceChildren(body, message("error", t("node.notFound", { id: nodeId })));
          return;
        }
        throw error;
      }
      const active = runs.items.filter((run) => ACTIVE_RUN_STATUSES.includes(run.status));
      render(node, active);
      await env.refresh();
    },
    unmount() {
      env.forget();
    },
  };
}
