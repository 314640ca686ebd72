// "Environment config" form of a node: proxy settings, custom variables, save and test proxy.

import { api } from "./api.js";
import { button, h, message, replaceChildren, setBusy, toast } from "./dom.js";
import { absoluteTime, t } from "./i18n.js";

const PROXY_FIELDS = ["http_proxy", "https_proxy", "no_proxy"];
const PROXY_LABELS = { http_proxy: "env.httpProxy", https_proxy: "env.httpsProxy", no_proxy: "env.noProxy" };

// Unsaved form state per node id, kept across re-renders (refresh, language switch, navigation).
const drafts = new Map();

function draftFrom(config) {
  return {
    resourceVersion: config.resource_version ?? null,
    proxy: Object.fromEntries(PROXY_FIELDS.map((field) => [field, config.proxy?.[field] ?? ""])),
    env: Object.entries(config.env || {}).sort(([a], [b]) => a.localeCompare(b)),
    dirty: false,
  };
}

function proxyPayload(proxy) {
  return Object.fromEntries(PROXY_FIELDS.map((field) => [field, proxy[field].trim() || null]));
}

// The server names the bad field in its 400 message: "proxy.http_proxy: ...", "env: variable name 'X' ...".
function errorText(error) {
  return [error.detail, JSON.stringify(error.extra ?? "")].join(" ");
}

function invalidProxyFields(error) {
  const text = errorText(error);
  return PROXY_FIELDS.filter((field) => new RegExp(`\\b${field}\\b`).test(text));
}

function namesEnvVar(error, name) {
  const text = errorText(error);
  return Boolean(name) && (text.includes(`'${name}'`) || text.includes(`env.${name}`));
}

function formatLatency(ms) {
  if (ms === null || ms === undefined) return t("common.empty");
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

export function proxyResultView(result) {
  const reasonKey = `reason.${result.reason}`;
  const reason = t(reasonKey) === reasonKey ? result.reason : t(reasonKey);
  return h(
    "div",
    { class: `proxy-result ${result.ok ? "ok" : "failed"}`, "data-reason": result.reason },
    h(
      "div",
      { class: "proxy-summary" },
      h("span", { class: `badge ${result.ok ? "status-online" : "status-failed"}` }, t(result.ok ? "proxy.ok" : "proxy.failed")),
      h("strong", { class: "proxy-reason" }, reason),
      h("span", { class: "proxy-message" }, result.message),
    ),
    h(
      "p",
      { class: "muted small" },
      t("proxy.tested", { time: absoluteTime(result.tested_at), proxy: result.proxy || t("proxy.direct") }),
    ),
    result.steps?.length
      ? h(
          "table",
          { class: "table compact proxy-steps" },
          h("thead", {}, h("tr", {}, [t("proxy.step"), t("proxy.result"), t("proxy.latency"), t("proxy.detail")].map((text) => h("th", {}, text)))),
          h(
            "tbody",
            {},
            result.steps.map((step) => {
              const outcome = step.ok ? "ok" : step.skipped ? "skipped" : "failed";
              return h(
                "tr",
                { class: `step-${outcome}` },
                h("td", {}, step.name),
                h("td", { class: "nowrap" }, h("span", { class: `dot dot-${outcome}` }),
                  step.ok ? "OK" : step.skipped ? t("proxy.skipped") : "✕",
                  step.status_code ? ` (${step.status_code})` : ""),
                h("td", { class: "num" }, formatLatency(step.latency_ms)),
                h("td", { class: "wrap" }, [step.detail, step.skipped && step.target].filter(Boolean).join(" — ")),
              );
            }),
          ),
        )
      : null,
  );
}

function envRow(name = "", value = "") {
  const row = h(
    "div",
    { class: "kv-row env-row" },
    h("input", { class: "env-name mono", "aria-label": t("env.name"), placeholder: t("env.name"), value: name }),
    h("span", { class: "kv-sep" }, "="),
    h("input", { class: "env-value", "aria-label": t("env.value"), placeholder: t("env.value"), value }),
  );
  return row;
}

export function envConfigForm(nodeId) {
  const feedback = h("div", { class: "form-feedback" });
  const testOutput = h("div", { class: "test-output", id: "proxy-test-output" });
  const dirtyMark = h("span", { class: "dirty-mark", hidden: true }, t("env.unsaved"));
  const proxyInputs = {};
  const fieldErrors = {};
  const envRows = h("div", { class: "kv-rows", id: "env-rows" });
  const form = h("form", { class: "env-form", id: "env-form", novalidate: true });
  let draft = null;

  const syncDraft = () => {
    for (const field of PROXY_FIELDS) draft.proxy[field] = proxyInputs[field].value;
    draft.env = [...envRows.querySelectorAll(".env-row")].map((row) => [
      row.querySelector(".env-name").value,
      row.querySelector(".env-value").value,
    ]);
  };
  const markDirty = () => {
    if (!draft) return;
    syncDraft();
    draft.dirty = true;
    dirtyMark.hidden = false;
  };
  const clearErrors = () => {
    replaceChildren(feedback);
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
    for (const holder of Object.values(fieldErrors)) replaceChildren(holder);
  };
  const addEnvRow = (name, value) => {
    const row = envRow(name, value);
    row.append(button("✕", () => {
      row.remove();
      markDirty();
    }, { kind: "ghost", class: "btn btn-ghost remove-row", title: t("edit.remove"), "aria-label": t("edit.remove") }));
    envRows.append(row);
    return row;
  };
  const fill = () => {
    for (const field of PROXY_FIELDS) proxyInputs[field].value = draft.proxy[field];
    envRows.replaceChildren();
    for (const [name, value] of draft.env) addEnvRow(name, value);
    dirtyMark.hidden = !draft.dirty;
  };
  const readEnv = () => {
    const env = {};
    for (const [name, value] of draft.env) {
      if (!name.trim() && !value) continue;
      env[name.trim()] = value;
    }
    return env;
  };
  const showInvalid = (error) => {
    const proxyFields = invalidProxyFields(error);
    // a message next to the field says it all; otherwise it goes above the buttons
    if (!proxyFields.length) replaceChildren(feedback, message("error", error.detail || error.message));
    for (const field of proxyFields) {
      proxyInputs[field].setAttribute("aria-invalid", "true");
      replaceChildren(fieldErrors[field], error.detail);
    }
    for (const input of envRows.querySelectorAll(".env-name")) {
      if (namesEnvVar(error, input.value.trim())) input.setAttribute("aria-invalid", "true");
    }
  };
  const load = async () => {
    clearErrors();
    draft = draftFrom(await api.getEnvConfig(nodeId));
    drafts.set(nodeId, draft);
    fill();
  };
  let busy = false;
  // Picks up changes made elsewhere, but only while the user has nothing unsaved or in focus.
  const refresh = async () => {
    if (!draft || draft.dirty || busy || form.contains(document.activeElement)) return;
    const latest = await api.getEnvConfig(nodeId);
    if (draft.dirty || busy || latest.resource_version === draft.resourceVersion) return;
    draft = draftFrom(latest);
    drafts.set(nodeId, draft);
    fill();
  };

  const save = async (event) => {
    event?.preventDefault();
    if (!draft) return;
    syncDraft();
    clearErrors();
    const body = { proxy: proxyPayload(draft.proxy), env: readEnv(), resource_version: draft.resourceVersion };
    setBusy(saveButton, true);
    busy = true;
    try {
      const saved = await api.putEnvConfig(nodeId, body);
      draft = draftFrom(saved);
      drafts.set(nodeId, draft);
      fill();
      replaceChildren(feedback, message("success", t("env.saved")));
      toast(t("env.saved"));
    } catch (error) {
      if (error.status === 409) {
        replaceChildren(
          feedback,
          h("div", { class: "message message-error", role: "alert" }, `${t("env.stale")} (${error.detail}) `,
            button(t("common.reload"), () => load().catch(showInvalid), { kind: "link", id: "env-reload" })),
        );
      } else {
        showInvalid(error);
      }
    } finally {
      busy = false;
      setBusy(saveButton, false);
    }
  };

  const testProxy = async () => {
    if (!draft) return;
    syncDraft();
    replaceChildren(testOutput, h("p", { class: "muted testing" }, h("span", { class: "spinner" }), t("env.testing")));
    setBusy(testButton, true);
    try {
      const result = await api.testProxy(nodeId, proxyPayload(draft.proxy));
      replaceChildren(testOutput, proxyResultView(result));
    } catch (error) {
      replaceChildren(testOutput, message("error", error.detail || error.message));
    } finally {
      setBusy(testButton, false);
    }
  };

  const saveButton = button(t("common.save"), null, { kind: "primary", type: "submit", id: "env-save" });
  const testButton = button(t("env.testProxy"), testProxy, { id: "env-test-proxy", title: t("env.testHint") });

  form.append(
    h(
      "fieldset",
      { class: "fieldset" },
      h("legend", {}, t("env.proxy")),
      PROXY_FIELDS.map((field) => {
        const inputId = `env-${field.replace("_", "-")}`;
        proxyInputs[field] = h("input", {
          id: inputId,
          "aria-describedby": `${inputId}-error`,
          name: field,
          class: "mono",
          dataset: { field: `proxy.${field}` },
          placeholder: field === "no_proxy" ? "localhost,127.0.0.1" : "http://proxy.example:3128",
          autocomplete: "off",
        });
        fieldErrors[field] = h("span", { class: "field-error", id: `${inputId}-error`, role: "alert" });
        return h(
          "label",
          { class: "field" },
          h("span", {}, t(PROXY_LABELS[field])),
          proxyInputs[field],
          field === "no_proxy" ? h("small", { class: "hint" }, t("env.noProxyHint")) : null,
          fieldErrors[field],
        );
      }),
    ),
    h(
      "fieldset",
      { class: "fieldset" },
      h("legend", {}, t("env.vars")),
      envRows,
      button(`+ ${t("env.addVar")}`, () => {
        addEnvRow("", "").querySelector("input").focus();
        markDirty();
      }, { kind: "link", id: "env-add-var" }),
    ),
    feedback,
    h("div", { class: "form-actions" }, saveButton, testButton, dirtyMark, h("small", { class: "hint" }, t("env.testHint"))),
    testOutput,
  );
  form.addEventListener("input", markDirty);
  form.addEventListener("submit", save);

  const existing = drafts.get(nodeId);
  const ready = existing?.dirty
    ? Promise.resolve().then(() => {
        draft = existing;
        fill();
      })
    : load().catch((error) => replaceChildren(feedback, message("error", error.detail || error.message)));

  return {
    element: h("section", { class: "panel", id: "env-config" }, h("h2", {}, t("env.title")), form),
    ready,
    refresh,
    forget: () => {
      if (!draft?.dirty) drafts.delete(nodeId);
    },
  };
}
