// Calls to gust's /v1 API, same origin. The bearer token lives in this tab's sessionStorage
// only: it is sent in the Authorization header, never put in a URL, and never logged.

const TOKEN_KEY = "gust.console.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let mode = "unknown"; // "open" (the server checks no token), "token", or "unknown"

export function authMode() {
  return mode;
}

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function signOut() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (privacy mode): nothing was kept.
  }
  mode = "unknown";
}

function headersFor(extra) {
  const headers = new Headers(extra || {});
  const t = token();
  if (t && mode !== "open") headers.set("Authorization", "Bearer " + t);
  return headers;
}

/**
 * Whether the console can call the API now: "open" when the server answers without a token,
 * "token" when the stored token is accepted, "signin" when one is needed.
 */
export async function probe() {
  const t = token();
  if (t) {
    const r = await fetch("/v1/functions?limit=1", {
      headers: { Authorization: "Bearer " + t },
      credentials: "omit",
      cache: "no-store",
    });
    if (r.ok) {
      mode = "token";
      return "token";
    }
    if (r.status !== 401) throw await errorOf(r);
    signOut();
  }
  const r = await fetch("/v1/functions?limit=1", { credentials: "omit", cache: "no-store" });
  if (r.ok) {
    mode = "open";
    return "open";
  }
  if (r.status === 401) return "signin";
  throw await errorOf(r);
}

/** Checks `candidate` and keeps it for this tab when the API accepts it. */
export async function signIn(candidate) {
  const r = await fetch("/v1/functions?limit=1", {
    headers: { Authorization: "Bearer " + candidate },
    credentials: "omit",
    cache: "no-store",
  });
  if (r.status === 401) throw new ApiError(401, "Unauthorized", "That token was not accepted.");
  if (!r.ok) throw await errorOf(r);
  sessionStorage.setItem(TOKEN_KEY, candidate);
  mode = "token";
}

async function errorOf(r) {
  let code = "HTTP" + r.status;
  let message = `${r.status} ${r.statusText || ""}`.trim();
  try {
    const body = await r.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(r.status, code, message);
}

/** Raised whenever the API refuses the token: the app goes back to sign-in. */
function unauthorized() {
  signOut();
  window.dispatchEvent(new CustomEvent("gust:unauthorized"));
}

/**
 * Sends a request; answers the parsed JSON (or null on 204). Throws ApiError on a non-2xx.
 * `json` is sent as application/json; `ifMatch` adds If-Match.
 */
export async function api(path, { method = "GET", json, ifMatch, signal } = {}) {
  const headers = headersFor();
  let body;
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  if (ifMatch !== undefined && ifMatch !== null) headers.set("If-Match", String(ifMatch));
  const r = await fetch(path, { method, headers, body, signal, credentials: "omit", cache: "no-store" });
  if (r.status === 401) {
    unauthorized();
    throw await errorOf(r);
  }
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.includes("json") ? r.json() : r.text();
}

/** GET that answers null on 404 (something that may not exist, or not yet). */
export async function apiMaybe(path, opts) {
  try {
    return await api(path, opts);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/**
 * A sync invocation: answers {status, ok, functionError, invocationId, executedVersion, text}.
 * A function error is a 200 with a `gust-function-error` header.
 */
export async function invoke(name, payload, qualifier) {
  const headers = headersFor();
  let isJson = true;
  try {
    JSON.parse(payload);
  } catch {
    isJson = false;
  }
  headers.set("Content-Type", isJson ? "application/json" : "application/octet-stream");
  const q = qualifier ? "?qualifier=" + encodeURIComponent(qualifier) : "";
  const started = performance.now();
  const r = await fetch(`/v1/functions/${encodeURIComponent(name)}/invoke${q}`, {
    method: "POST",
    headers,
    body: payload,
    credentials: "omit",
    cache: "no-store",
  });
  const elapsed = performance.now() - started;
  if (r.status === 401) {
    unauthorized();
    throw await errorOf(r);
  }
  if (!r.ok) throw await errorOf(r);
  return {
    status: r.status,
    functionError: r.headers.get("gust-function-error"),
    invocationId: r.headers.get("gust-invocation-id"),
    executedVersion: r.headers.get("gust-executed-version"),
    text: await r.text(),
    elapsedMs: elapsed,
  };
}

/** `/v1/functions/NAME/...` with the name encoded. */
export function fpath(name, ...rest) {
  return ["/v1/functions", encodeURIComponent(name), ...rest.map((r) => encodeURIComponent(r))].join("/");
}
