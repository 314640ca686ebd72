// Console shell: the sign-in page, hash routing, the auto-refresh loop and the language switch.

import {
  ApiError,
  CookieRejected,
  currentSession,
  forgetLegacyToken,
  loadSession,
  onSessionChanged,
  onSessionLost,
  signIn,
  signOut,
} from "./api.js";
import { button, h, message, replaceChildren, setBusy, toast } from "./dom.js";
import { forgetDrafts } from "./env-config.js";
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
let inConsole = false; // false while the sign-in page is shown
let signInNotice = null; // {kind, key}: why the sign-in page is shown (expired, signed out)
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
  const session = currentSession();
  // protected mode (no tokens configured, loopback only): no roles, no sign-in, no sign-out
  const badge = document.getElementById("role-badge");
  badge.hidden = !session || session.protectedMode;
  if (session) {
    badge.textContent = t(`role.${session.role}`);
    badge.className = `badge role-badge role-${session.role}`;
    badge.dataset.role = session.role;
  }
  // only a cookie session can be signed out of (it is the one that comes with a CSRF token)
  document.getElementById("sign-out").hidden = !session?.csrfToken;
}

function setNav(active) {
  for (const link of document.querySelectorAll(".nav-link")) {
    link.classList.toggle("active", link.dataset.nav === active);
    if (link.dataset.nav === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function mount() {
  if (!inConsole) return; // the route is picked up after signing in
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
  if (error && (error.status === 0 || error.status >= 500)) {
    replaceChildren(banner, message("error", t("common.unreachable", { error: error.detail || error.message })));
    banner.hidden = false;
  } else if (error && error.status === 403) {
    replaceChildren(banner, message("error", t("error.generic", { status: error.status, detail: error.detail })));
    banner.hidden = false;
  } else if (!error || error.status !== 401) {
    banner.hidden = true; // 401 shows the sign-in page instead
  }
}

async function refresh() {
  if (!inConsole || !current || inFlight.has(current.view)) return;
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
    if (!document.hidden) refresh();
  }, REFRESH_MS);
}

function signInErrorText(error) {
  if (error instanceof CookieRejected) return t("auth.cookieRejected");
  if (!(error instanceof ApiError)) return String(error.message || error);
  if (error.status === 401) return t("auth.rejected");
  if (error.status === 403) return t("auth.notConsoleToken");
  if (error.status === 0 || error.status >= 500) return t("common.unreachable", { error: error.detail });
  return t("error.generic", { status: error.status, detail: error.detail });
}

function renderSignIn() {
  const page = document.getElementById("signin-page");
  const typed = document.getElementById("signin-token")?.value ?? "";
  const input = h("input", {
    type: "password",
    id: "signin-token",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "signin-feedback",
  });
  input.value = typed;
  const feedback = h(
    "div",
    { id: "signin-feedback", class: "signin-feedback" },
    signInNotice ? message(signInNotice.kind, t(signInNotice.key)) : null,
  );
  const submit = button(t("auth.submit"), null, { kind: "primary", type: "submit", id: "signin-submit" });
  const form = h(
    "form",
    { class: "signin-card", id: "signin-form", novalidate: true },
    h("div", { class: "signin-brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), h("span", {}, t("app.title"))),
    h("h1", {}, t("auth.title")),
    h("p", { class: "muted" }, t("auth.body")),
    h("label", { class: "field" }, h("span", {}, t("auth.label")), input),
    feedback,
    h(
      "div",
      { class: "signin-actions" },
      submit,
      button(t("nav.lang"), switchLanguage, {
        kind: "ghost",
        id: "signin-lang",
        "aria-label": language() === "zh" ? "Switch to English" : "切换到中文",
      }),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      replaceChildren(feedback, message("error", t("auth.required")));
      input.focus();
      return;
    }
    setBusy(submit, true);
    try {
      await signIn(token);
    } catch (error) {
      replaceChildren(feedback, message("error", signInErrorText(error)));
      input.select();
      return;
    } finally {
      setBusy(submit, false);
    }
    enterConsole();
  });
  document.title = `${t("auth.title")} · ${t("app.title")}`;
  replaceChildren(page, form);
}

function showSignIn(notice = null) {
  inConsole = false;
  clearInterval(refreshTimer);
  current?.view.unmount?.();
  current = null;
  // a modal dialog (edit, delete) would keep the sign-in page from being used
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  replaceChildren(document.getElementById("view"));
  document.getElementById("banner").hidden = true;
  document.getElementById("app-shell").hidden = true;
  signInNotice = notice;
  renderSignIn();
  document.getElementById("signin-page").hidden = false;
  document.getElementById("signin-token").focus();
}

function enterConsole() {
  inConsole = true;
  signInNotice = null;
  const signInPage = document.getElementById("signin-page");
  signInPage.hidden = true;
  replaceChildren(signInPage); // the token field goes with it
  document.getElementById("app-shell").hidden = false;
  renderShellText();
  mount();
  startRefreshLoop();
}

function switchLanguage() {
  setLanguage(language() === "zh" ? "en" : "zh");
  if (inConsole) {
    renderShellText();
    // views keep unsaved form input in module state, so re-mounting loses nothing
    mount();
  } else if (!document.getElementById("signin-page").hidden) {
    renderSignIn();
    document.getElementById("signin-token").focus();
  } else {
    renderShellText();
  }
}

async function handleSignOut(event) {
  const trigger = event.currentTarget;
  setBusy(trigger, true);
  try {
    await signOut();
  } catch (error) {
    toast(t("auth.signOutFailed", { error: error.detail || error.message }), "error");
    return;
  } finally {
    setBusy(trigger, false);
  }
  forgetDrafts(); // unsaved (possibly revealed) env values do not outlive the session
  showSignIn({ kind: "success", key: "auth.signedOut" });
}

// Who are we? Signed in (or protected mode): the console; otherwise the sign-in page.
async function boot() {
  let session;
  try {
    session = await loadSession();
  } catch (error) {
    // the server cannot answer: say so, and ask again shortly
    document.getElementById("app-shell").hidden = false;
    renderShellText();
    showConnection(error instanceof ApiError ? error : new ApiError(0, String(error)));
    setTimeout(boot, REFRESH_MS);
    return;
  }
  if (session) enterConsole();
  else showSignIn();
}

function init() {
  forgetLegacyToken();
  setLanguage(language());
  onSessionLost(() => {
    if (inConsole) showSignIn({ kind: "info", key: "auth.expired" });
  });
  onSessionChanged(() => {
    // another tab signed in with another role: show what this one may do now
    if (!inConsole) return;
    renderShellText();
    mount();
  });
  document.getElementById("lang-switch").addEventListener("click", switchLanguage);
  document.getElementById("sign-out").addEventListener("click", handleSignOut);
  window.addEventListener("hashchange", mount);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  renderShellText();
  boot();
}

// views ask for an immediate refresh after a change
window.addEventListener("console:refresh", () => refresh());

init();
