// The page's only way to the server: fetch, with the token (kept in sessionStorage,
// never in a URL) in the Authorization header, and `content-type: application/json`
// on every request that has a JSON body.

const TOKEN_KEY = 'arbor.console.token';

export function getToken(): string {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token: string): void {
  if (token === '') sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

/** An error answer of the API: its HTTP status and `{ error: { code, message } }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function headers(json: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  const token = getToken();
  if (token !== '') h.authorization = `Bearer ${token}`;
  if (json) h['content-type'] = 'application/json';
  return h;
}

/** A request; `body` is sent as JSON. Resolves with the response (2xx), else rejects with an ApiError. */
export async function request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  // Every request that changes something says JSON, body or not (the server refuses other content types on JSON routes).
  const init: RequestInit = { method, headers: headers(body !== undefined || method !== 'GET'), cache: 'no-store' };
  if (body !== undefined) init.body = JSON.stringify(body);
  if (signal !== undefined) init.signal = signal;
  const res = await fetch(path, init);
  if (!res.ok) {
    let code = `HTTP_${res.status}`;
    let message = `${method} ${path}: HTTP ${res.status}`;
    try {
      const j = (await res.json()) as { error?: { code?: string; message?: string } };
      if (j.error?.code !== undefined) code = j.error.code;
      if (j.error?.message !== undefined) message = j.error.message;
    } catch {
      // not JSON: the status says it
    }
    throw new ApiError(res.status, code, message);
  }
  return res;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await (await request('GET', path, undefined, signal)).json()) as T;
}

export async function sendJson<T>(method: string, path: string, body: unknown): Promise<T | undefined> {
  const res = await request(method, path, body);
  if (res.status === 204) return undefined;
  const text = await res.text();
  return text === '' ? undefined : (JSON.parse(text) as T);
}

/** One chunk of the AI SDK's UI message stream (docs/chat-protocol.md). */
export type UIChunk = { type: string; [field: string]: unknown };

/**
 * Reads a UI message stream (SSE, one JSON chunk per `data:` line, `[DONE]`
 * last) and calls `onChunk` for each. Resolves when the stream ends; rejects
 * when the connection is cut.
 */
export async function readChunks(res: Response, onChunk: (chunk: UIChunk) => void): Promise<void> {
  if (res.body === null) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data === '' || data === '[DONE]') continue;
      onChunk(JSON.parse(data) as UIChunk);
    }
  }
}

/** A random id for a message the page sends (works on plain http too, where randomUUID is missing). */
export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The URL-safe form of a session id in a path. */
export const enc = encodeURIComponent;
