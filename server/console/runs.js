// "Runs" page (list with a status filter) and the run detail page (facts, logs, events).

import { api } from "./api.js";
import { facts, h, labelChips, message, replaceChildren, runStatusBadge } from "./dom.js";
import { absoluteTime, relativeTime, t } from "./i18n.js";

const RUN_STATUSES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "lost"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "lost"]);
const LIST_LIMIT = 100;

// the page keeps the latest lines only, so a chatty run cannot exhaust the tab's memory
const MAX_LOG_LINES = 5000;

const filters = { status: "" };

function nodeLink(nodeId) {
  if (!nodeId) return h("span", { class: "muted" }, t("common.empty"));
  return h("a", { class: "mono", href: `#/nodes/${encodeURIComponent(nodeId)}` }, nodeId);
}

function runRow(run) {
  const href = `#/runs/${encodeURIComponent(run.id)}`;
  return h(
    "tr",
    { class: "clickable", dataset: { runId: run.id }, onclick: (event) => {
      if (!event.target.closest("a")) location.hash = href;
    } },
    h("td", { class: "mono" }, h("a", { href }, run.id)),
    h("td", {}, runStatusBadge(run.status)),
    h("td", { class: "mono wrap" }, run.image),
    h("td", {}, nodeLink(run.node_id)),
    h("td", { title: run.created_at }, relativeTime(run.created_at)),
    h("td", { class: "num" }, run.exit_code ?? ""),
  );
}

export function runsView() {
  const statusSelect = h(
    "select",
    { id: "runs-filter-status", "aria-label": t("runs.status") },
    h("option", { value: "" }, t("runs.allStatuses")),
    RUN_STATUSES.map((status) => h("option", { value: status }, t(`runStatus.${status}`))),
  );
  statusSelect.value = filters.status;
  const count = h("span", { class: "muted count" });
  const table = h("div", { id: "runs-table" }, h("p", { class: "muted" }, t("common.loading")));
  const view = {
    element: h(
      "section",
      { class: "page" },
      h("div", { class: "page-header" }, h("h1", {}, t("runs.title")), count),
      h("div", { class: "toolbar" }, h("label", { class: "field inline" }, h("span", {}, t("runs.status")), statusSelect)),
      table,
    ),
    async refresh() {
      const list = await api.listRuns({ status: filters.status, limit: LIST_LIMIT });
      count.textContent = t("runs.count", { shown: list.items.length, total: list.total });
      if (!list.items.length) {
        replaceChildren(table, h("p", { class: "empty" }, t("runs.empty")));
        return;
      }
      replaceChildren(
        table,
        h(
          "table",
          { class: "table" },
          h("thead", {}, h("tr", {}, [t("runs.id"), t("runs.status"), t("runs.image"), t("runs.node"), t("runs.created"), t("runs.exitCode")].map((text) => h("th", {}, text)))),
          h("tbody", {}, list.items.map(runRow)),
        ),
      );
    },
  };
  statusSelect.addEventListener("change", () => {
    filters.status = statusSelect.value;
    view.refresh().catch(() => {});
  });
  return view;
}

function eventData(event) {
  const entries = Object.entries(event.data || {});
  return entries.map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`).join("  ");
}

export function runDetailView(runId) {
  const header = h("div", { class: "page-header" }, h("h1", { class: "mono" }, runId));
  const summary = h("section", { class: "panel", id: "run-summary" }, h("p", { class: "muted" }, t("common.loading")));
  const logs = h("pre", { class: "logs", id: "run-logs" }, t("run.noLogs"));
  const eventsBody = h("tbody", {});
  const eventsEmpty = h("p", { class: "muted" }, t("run.noEvents"));
  let lastSeq = 0;
  let finished = false;

  const appendEvents = (items) => {
    for (const event of items) {
      if (event.seq <= lastSeq) continue;
      lastSeq = event.seq;
      if (event.type === "log") {
        if (logs.dataset.hasOutput !== "1") {
          logs.textContent = "";
          logs.dataset.hasOutput = "1";
        }
        const text = String(event.data?.text ?? "");
        const line = h("span", { class: event.data?.stream === "stderr" ? "stderr" : "stdout" }, text.endsWith("\n") ? text : `${text}\n`);
        logs.append(line);
        if (logs.childElementCount > MAX_LOG_LINES) logs.firstElementChild.remove();
      } else {
        eventsEmpty.hidden = true;
        eventsBody.append(
          h(
            "tr",
            {},
            h("td", { class: "num" }, event.seq),
            h("td", { title: event.at }, absoluteTime(event.at)),
            h("td", {}, h("span", { class: "event-type" }, event.type)),
            h("td", { class: "mono wrap" }, eventData(event)),
          ),
        );
      }
    }
  };

  return {
    element: h(
      "section",
      { class: "page" },
      h("a", { class: "back-link", href: "#/runs" }, `← ${t("run.back")}`),
      header,
      summary,
      h("section", { class: "panel" }, h("h2", {}, t("run.logs")), logs),
      h(
        "section",
        { class: "panel" },
        h("h2", {}, t("run.events")),
        h(
          "table",
          { class: "table compact", id: "run-events" },
          h("thead", {}, h("tr", {}, [t("event.seq"), t("event.at"), t("event.type"), t("event.data")].map((text) => h("th", {}, text)))),
          eventsBody,
        ),
        eventsEmpty,
      ),
    ),
    async refresh() {
      let run;
      try {
        run = await api.getRun(runId);
      } catch (error) {
        if (error.status === 404) {
          replaceChildren(summary, message("error", t("run.notFound", { id: runId })));
          return;
        }
        throw error;
      }
      replaceChildren(header, h("div", { class: "title-row" }, h("h1", { class: "mono" }, run.id), runStatusBadge(run.status)));
      replaceChildren(
        summary,
        facts([
          [t("runs.status"), runStatusBadge(run.status)],
          [t("runs.image"), h("span", { class: "mono" }, run.image)],
          [t("run.command"), h("code", {}, (run.command || []).join(" ") || t("common.empty"))],
          [t("runs.node"), nodeLink(run.node_id)],
          [t("run.selector"), labelChips(run.node_selector)],
          [t("runs.created"), absoluteTime(run.created_at)],
          [t("run.started"), absoluteTime(run.started_at)],
          [t("run.finished"), absoluteTime(run.finished_at)],
          [t("runs.exitCode"), run.exit_code ?? t("common.empty")],
          [t("run.message"), run.message],
        ]),
      );
      if (finished) return;
      const page = await api.runEvents(runId, lastSeq);
      appendEvents(page.items);
      // one more fetch after the run ended picks up its last events; then stop polling them
      finished = TERMINAL.has(run.status) && !page.items.length;
    },
  };
}
