import { isIP } from 'node:net';
import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { errorBody, HttpError, HttpErrorCodes } from './http-errors.ts';
import { FORWARDED_BY_HEADER } from './router.ts';

/**
 * What keeps a browser from being turned against the server (docs/http-safety.md):
 *
 * - the Host check: a request must name the server by a name it answers to
 *   (loopback names, any IP address, the node's own address, `allowedHosts`),
 *   so a page whose DNS name was rebound to this address cannot read from it;
 * - CORS for the origins of `corsOrigins` only, and no write from any other
 *   origin (a cross-site form post or body-less `fetch` carries an `Origin`);
 * - JSON bodies only (415 otherwise): a page cannot post `text/plain` without
 *   a preflight that CORS then refuses;
 * - security headers on every answer.
 */
export interface BrowserSafetyOptions {
  /** `allowedHosts`: names beside loopback names, IP addresses and `ownHosts`; `.example.com` a domain and its subdomains; `*` no check. */
  allowedHosts: readonly string[];
  /** `corsOrigins`: origins whose pages may call the API; `*` any. */
  corsOrigins: readonly string[];
  /** Names this node goes by that are not loopback names nor IP addresses: its node address's host (other nodes forward to it). */
  ownHosts?: readonly string[];
}

/** Request headers a page may send (CORS preflight). */
export const CORS_ALLOW_HEADERS = ['Authorization', 'Content-Type', 'Last-Event-ID'] as const;
/** Response headers a page may read beyond the safelisted ones: the AI SDK's stream marker, and what error handling needs. */
export const CORS_EXPOSE_HEADERS = ['x-vercel-ai-ui-message-stream', 'Retry-After', 'WWW-Authenticate'] as const;
const CORS_METHODS = ['GET', 'HEAD', 'POST', 'DELETE'];
const CORS_MAX_AGE_SECONDS = 600;
/** Methods that change something: their requests must carry JSON when they carry a body, and come from an allowed origin. */
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The CSP of answers that are not pages (JSON, event streams): nothing may load, nothing may frame them. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '::1']);

/** Whether `address` (an IP address or `localhost`) is a loopback address: 127.0.0.0/8, ::1, ::ffff:127.x. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (a === 'localhost' || a === '::1') return true;
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** The host name of a Host header, lowercased, without its port and trailing dot (`[::1]:4000` → `::1`); undefined when malformed. */
export function hostNameOf(header: string): string | undefined {
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0 || (end + 1 < h.length && !/^:[0-9]{1,5}$/.test(h.slice(end + 1)))) return undefined;
    return h.slice(1, end);
  }
  const m = /^([a-z0-9_.-]+)(:[0-9]{1,5})?$/.exec(h);
  if (m === null) return undefined;
  return m[1]!.replace(/\.$/, '');
}

/** A predicate over Host header values: loopback names, IP addresses, `ownHosts` and `allowedHosts`. */
export function hostMatcher(options: BrowserSafetyOptions): (hostHeader: string) => boolean {
  if (options.allowedHosts.includes('*')) return () => true;
  const exact = new Set<string>();
  const suffixes: string[] = [];
  for (const raw of [...options.allowedHosts, ...(options.ownHosts ?? [])]) {
    const name = raw.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
    if (name.startsWith('.')) suffixes.push(name);
    else exact.add(name);
  }
  return (hostHeader) => {
    const name = hostNameOf(hostHeader);
    if (name === undefined) return false;
    // An IP address cannot be a rebound DNS name: a page whose origin it is, is this server (k8s probes use the pod IP).
    if (LOOPBACK_NAMES.has(name) || isIP(name) !== 0 || exact.has(name)) return true;
    return suffixes.some((s) => name.endsWith(s) || name === s.slice(1));
  };
}

/** The Host check: 403 ARBOR_HOST_NOT_ALLOWED for a Host the server does not answer to. */
export function hostCheck(options: BrowserSafetyOptions): MiddlewareHandler {
  const allowed = hostMatcher(options);
  return async (c, next) => {
    const host = c.req.header('host');
    // HTTP/1.0 without Host: no browser sends that.
    if (host !== undefined && !allowed(host)) {
      throw new HttpError(403, HttpErrorCodes.HOST_NOT_ALLOWED, `Host ${JSON.stringify(host.slice(0, 100))} is not a name this server answers to; add it to allowedHosts (ARBOR_ALLOWED_HOSTS) if it is`);
    }
    await next();
  };
}

/** Whether `origin` is the origin of a page this server served: its host (and port) is the request's Host. */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const u = new URL(origin);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host === new URL(`http://${host}`).host;
  } catch {
    return false;
  }
}

/**
 * CORS through Hono's middleware, for the allowed origins only: their
 * preflights are answered 204 with the allowed methods and headers, their
 * answers carry Access-Control-Allow-Origin and the exposed headers. Another
 * origin gets no CORS header at all, its preflight 403
 * ARBOR_ORIGIN_NOT_ALLOWED, and its writes (POST, DELETE: simple requests
 * need no preflight) 403 before anything runs. Reads from another origin are
 * answered without CORS headers, so its page cannot read them.
 */
export function corsPolicy(options: BrowserSafetyOptions): MiddlewareHandler {
  const any = options.corsOrigins.includes('*');
  const listed = new Set(options.corsOrigins);
  const allowedOrigin = (origin: string): boolean => any || listed.has(origin);
  const withCors = cors({
    origin: (origin) => (allowedOrigin(origin) ? origin : null),
    allowMethods: CORS_METHODS,
    allowHeaders: [...CORS_ALLOW_HEADERS],
    exposeHeaders: [...CORS_EXPOSE_HEADERS],
    maxAge: CORS_MAX_AGE_SECONDS,
  });
  return async (c, next) => {
    const origin = c.req.header('origin');
    if (origin !== undefined && allowedOrigin(origin)) return withCors(c, next);
    // Forwarded by another node, which checked the origin (a page cannot set this header without a preflight that is refused here).
    if (c.req.header(FORWARDED_BY_HEADER) !== undefined) return next();
    const preflight = c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined;
    const foreign = origin !== undefined && !sameOrigin(origin, c.req.header('host'));
    if (foreign && (preflight || WRITE_METHODS.has(c.req.method))) {
      throw new HttpError(403, HttpErrorCodes.ORIGIN_NOT_ALLOWED, `origin ${JSON.stringify(origin.slice(0, 200))} may not call this server; add it to corsOrigins (ARBOR_CORS_ORIGINS) if it should`);
    }
    await next();
    // Answers differ by Origin once some origins are allowed: caches must keep them apart.
    if (listed.size > 0 && !any) c.header('Vary', 'Origin', { append: true });
  };
}

/** The media type of a Content-Type header, lowercased, without parameters (`application/json; charset=utf-8` → `application/json`). */
export function mediaTypeOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  return contentType.split(';')[0]!.trim().toLowerCase();
}

/** Whether the request carries a body: a non-zero Content-Length, or a Transfer-Encoding (chunked). */
function hasBody(headers: { header(name: string): string | undefined }): boolean {
  const length = headers.header('content-length');
  if (length !== undefined && length.trim() !== '0') return true;
  return headers.header('transfer-encoding') !== undefined;
}

/**
 * JSON routes take JSON: a write (POST, PUT, PATCH, DELETE) with a body must
 * say `Content-Type: application/json` (parameters such as charset allowed),
 * else 415 ARBOR_UNSUPPORTED_MEDIA_TYPE naming the type it sent. A write
 * without a body (retry, stop, delete) needs none.
 */
export function jsonBodies(): MiddlewareHandler {
  return async (c, next) => {
    if (WRITE_METHODS.has(c.req.method) && hasBody(c.req)) {
      const type = mediaTypeOf(c.req.header('content-type'));
      if (type !== 'application/json') {
        throw new HttpError(415, HttpErrorCodes.UNSUPPORTED_MEDIA_TYPE, `request body must be JSON (Content-Type: application/json), got ${type === undefined ? 'no Content-Type' : `Content-Type ${JSON.stringify(c.req.header('content-type')!.slice(0, 100))}`}`);
      }
    }
    await next();
  };
}

/**
 * Security headers on every answer: `X-Content-Type-Options: nosniff`,
 * `Referrer-Policy: no-referrer`, and on answers that are not pages (no
 * Content-Security-Policy of their own) the API's CSP, which lets nothing load
 * and nothing frame them. A page route sets its own CSP, which is kept.
 */
export function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const set = (name: string, value: string): void => {
      try {
        c.res.headers.set(name, value);
      } catch {
        c.header(name, value); // immutable headers (a fetched answer): Hono copies the response first
      }
    };
    set('X-Content-Type-Options', 'nosniff');
    set('Referrer-Policy', 'no-referrer');
    if (!c.res.headers.has('Content-Security-Policy')) set('Content-Security-Policy', API_CSP);
  };
}

/** The answer to a request refused before it reached Hono (raw on the socket): as every other error, JSON with a code. */
export function rawErrorResponse(status: number, statusText: string, err: HttpError): string {
  const body = JSON.stringify(errorBody(err));
  return `HTTP/1.1 ${status} ${statusText}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: ${API_CSP}\r\nConnection: close\r\n\r\n${body}`;
}
