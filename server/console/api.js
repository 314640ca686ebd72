// HTTP access to /api/v1: JSON in and out, the admin token, and errors as ApiError.

const TOKEN_KEY = "console.adminToken";
const API = "/api/v1";
const MAX_TOKEN_ATTEMPTS = 5;

export class ApiError extends Error {
  constructor(status, detail, extra = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.extra = extra;
  }
}

let askForToken = async () => null;
let pendingTokenPrompt = null;

// The UI registers how to ask the user for a token: (rejected: boolean) => Promise<string|null>.
export function onTokenNeeded(prompt) {
  askForToken = prompt;
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// Concurrent requests that all get 401 share one prompt.
function promptOnce(rejected) {
  if (!pendingTokenPrompt) {
    pendingTokenPrompt = askForToken(rejected).finally(() => {
      pendingTokenPrompt = null;
    });
  }
  return pendingTokenPrompt;
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

export async function request(method, path, { params, body, signal } = {}) {
  let rejected = false;
  for (let attempt = 0; attempt < MAX_TOKEN_ATTEMPTS; attempt += 1) {
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(`${API}${path}${query(params)}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, error.message || "network error");
    }
    // 403: a token that is valid but not an admin one (e.g. the node join token)
    if (response.status === 401 || (response.status === 403 && token)) {
      if (token) rejected = true;
      const entered = await promptOnce(rejected);
      if (!entered) throw await errorFrom(response);
      // a token another request already stored counts as entered
      if (entered !== storedToken()) sessionStorage.setItem(TOKEN_KEY, entered);
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }
  throw new ApiError(401, "not authenticated");
}

export const api = {
  listNodes: (filters) => request("GET", "/nodes", { params: filters }),
  getNode: (id) => request("GET", `/nodes/${seg(id)}`),
  patchNode: (id, patch) => request("PATCH", `/nodes/${seg(id)}`, { body: patch }),
  deleteNode: (id) => request("DELETE", `/nodes/${seg(id)}`),
  nodeRuns: (id, params) => request("GET", `/nodes/${seg(id)}/runs`, { params }),
  getEnvConfig: (id) => request("GET", `/nodes/${seg(id)}/env-config`),
  putEnvConfig: (id, config) => request("PUT", `/nodes/${seg(id)}/env-config`, { body: config }),
  testProxy: (id, proxy) => request("POST", `/nodes/${seg(id)}/env-config/test-proxy`, { body: { proxy } }),
  listRuns: (params) => request("GET", "/runs", { params }),
  getRun: (id) => request("GET", `/runs/${seg(id)}`),
  runEvents: (id, after = 0) => request("GET", `/runs/${seg(id)}/events`, { params: { after } }),
};
