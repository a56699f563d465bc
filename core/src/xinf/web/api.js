// The server's API: JSON over fetch, the API key, and server-sent events.

const KEY = "xinf.apiKey";

/** A failed request, worded as the server worded it (`error.message` of its JSON). */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

async function errorOf(response) {
  const text = await response.text();
  let message = text.trim() || `HTTP ${response.status} ${response.statusText}`;
  try {
    const body = JSON.parse(text);
    message = body?.error?.message ?? body?.detail ?? message;
  } catch {
    // not JSON (a proxy's page, say): its text is the best wording there is
  }
  return new ApiError(message, response.status);
}

let askForKey = null; // (server's message) => Promise<key or null>, set by the page
let asking = null; // one prompt shared by all the requests refused at the same time

/** Let the page ask the user for a key when the server answers 401. */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** fetch() with the key; a 401 asks for a key and tries again with it. */
export async function request(path, { method = "GET", body, signal } = {}) {
  // Relative to the page, so that the page also works behind a proxy that serves it under a path prefix.
  const url = path.replace(/^\//, "");
  // A FormData body goes as multipart (the browser writes its Content-Type and boundary); anything else as JSON.
  const form = body instanceof FormData;
  const payload = body === undefined || form ? body : JSON.stringify(body);
  for (;;) {
    const sent = apiKey();
    const headers = {};
    if (sent) headers.Authorization = `Bearer ${sent}`;
    if (payload !== undefined && !form) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body: payload, signal });
    if (response.status !== 401 || !askForKey) return response;
    const error = await errorOf(response);
    if (apiKey() !== sent) continue; // another request got a new key meanwhile
    asking ??= askForKey(error.message).finally(() => {
      asking = null;
    });
    if (!(await asking)) throw error;
  }
}

export async function getJSON(path, options) {
  const response = await request(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export function postJSON(path, body, options = {}) {
  return getJSON(path, { ...options, method: "POST", body });
}

/** POST a JSON or FormData body; resolve with the answer's bytes as a Blob (audio, say). */
export async function postForBlob(path, body, options = {}) {
  const response = await request(path, { ...options, method: "POST", body });
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}

export function deleteJSON(path) {
  return getJSON(path, { method: "DELETE" });
}

/** POST a streaming request; yield each server-sent event's JSON until `[DONE]`. */
export async function* events(path, body, signal) {
  const response = await request(path, { method: "POST", body, signal });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        // "data:" lines make up the event; lines starting with ":" are keep-alive comments
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(event.error.message, response.status);
        yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
