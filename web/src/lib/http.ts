// Calls to the gateway's REST API from the page, with the bearer token
// when the gateway has one: entered once, kept in this tab's session
// storage (gone when the tab closes, never in a cookie or the URL).

const TOKEN_KEY = "streamstock.token";

export function savedToken(): string {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

/** Fired on `window` when the token changes: views that need it reload. */
export const TOKEN_CHANGED = "streamstock:token";

/** Fired on `window` when the gateway answers 401: the page asks for a token. */
export const TOKEN_NEEDED = "streamstock:token-needed";

/** The WebSocket subprotocols that carry the token (a browser cannot set
 * headers on a WebSocket): the dashboard's, and the token in hex. */
export function socketProtocols(token: string): string[] {
  if (!token) return [];
  const hex = Array.from(new TextEncoder().encode(token), (b) => b.toString(16).padStart(2, "0")).join("");
  return ["streamstock.dashboard", `streamstock.bearer.${hex}`];
}

export function saveToken(token: string) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lasts as long as the page.
  }
  window.dispatchEvent(new Event(TOKEN_CHANGED));
}

export type Answer<T = unknown> =
  | { ok: true; status: number; body: T }
  // `body`: what the gateway sent, for a refusal that is not an error body
  // (a refused adjustment's 409 is the adjustment).
  | { ok: false; status: number; code: string; message: string; field?: string; body?: unknown };

/** The field a server error names: `items[0].quantity: must be …` → `quantity`. */
export function fieldOf(message: string): string | undefined {
  const colon = message.indexOf(": ");
  if (colon <= 0) return undefined;
  const path = message.slice(0, colon);
  if (!/^[a-z_][a-z0-9_.[\]]*$/i.test(path)) return undefined;
  const last = path.split(".").pop() ?? path;
  return last.replace(/\[\d+\]/g, "");
}

/** `fetch` with the bearer token, when there is one: for the answers that
 * are not JSON (a CSV download, a CSV upload). */
export function authorizedFetch(path: string, init: RequestInit & { headers?: Record<string, string> } = {}): Promise<Response> {
  const token = savedToken();
  const headers = { ...(init.headers ?? {}), ...(token ? { authorization: `Bearer ${token}` } : {}) };
  return fetch(path, { ...init, headers });
}

export async function call<T = unknown>(method: string, path: string, body?: unknown): Promise<Answer<T>> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await authorizedFetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    return { ok: false, status: 0, code: "network", message: "the gateway cannot be reached" };
  }
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (response.ok) return { ok: true, status: response.status, body: parsed as T };
  const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
  if (response.status === 401) window.dispatchEvent(new Event(TOKEN_NEEDED));
  const message =
    response.status === 401
      ? "the gateway needs an API token: enter it at the top of the page"
      : response.status === 403
        ? `this token may not do that: ${error?.message ?? "its scope is too narrow"}`
        : (error?.message ?? `the gateway answered ${response.status}`);
  return {
    ok: false,
    status: response.status,
    code: error?.code ?? String(response.status),
    message,
    field: error?.message ? fieldOf(error.message) : undefined,
    body: parsed,
  };
}
