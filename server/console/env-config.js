// "Environment config" of a node: proxy settings, variables and secret variables, save, reveal
// and test proxy for admins; a read-only view of the same for viewers.
//
// Secrets (proxy URL passwords, secret_env values) arrive as `***` and stay that way in the
// form: sending `***` back keeps the stored value. Only Reveal (admin, audited by the server)
// puts the real values in, and only until Hide, a save or leaving the page.

import { api, canChange } from "./api.js";
import { button, facts, h, message, replaceChildren, setBusy, toast } from "./dom.js";
import { absoluteTime, t } from "./i18n.js";

const MASK = "***";
const PROXY_FIELDS = ["http_proxy", "https_proxy", "no_proxy"];
const PROXY_LABELS = { http_proxy: "env.httpProxy", https_proxy: "env.httpsProxy", no_proxy: "env.noProxy" };

// Unsaved form state per node id, kept across re-renders (refresh, language switch, navigation).
const drafts = new Map();

// Signing out drops every unsaved form, revealed values included.
export function forgetDrafts() {
  drafts.clear();
}

function sortedEntries(values) {
  return Object.entries(values || {}).sort(([a], [b]) => a.localeCompare(b));
}

function proxyFrom(config) {
  return Object.fromEntries(PROXY_FIELDS.map((field) => [field, config.proxy?.[field] ?? ""]));
}

function draftFrom(config) {
  return {
    resourceVersion: config.resource_version ?? null,
    proxy: proxyFrom(config),
    env: sortedEntries(config.env),
    secrets: sortedEntries(config.secret_env),
    // the proxy URLs as a plain read shows them (passwords as ***), to tell edits from reveals
    maskedProxy: proxyFrom(config),
    revealed: null, // {proxy, secrets} while the admin has the real values shown
    dirty: false,
  };
}

function proxyPayload(proxy) {
  return Object.fromEntries(PROXY_FIELDS.map((field) => [field, proxy[field].trim() || null]));
}

// The server names the bad field in its 400 message: "proxy.http_proxy: ...", "env: variable
// name 'X' ...", "secret_env: the value of X ...", "secret_env.X is ***, but ...".
function errorText(error) {
  return [error.detail, JSON.stringify(error.extra ?? "")].join(" ");
}

function invalidProxyFields(error) {
  const text = errorText(error);
  return PROXY_FIELDS.filter((field) => new RegExp(`\\b${field}\\b`).test(text));
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// Whether the error is about variable `name` of `list` ("env" or "secret_env").
function namesVar(error, list, name) {
  if (!name) return false;
  const text = errorText(error);
  const quoted = escapeRegExp(name);
  if (new RegExp(`(^|[^\\w])${list}\\.${quoted}\\b`).test(text)) return true;
  if (new RegExp(`(^|[^\\w])${list}:`).test(text) && (text.includes(`'${name}'`) || text.includes(`value of ${name} `))) {
    return true;
  }
  return new RegExp(`^${quoted} is in both env and secret_env`).test(error.detail || "");
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

function removeButton(row, onRemove) {
  return button("✕", () => {
    row.remove();
    onRemove();
  }, { kind: "ghost", class: "btn btn-ghost remove-row", title: t("edit.remove"), "aria-label": t("edit.remove") });
}

function envRow(name = "", value = "") {
  return h(
    "div",
    { class: "kv-row env-row" },
    h("input", { class: "env-name mono", "aria-label": t("env.name"), placeholder: t("env.name"), value: name }),
    h("span", { class: "kv-sep" }, "="),
    h("input", { class: "env-value", "aria-label": t("env.value"), placeholder: t("env.value"), value }),
  );
}

// A secret's value sits in a password input, set as a property: it never becomes an attribute
// of the page's markup.
function secretRow(name, value, shown) {
  const valueInput = h("input", {
    class: "secret-value mono",
    type: shown ? "text" : "password",
    autocomplete: "new-password",
    spellcheck: "false",
    "aria-label": t("env.secretValue"),
    placeholder: t("env.secretValue"),
  });
  valueInput.value = value;
  // typing into a masked value replaces it rather than appending to `***`
  valueInput.addEventListener("focus", () => {
    if (valueInput.value === MASK) valueInput.select();
  });
  return h(
    "div",
    { class: "kv-row secret-row" },
    h("input", { class: "secret-name mono", "aria-label": t("env.name"), placeholder: t("env.name"), value: name, autocomplete: "off" }),
    h("span", { class: "kv-sep" }, "="),
    valueInput,
  );
}

function envConfigForm(nodeId) {
  const feedback = h("div", { class: "form-feedback" });
  const testOutput = h("div", { class: "test-output", id: "proxy-test-output" });
  const dirtyMark = h("span", { class: "dirty-mark", hidden: true }, t("env.unsaved"));
  const proxyInputs = {};
  const fieldErrors = {};
  const envRows = h("div", { class: "kv-rows", id: "env-rows" });
  const secretRows = h("div", { class: "kv-rows", id: "secret-rows" });
  const form = h("form", { class: "env-form", id: "env-form", novalidate: true, autocomplete: "off" });
  let draft = null;

  const rowsOf = (container, nameClass, valueClass) =>
    [...container.querySelectorAll(".kv-row")].map((row) => [
      row.querySelector(nameClass).value,
      row.querySelector(valueClass).value,
    ]);
  const syncDraft = () => {
    for (const field of PROXY_FIELDS) draft.proxy[field] = proxyInputs[field].value;
    draft.env = rowsOf(envRows, ".env-name", ".env-value");
    draft.secrets = rowsOf(secretRows, ".secret-name", ".secret-value");
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
    row.append(removeButton(row, markDirty));
    envRows.append(row);
    return row;
  };
  const addSecretRow = (name, value) => {
    const row = secretRow(name, value, Boolean(draft?.revealed));
    row.append(removeButton(row, markDirty));
    secretRows.append(row);
    return row;
  };
  const fill = () => {
    for (const field of PROXY_FIELDS) proxyInputs[field].value = draft.proxy[field];
    envRows.replaceChildren();
    for (const [name, value] of draft.env) addEnvRow(name, value);
    secretRows.replaceChildren();
    for (const [name, value] of draft.secrets) addSecretRow(name, value);
    dirtyMark.hidden = !draft.dirty;
    revealButton.textContent = t(draft.revealed ? "env.hide" : "env.reveal");
    revealButton.setAttribute("aria-pressed", draft.revealed ? "true" : "false");
  };
  const readVars = (rows) => {
    const values = {};
    for (const [name, value] of rows) {
      if (!name.trim() && !value) continue;
      values[name.trim()] = value;
    }
    return values;
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
      if (namesVar(error, "env", input.value.trim())) input.setAttribute("aria-invalid", "true");
    }
    for (const input of secretRows.querySelectorAll(".secret-name")) {
      if (namesVar(error, "secret_env", input.value.trim())) input.setAttribute("aria-invalid", "true");
    }
  };
  const staleMessage = (detail) =>
    h("div", { class: "message message-error", role: "alert" }, `${t("env.stale")}${detail ? ` (${detail})` : ""} `,
      button(t("common.reload"), () => load().catch(showInvalid), { kind: "link", id: "env-reload" }));
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
    const body = {
      proxy: proxyPayload(draft.proxy),
      env: readVars(draft.env),
      // `***` (untouched) keeps the stored value; anything else replaces it
      secret_env: readVars(draft.secrets),
      resource_version: draft.resourceVersion,
    };
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
      if (error.status === 409) replaceChildren(feedback, staleMessage(error.detail));
      else showInvalid(error);
    } finally {
      busy = false;
      setBusy(saveButton, false);
    }
  };

  // Reveal: the real values replace the `***` still in the form (typed values stay). Hide: the
  // revealed values nobody edited go back to `***`.
  const reveal = async () => {
    if (!draft) return;
    syncDraft();
    clearErrors();
    setBusy(revealButton, true);
    busy = true;
    try {
      let config = await api.revealEnvConfig(nodeId);
      if (config.resource_version !== draft.resourceVersion) {
        if (draft.dirty) {
          replaceChildren(feedback, staleMessage(null));
          return;
        }
        await load(); // changed elsewhere meanwhile: show the current config, then its secrets
        if (config.resource_version !== draft.resourceVersion) config = await api.revealEnvConfig(nodeId);
      }
      const revealed = { proxy: proxyFrom(config), secrets: { ...(config.secret_env || {}) } };
      for (const field of PROXY_FIELDS) {
        if (draft.proxy[field] === draft.maskedProxy[field]) draft.proxy[field] = revealed.proxy[field];
      }
      draft.secrets = draft.secrets.map(([name, value]) =>
        value === MASK && Object.hasOwn(revealed.secrets, name.trim()) ? [name, revealed.secrets[name.trim()]] : [name, value],
      );
      draft.revealed = revealed;
      fill();
    } catch (error) {
      replaceChildren(feedback, message("error", error.detail || error.message));
    } finally {
      busy = false;
      setBusy(revealButton, false);
    }
  };
  const hide = () => {
    syncDraft();
    const { revealed } = draft;
    for (const field of PROXY_FIELDS) {
      if (draft.proxy[field] === revealed.proxy[field]) draft.proxy[field] = draft.maskedProxy[field];
    }
    draft.secrets = draft.secrets.map(([name, value]) =>
      Object.hasOwn(revealed.secrets, name.trim()) && value === revealed.secrets[name.trim()] ? [name, MASK] : [name, value],
    );
    draft.revealed = null;
    fill();
  };

  // Form values that equal the saved config test the saved config, so a proxy password shown as
  // `***` is tested with the stored password rather than with "***".
  const proxyUnchanged = () =>
    PROXY_FIELDS.every(
      (field) =>
        draft.proxy[field] === draft.maskedProxy[field] ||
        (draft.revealed !== null && draft.proxy[field] === draft.revealed.proxy[field]),
    );
  const testProxy = async () => {
    if (!draft) return;
    syncDraft();
    replaceChildren(testOutput, h("p", { class: "muted testing" }, h("span", { class: "spinner" }), t("env.testing")));
    setBusy(testButton, true);
    try {
      const result = await api.testProxy(nodeId, proxyUnchanged() ? null : proxyPayload(draft.proxy));
      replaceChildren(testOutput, proxyResultView(result));
    } catch (error) {
      replaceChildren(testOutput, message("error", error.detail || error.message));
    } finally {
      setBusy(testButton, false);
    }
  };

  const saveButton = button(t("common.save"), null, { kind: "primary", type: "submit", id: "env-save" });
  const testButton = button(t("env.testProxy"), testProxy, { id: "env-test-proxy", title: t("env.testHint") });
  const revealButton = button(t("env.reveal"), () => (draft?.revealed ? hide() : reveal()), {
    id: "env-reveal",
    title: t("env.revealHint"),
    "aria-pressed": "false",
  });

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
          spellcheck: "false",
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
      h("small", { class: "hint block" }, t("env.proxyPasswordHint")),
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
    h(
      "fieldset",
      { class: "fieldset", id: "env-secrets" },
      h("legend", {}, t("env.secrets")),
      h("p", { class: "hint" }, t("env.secretHint")),
      secretRows,
      button(`+ ${t("env.addSecret")}`, () => {
        addSecretRow("", "").querySelector("input").focus();
        markDirty();
      }, { kind: "link", id: "env-add-secret" }),
    ),
    feedback,
    h(
      "div",
      { class: "form-actions" },
      saveButton,
      testButton,
      revealButton,
      dirtyMark,
      h("small", { class: "hint" }, t("env.testHint")),
    ),
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

function varsTable(values, id, emptyKey, masked) {
  const entries = sortedEntries(values);
  if (!entries.length) return h("p", { class: "muted", id: `${id}-empty` }, t(emptyKey));
  return h(
    "table",
    { class: "table compact", id },
    h("thead", {}, h("tr", {}, h("th", {}, t("env.name")), h("th", {}, t("env.value")))),
    h(
      "tbody",
      {},
      entries.map(([name, value]) =>
        h("tr", {}, h("td", { class: "mono" }, name), h("td", { class: `mono wrap${masked ? " masked" : ""}` }, value)),
      ),
    ),
  );
}

// What a viewer sees: the config as text (secrets as the server masks them), and no control.
function envConfigReadOnly(nodeId) {
  const body = h("div", { id: "env-readonly" }, h("p", { class: "muted" }, t("common.loading")));
  let shownVersion;
  const render = (config) => {
    shownVersion = config.resource_version;
    const proxy = config.proxy || {};
    replaceChildren(
      body,
      h("h3", {}, t("env.proxy")),
      facts(PROXY_FIELDS.map((field) => [t(PROXY_LABELS[field]), proxy[field] ? h("span", { class: "mono wrap" }, proxy[field]) : null])),
      h("h3", {}, t("env.vars")),
      varsTable(config.env, "env-vars-table", "env.noVars", false),
      h("h3", {}, t("env.secrets")),
      varsTable(config.secret_env, "env-secrets-table", "env.noSecrets", true),
    );
  };
  const load = async () => {
    const config = await api.getEnvConfig(nodeId);
    if (config.resource_version !== shownVersion) render(config);
  };
  const ready = load().catch((error) => replaceChildren(body, message("error", error.detail || error.message)));
  return {
    element: h("section", { class: "panel", id: "env-config" }, h("h2", {}, t("env.title")), body),
    ready,
    refresh: load,
    forget: () => {},
  };
}

// The node page's env config panel: the form for admins, a read-only view for viewers.
export function envConfigPanel(nodeId) {
  return canChange() ? envConfigForm(nodeId) : envConfigReadOnly(nodeId);
}
