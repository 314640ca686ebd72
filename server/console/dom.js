// DOM building without innerHTML: every server-provided string lands in a text node or an attribute.

import { t } from "./i18n.js";

// h("div", {class: "x", onclick: fn, dataset: {id: "1"}}, "text", child, [more children])
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

export function replaceChildren(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, t(`status.${status}`));
}

// "CPU 1.5/4 · Memory 2Gi/16Gi": requested of allocatable, for the resources the node reports
export function resourceSummary(node) {
  const parts = [];
  if (node.capacity.cpus != null) {
    parts.push(t("nodes.cpu", { requested: formatCpus(node.requested?.cpus || 0), total: formatCpus(node.capacity.cpus) }));
  }
  if (node.capacity.memory_mb != null) {
    parts.push(t("nodes.memory", { requested: formatMemory(node.requested?.memory_mb || 0), total: formatMemory(node.capacity.memory_mb) }));
  }
  return parts.length ? parts.join(" · ") : null;
}

function formatCpus(cpus) {
  return String(Math.round(cpus * 1000) / 1000);
}

export function formatMemory(mebibytes) {
  if (mebibytes >= 1024) return `${Math.round((mebibytes / 1024) * 10) / 10}Gi`;
  return `${mebibytes}Mi`;
}

// An online node held back (a condition fails, or it is quarantined): a badge beside its status
// whose title says why; null for any other node.
export function heldBackBadge(node) {
  if (node.status !== "online" || node.schedulable !== false) return null;
  const failing = (node.conditions || []).filter((condition) => !condition.ok);
  const why = failing.map((condition) => `${condition.type}: ${condition.message}`).join("\n");
  return h(
    "span",
    { class: "badge status-unschedulable", "data-status": "unschedulable", title: why },
    t("status.unschedulable"),
  );
}

export function conditionList(conditions) {
  if (!conditions || conditions.length === 0) return h("p", { class: "muted" }, t("node.noConditions"));
  return h(
    "ul",
    { class: "conditions" },
    conditions.map((condition) =>
      h(
        "li",
        { class: `condition ${condition.ok ? "condition-ok" : "condition-failing"}`, dataset: { condition: condition.type } },
        h("span", { class: "condition-type mono" }, condition.type),
        h("span", { class: `badge ${condition.ok ? "status-online" : "status-unschedulable"}` }, t(condition.ok ? "condition.ok" : "condition.failing")),
        condition.message ? h("span", { class: "condition-message" }, condition.message) : null,
      ),
    ),
  );
}

export function runStatusBadge(status) {
  return h("span", { class: `badge run-${status}`, "data-status": status }, t(`runStatus.${status}`));
}

export function labelChips(labels) {
  const entries = Object.entries(labels || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h("span", { class: "muted" }, t("nodes.noLabels"));
  return h(
    "ul",
    { class: "chips" },
    entries.map(([key, value]) => h("li", { class: "chip", title: `${key}=${value}` }, `${key}=${value}`)),
  );
}

// A dl of [label, value] pairs; value may be a string or a node.
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? t("common.empty"))]),
  );
}

export function message(kind, text) {
  return h("div", { class: `message message-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

let toastTimer = null;

export function toast(text, kind = "success") {
  const region = document.getElementById("toast");
  replaceChildren(region, h("div", { class: `toast toast-${kind}` }, text));
  region.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    region.hidden = true;
  }, 4000);
}

// A modal <dialog> whose body is built by the caller; resolves when closed.
export function openDialog({ title, body, actions, className = "" }) {
  const dialog = h("dialog", { class: `dialog ${className}` });
  const close = () => dialog.close();
  dialog.append(
    h(
      "form",
      { method: "dialog", class: "dialog-form", onsubmit: (event) => event.preventDefault() },
      h("header", { class: "dialog-header" }, h("h2", {}, title)),
      h("div", { class: "dialog-body" }, body),
      h("footer", { class: "dialog-actions" }, actions(close)),
    ),
  );
  document.body.append(dialog);
  const closed = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue);
    });
  });
  dialog.showModal();
  return { dialog, close, closed };
}

export function button(text, onclick, { kind = "secondary", type = "button", ...attrs } = {}) {
  return h("button", { type, class: `btn btn-${kind}`, onclick, ...attrs }, text);
}

export function setBusy(element, busy) {
  element.disabled = busy;
  element.classList.toggle("busy", busy);
}
