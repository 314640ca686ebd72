// Node changes shared by the card grid and the detail page: edit, drain/undrain, delete.

import { api } from "./api.js";
import { button, h, message, openDialog, replaceChildren, setBusy, toast } from "./dom.js";
import { t } from "./i18n.js";

export function requestRefresh() {
  window.dispatchEvent(new Event("console:refresh"));
}

function errorText(error) {
  return error.detail || error.message || String(error);
}

function labelRow(key = "", value = "") {
  const row = h(
    "div",
    { class: "kv-row label-row" },
    h("input", { class: "label-key", "aria-label": t("edit.key"), placeholder: t("edit.key"), value: key }),
    h("span", { class: "kv-sep" }, "="),
    h("input", { class: "label-value", "aria-label": t("edit.value"), placeholder: t("edit.value"), value }),
  );
  row.append(button("✕", () => row.remove(), { kind: "ghost", class: "btn btn-ghost remove-row", title: t("edit.remove"), "aria-label": t("edit.remove") }));
  return row;
}

// JSON merge patch of the labels: changed or new keys with their value, removed keys with null.
export function labelsPatch(before, after) {
  const patch = {};
  for (const key of Object.keys(before)) {
    if (!(key in after)) patch[key] = null;
  }
  for (const [key, value] of Object.entries(after)) {
    if (before[key] !== value) patch[key] = value;
  }
  return patch;
}

function readLabels(rowsElement) {
  const labels = {};
  for (const row of rowsElement.querySelectorAll(".label-row")) {
    const key = row.querySelector(".label-key").value.trim();
    const value = row.querySelector(".label-value").value.trim();
    if (!key && !value) continue;
    if (key in labels) throw new Error(`duplicate label key: ${key}`);
    labels[key] = value;
  }
  return labels;
}

export function openEditDialog(node) {
  const rows = h("div", { class: "kv-rows", id: "edit-labels" });
  for (const [key, value] of Object.entries(node.labels).sort(([a], [b]) => a.localeCompare(b))) {
    rows.append(labelRow(key, value));
  }
  const status = h(
    "select",
    { id: "edit-status", name: "status" },
    h("option", { value: "online" }, t("status.online")),
    h("option", { value: "draining" }, t("status.draining")),
  );
  const wasDraining = node.draining || node.status === "draining";
  status.value = wasDraining ? "draining" : "online";
  const feedback = h("div", { class: "dialog-feedback" });

  const save = async (saveButton, close) => {
    replaceChildren(feedback);
    let labels;
    try {
      labels = readLabels(rows);
    } catch (error) {
      replaceChildren(feedback, message("error", error.message));
      return;
    }
    const patch = { resource_version: node.resource_version };
    const labelChanges = labelsPatch(node.labels, labels);
    if (Object.keys(labelChanges).length) patch.labels = labelChanges;
    if ((status.value === "draining") !== wasDraining) patch.status = status.value;
    setBusy(saveButton, true);
    try {
      await api.patchNode(node.id, patch);
      close();
      toast(t("edit.saved", { id: node.id }));
      requestRefresh();
    } catch (error) {
      const text = error.status === 409 ? `${t("edit.stale")} (${errorText(error)})` : errorText(error);
      replaceChildren(feedback, message("error", text));
    } finally {
      setBusy(saveButton, false);
    }
  };

  openDialog({
    title: t("edit.title", { id: node.id }),
    className: "dialog-edit",
    body: [
      h("fieldset", { class: "fieldset" }, h("legend", {}, t("edit.labels")), rows,
        button(`+ ${t("edit.addLabel")}`, () => rows.append(labelRow()), { kind: "link", id: "add-label" })),
      h("label", { class: "field" }, h("span", {}, t("edit.status")), status),
      feedback,
    ],
    actions: (close) => {
      const saveButton = button(t("common.save"), () => save(saveButton, close), { kind: "primary", type: "submit", id: "edit-save" });
      return [button(t("common.cancel"), close, { id: "edit-cancel" }), saveButton];
    },
  });
}

export async function setDraining(node, draining, trigger) {
  setBusy(trigger, true);
  try {
    await api.patchNode(node.id, { status: draining ? "draining" : "online" });
    toast(t(draining ? "action.drained" : "action.undrained", { id: node.id }));
    requestRefresh();
  } catch (error) {
    toast(errorText(error), "error");
  } finally {
    setBusy(trigger, false);
  }
}

// Resolves true when the node was deleted.
export function openDeleteDialog(node) {
  const feedback = h("div", { class: "dialog-feedback" });
  let deleted = false;
  const remove = async (deleteButton, close) => {
    replaceChildren(feedback);
    setBusy(deleteButton, true);
    try {
      await api.deleteNode(node.id);
      deleted = true;
      close();
      toast(t("delete.done", { id: node.id }));
    } catch (error) {
      replaceChildren(feedback, message("error", errorText(error)));
    } finally {
      setBusy(deleteButton, false);
    }
  };
  const { closed } = openDialog({
    title: t("delete.title", { id: node.id }),
    className: "dialog-delete",
    body: [h("p", {}, t("delete.body")), feedback],
    actions: (close) => {
      const deleteButton = button(t("common.delete"), () => remove(deleteButton, close), { kind: "danger", id: "delete-confirm" });
      return [button(t("common.cancel"), close, { id: "delete-cancel" }), deleteButton];
    },
  });
  return closed.then(() => deleted);
}

export function nodeActionButtons(node, { onDeleted } = {}) {
  const draining = node.draining || node.status === "draining";
  const drainButton = button(
    t(draining ? "action.undrain" : "action.drain"),
    () => setDraining(node, !draining, drainButton),
    { id: draining ? "undrain-node" : "drain-node" },
  );
  return h(
    "div",
    { class: "actions" },
    button(t("action.edit"), () => openEditDialog(node), { id: "edit-node" }),
    drainButton,
    button(
      t("action.delete"),
      async () => {
        if (await openDeleteDialog(node)) onDeleted?.();
      },
      { kind: "danger-outline", id: "delete-node" },
    ),
  );
}
