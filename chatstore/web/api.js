// The API client of the page: the session, fetch with the contract's errors,
// and a Server-Sent Events reader over fetch() (EventSource cannot send an
// Authorization header, and the embedded default signs in with a bearer token).

const TOKEN_KEY = "chatstore.token";

// The sign-in link carries the token in the URL fragment (#token=...): a
// fragment is never sent to a server nor written to an access log. It is moved
// into localStorage (so every tab of this browser is signed in, as a cookie
// would be) and removed from the address bar before anything else runs.
export function adoptTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return false;
  if (token !== "") localStorage.setItem(TOKEN_KEY, token);
  // The rest of the fragment (#token=...&c=<id>, say) is kept: a link may
  // sign in and open a conversation at once.
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return true;
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function signOut() {
  localStorage.removeItem(TOKEN_KEY);
}

// An error as the contract shapes it: {"error": {"code", "message"}}.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function headers(extra = {}) {
  const all = { ...extra };
  const bearer = token();
  // Without a stored token the session cookie of a better-auth server on the
  // same site (credentials: "same-origin") is the caller's credential.
  if (bearer) all.Authorization = `Bearer ${bearer}`;
  return all;
}

export async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      code = String(body.error.code);
      message = body.error.message;
    }
  } catch {
    // Not the contract's JSON (a proxy's page, say): keep the status line.
  }
  return new ApiError(response.status, code, message);
}

export async function send(
  method,
  path,
  { body, accept, signal, idempotencyKey, lastEventId } = {},
) {
  const extra = { Accept: accept || "application/json" };
  if (lastEventId !== undefined) extra["Last-Event-ID"] = String(lastEventId);
  if (body !== undefined) extra["Content-Type"] = "application/json";
  if (idempotencyKey) extra["Idempotency-Key"] = idempotencyKey;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "Cannot reach the server. Is `chatstore serve` running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function json(method, path, options) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

// Reads a text/event-stream body, calling onEvent({event, data, id}) for each
// event; comments (": heartbeat") are skipped. Resolves when the stream ends.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length > 0) {
          onEvent({ event: event.event, data: event.data.join("\n"), id: event.id });
        }
        event = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.event = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
    }
  }
}

// An Idempotency-Key: a retried send is stored once. getRandomValues, not
// randomUUID, which exists only in secure contexts (not http://192.168.x.y).
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
