// HTTP access to /api/v1: JSON in and out, the console session, and errors as ApiError.
//
// The console never holds a token. Signing in posts the token once (POST /auth/login); the
// server answers with an HttpOnly session cookie, which the browser sends by itself, and a
// CSRF token, which lives in this module's memory only and goes out as X-CSRF-Token on every
// change. After a reload GET /auth/session hands the CSRF token over again.

const API = "/api/v1";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
// where consoles before the session cookie kept the admin token; removed on start
const LEGACY_TOKEN_KEY = "console.adminToken";

export class ApiError extends Error {
  constructor(status, detail, extra = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.extra = extra;
  }
}

// Signing in worked, but the browser did not keep the session cookie (it is `Secure`, which a
// browser drops on plain HTTP except for localhost).
export class CookieRejected extends Error {}

// Who the console acts as: null while signed out, else
// {role: "admin" | "viewer", protectedMode, csrfToken (cookie sessions only), expiresAt}.
let current = null;
let sessionLost = () => {};
let sessionChanged = () => {};

export function currentSession() {
  return current;
}

// Whether the console may offer changes (edit, drain, save, ...): admins only.
export function canChange() {
  return current?.role === "admin";
}

// The UI registers what to do when a call answers 401 (the session expired or was revoked),
// and when the role changed under the page (another tab signed in as someone else).
export function onSessionLost(handler) {
  sessionLost = handler;
}

export function onSessionChanged(handler) {
  sessionChanged = handler;
}

export function forgetLegacyToken() {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      storage.removeItem(LEGACY_TOKEN_KEY);
    } catch {
      // storage disabled: nothing was kept there either
    }
  }
}

function sessionFrom(info) {
  if (!info || (info.role !== "admin" && info.role !== "viewer")) return null;
  return {
    role: info.role,
    protectedMode: Boolean(info.protected_mode),
    csrfToken: info.csrf_token ?? null,
    expiresAt: info.expires_at ?? null,
  };
}

function seg(value) {
  return encodeURIComponent(value);
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function errorFrom(response) {
  let detail = response.statusText || "error";
  let extra = null;
  try {
    const body = await response.json();
    if (body && typeof body === "object") {
      detail = body.detail ? String(body.detail) : detail;
      extra = body.extra ?? null;
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, detail, extra);
}

async function send(method, path, { params, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE_METHODS.has(method) && current?.csrfToken) headers["X-CSRF-Token"] = current.csrfToken;
  try {
    return await fetch(`${API}${path}${query(params)}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, error.message || "network error");
  }
}

// GET /auth/session: the caller's session, or null when a sign-in is needed.
export async function loadSession() {
  const response = await send("GET", "/auth/session");
  if (response.status === 401) {
    current = null;
    return null;
  }
  if (!response.ok) throw await errorFrom(response);
  // without a cookie the server may answer 200 {"role": "anonymous"}: that needs a sign-in too
  current = sessionFrom(await response.json());
  return current;
}

export async function signIn(token) {
  const response = await send("POST", "/auth/login", { body: { token } });
  if (!response.ok) throw await errorFrom(response);
  await response.json();
  // the cookie, not the answer, is what later calls rely on: check that the browser kept it
  const session = await loadSession();
  if (!session) throw new CookieRejected("the browser did not keep the session cookie");
  return session;
}

export async function signOut() {
  let response = await send("POST", "/auth/logout");
  if (response.status === 403) {
    // the session was renewed in another tab: sign out with its CSRF token
    await loadSession().catch(() => null);
    response = await send("POST", "/auth/logout");
  }
  // 401: the session had already expired, which is as signed out as it gets
  if (!response.ok && response.status !== 401) throw await errorFrom(response);
  current = null;
}

export async function request(method, path, options = {}) {
  let response = await send(method, path, options);
  if (response.status === 403 && !SAFE_METHODS.has(method) && current?.csrfToken) {
    // Another tab may have signed in again meanwhile: a new session comes with a new CSRF
    // token. The server refused before acting, so one retry with the current token is safe.
    const sent = current.csrfToken;
    const role = current.role;
    const fresh = await loadSession().catch(() => current);
    if (!fresh) {
      const error = new ApiError(401, "the console session is no longer valid");
      sessionLost(error);
      throw error;
    }
    if (fresh.role !== role) sessionChanged(fresh);
    if (fresh.csrfToken && fresh.csrfToken !== sent && fresh.role === role) {
      response = await send(method, path, options);
    }
  }
  if (response.status === 401) {
    const error = await errorFrom(response);
    current = null;
    sessionLost(error);
    throw error;
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

export const api = {
  listNodes: (filters) => request("GET", "/nodes", { params: filters }),
  getNode: (id) => request("GET", `/nodes/${seg(id)}`),
  patchNode: (id, patch) => request("PATCH", `/nodes/${seg(id)}`, { body: patch }),
  deleteNode: (id) => request("DELETE", `/nodes/${seg(id)}`),
  nodeRuns: (id, params) => request("GET", `/nodes/${seg(id)}/runs`, { params }),
  getEnvConfig: (id) => request("GET", `/nodes/${seg(id)}/env-config`),
  // admins only; the server writes every reveal to the audit log
  revealEnvConfig: (id) => request("GET", `/nodes/${seg(id)}/env-config`, { params: { reveal: "true" } }),
  putEnvConfig: (id, config) => request("PUT", `/nodes/${seg(id)}/env-config`, { body: config }),
  // proxy null: the node tests its saved proxy (with the stored password)
  testProxy: (id, proxy) =>
    request("POST", `/nodes/${seg(id)}/env-config/test-proxy`, { body: proxy ? { proxy } : {} }),
  listRuns: (params) => request("GET", "/runs", { params }),
  getRun: (id) => request("GET", `/runs/${seg(id)}`),
  runEvents: (id, after = 0) => request("GET", `/runs/${seg(id)}/events`, { params: { after } }),
};

const WATCH_RETRY_MS = 5000;

// The live node stream (server-sent events), from `since` (a node list's stream_position: every
// change after that list was read). EventSource sends the session cookie by itself (same
// origin), so no token is ever put in the URL. It reconnects by itself after a dropped
// connection, sending the last event id so that the server resumes or says `resync`; after a
// refusal (401, 403) it stays closed, so this reopens it after WATCH_RETRY_MS while the view is
// mounted. Handlers get the event id ("epoch:seq") after the data. Returns {close()}.
export function watchNodes(since, { onOpen, onNode, onDeleted, onResync, onDown }) {
  let source = null;
  let timer = null;
  let closed = false;
  const parse = (event) => {
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  };
  const open = () => {
    source = new EventSource(`${API}/watch/nodes${query({ since })}`);
    source.addEventListener("hello", () => onOpen());
    source.addEventListener("node", (event) => {
      const node = parse(event);
      if (node?.id) onNode(node, event.lastEventId);
    });
    source.addEventListener("deleted", (event) => {
      const gone = parse(event);
      if (gone?.id) onDeleted(gone.id, event.lastEventId);
    });
    source.addEventListener("resync", () => onResync());
    source.onerror = () => {
      onDown();
      if (source.readyState === EventSource.CLOSED && !closed) {
        clearTimeout(timer);
        timer = setTimeout(open, WATCH_RETRY_MS);
      }
    };
  };
  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      source?.close();
    },
  };
}
