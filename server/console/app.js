// Console shell: hash routing, the auto-refresh loop, the language switch and the token prompt.

import { ApiError, forgetToken, onTokenNeeded, storedToken } from "./api.js";
import { button, h, message, openDialog, replaceChildren } from "./dom.js";
import { language, setLanguage, t } from "./i18n.js";
import { nodeDetailView } from "./node-detail.js";
import { nodesView } from "./nodes.js";
import { runDetailView, runsView } from "./runs.js";

const REFRESH_MS = 5000;

const routes = [
  { pattern: /^\/nodes\/(.+)$/, nav: "nodes", view: (match) => nodeDetailView(decodeURIComponent(match[1])) },
  { pattern: /^\/nodes\/?$/, nav: "nodes", view: () => nodesView() },
  { pattern: /^\/runs\/(.+)$/, nav: "runs", view: (match) => runDetailView(decodeURIComponent(match[1])) },
  { pattern: /^\/runs\/?$/, nav: "runs", view: () => runsView() },
];

let current = null;
let refreshTimer = null;
const inFlight = new WeakSet();

function currentPath() {
  const path = location.hash.replace(/^#/, "");
  return path || "/nodes";
}

function resolve(path) {
  for (const route of routes) {
    const match = path.match(route.pattern);
    if (match) return { route, match };
  }
  return null;
}

function renderShellText() {
  document.title = t("app.title");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  const switcher = document.getElementById("lang-switch");
  switcher.textContent = t("nav.lang");
  switcher.setAttribute("aria-label", language() === "zh" ? "Switch to English" : "切换到中文");
  document.getElementById("sign-out").hidden = !storedToken();
}

function setNav(active) {
  for (const link of document.querySelectorAll(".nav-link")) {
    link.classList.toggle("active", link.dataset.nav === active);
    if (link.dataset.nav === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function mount() {
  current?.view.unmount?.();
  const container = document.getElementById("view");
  const path = currentPath();
  const resolved = resolve(path);
  if (!resolved) {
    location.hash = "#/nodes";
    return;
  }
  const view = resolved.route.view(resolved.match);
  current = { path, view };
  setNav(resolved.route.nav);
  replaceChildren(container, view.element);
  refresh();
}

function showConnection(error) {
  const banner = document.getElementById("banner");
  if (error && (error.status === 401 || error.status === 403)) {
    replaceChildren(
      banner,
      h("div", { class: "message message-info", role: "status" }, `${t("auth.title")} `,
        button(t("auth.submit"), () => refresh(), { kind: "link", id: "sign-in" })),
    );
    banner.hidden = false;
  } else if (error && (error.status === 0 || error.status >= 500)) {
    replaceChildren(banner, message("error", t("common.unreachable", { error: error.detail || error.message })));
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

async function refresh() {
  if (!current || inFlight.has(current.view)) return;
  const view = current.view;
  inFlight.add(view);
  try {
    await view.refresh();
    showConnection(null);
    const stamp = document.getElementById("last-refresh");
    stamp.textContent = t("common.updated", { time: new Date().toLocaleTimeString(language() === "zh" ? "zh-CN" : "en") });
  } catch (error) {
    if (error instanceof ApiError) showConnection(error);
    else console.error(error);
  } finally {
    inFlight.delete(view);
  }
}

function startRefreshLoop() {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => {
    if (!document.hidden && !document.querySelector("dialog[open].dialog-auth")) refresh();
  }, REFRESH_MS);
}

function promptForToken(rejected) {
  return new Promise((resolveToken) => {
    const input = h("input", {
      type: "password",
      id: "token-input",
      name: "token",
      autocomplete: "current-password",
      required: true,
    });
    let entered = null;
    const submit = (close) => {
      const value = input.value.trim();
      if (!value) return;
      entered = value;
      close();
    };
    const { closed } = openDialog({
      title: t("auth.title"),
      className: "dialog-auth",
      body: [
        rejected ? message("error", t("auth.rejected")) : null,
        h("p", {}, t("auth.body")),
        h("label", { class: "field" }, h("span", {}, t("auth.label")), input),
      ],
      actions: (close) => [button(t("auth.submit"), () => submit(close), { kind: "primary", type: "submit", id: "token-submit" })],
    });
    closed.then(() => {
      renderShellText();
      resolveToken(entered);
    });
    input.focus();
  });
}

function init() {
  setLanguage(language());
  onTokenNeeded(promptForToken);
  document.getElementById("lang-switch").addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    renderShellText();
    // views keep unsaved form input in module state, so re-mounting loses nothing
    mount();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    forgetToken();
    renderShellText();
    refresh();
  });
  window.addEventListener("hashchange", mount);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  renderShellText();
  mount();
  startRefreshLoop();
}

// views ask for an immediate refresh after a change
window.addEventListener("console:refresh", () => refresh());

init();
