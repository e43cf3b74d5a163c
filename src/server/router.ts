import type { Context } from 'hono';
import { hasErrnoCause } from './http-errors.ts';

/**
 * Set on a request one node forwards to the session's owner, to the
 * forwarding node's id: a node receiving it never forwards it again (it
 * answers 421 or 503 with Retry-After instead), so requests cannot loop.
 */
export const FORWARDED_BY_HEADER = 'x-arbor-forwarded-by';

/** This node on a backend shared with other nodes (`backend.ownership`): its id, address and lease length, what the router needs. */
export interface NodeInfo {
  nodeId: string;
  nodeAddress: string | undefined;
  leaseMs: number;
}

/** Headers that belong to one connection, never passed on by a proxy (RFC 9110 §7.6.1), plus those recomputed. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'content-length']);

export type ForwardResult =
  | { kind: 'response'; response: Response }
  /** `delivered`: the owner may have received (and acted on) the request before it failed. */
  | { kind: 'unreachable'; delivered: boolean; reason: string };

/**
 * Sends the request to `target` (the owner's address) and streams its answer
 * back: status, headers and body as they arrive (SSE streams included).
 * Authorization, Last-Event-ID and every other end-to-end header go along;
 * `x-arbor-forwarded-by` marks the hop. `body` is the request body, read
 * beforehand so that it can still be served locally when the owner is gone.
 * No answer head within `headersTimeoutMs` (a paused owner) counts as
 * unreachable, possibly delivered.
 */
export async function forwardRequest(c: Context, target: string, body: Uint8Array | undefined, nodeId: string, headersTimeoutMs: number, shutdown: AbortSignal): Promise<ForwardResult> {
  const incoming = new URL(c.req.url);
  const url = new URL(incoming.pathname + incoming.search, target);
  const headers = new Headers();
  c.req.raw.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key.toLowerCase())) headers.set(key, value);
  });
  headers.set(FORWARDED_BY_HEADER, nodeId);
  const controller = new AbortController();
  const abort = (): void => controller.abort();
  // The client went away, or this node shuts down: the forwarded request (an SSE stream too) ends.
  c.req.raw.signal.addEventListener('abort', abort, { once: true });
  shutdown.addEventListener('abort', abort, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, headersTimeoutMs);
  let res: Response;
  try {
    res = await fetch(url, {
      method: c.req.method,
      headers,
      ...(body === undefined || body.byteLength === 0 ? {} : { body }),
      signal: controller.signal,
      redirect: 'manual',
    });
  } catch (err) {
    c.req.raw.signal.removeEventListener('abort', abort);
    shutdown.removeEventListener('abort', abort);
    if (timedOut) return { kind: 'unreachable', delivered: true, reason: `no answer from ${target} within ${headersTimeoutMs} ms` };
    // Refused: nothing listens there (the owner died); the request was certainly not delivered.
    const refused = hasErrnoCause(err, 'ECONNREFUSED') || hasErrnoCause(err, 'EHOSTUNREACH') || hasErrnoCause(err, 'ENOTFOUND');
    return { kind: 'unreachable', delivered: !refused, reason: `${target}: ${describe(err)}` };
  } finally {
    clearTimeout(timer);
  }
  const out = new Headers();
  res.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key.toLowerCase()) && key.toLowerCase() !== 'content-encoding') out.set(key, value);
  });
  out.set(FORWARDED_BY_HEADER, nodeId);
  const detach = (): void => {
    c.req.raw.signal.removeEventListener('abort', abort);
    shutdown.removeEventListener('abort', abort);
  };
  if (res.body === null) {
    detach();
    return { kind: 'response', response: new Response(null, { status: res.status, headers: out }) };
  }
  // Piped through so the listeners are removed once the stream ends, however it ends.
  const reader = res.body.getReader();
  const piped = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          detach();
          ctl.close();
        } else ctl.enqueue(value);
      } catch (err) {
        detach();
        ctl.error(err);
      }
    },
    cancel(reason) {
      detach();
      controller.abort();
      return reader.cancel(reason).catch(() => undefined);
    },
  });
  return { kind: 'response', response: new Response(piped, { status: res.status, headers: out }) };
}

function describe(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; depth += 1) {
    const m = (e as { code?: unknown; message?: unknown });
    parts.push(typeof m.code === 'string' ? `${m.code}` : String(m.message));
    e = (e as { cause?: unknown }).cause;
  }
  return parts.join(': ');
}
