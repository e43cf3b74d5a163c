import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';
import { ArborError, ErrorCodes, isArborError, publicSessionId, subscribeTelemetry, type Arbor } from '../index.ts';
import type { TokenAuthenticator } from './auth.ts';
import { HttpError, HttpErrorCodes } from './http-errors.ts';

/**
 * The web console (docs/console.md): the page at `/` and its static assets,
 * built by scripts/build-console.mjs into dist/console/ (at `npm install`,
 * `npm run build`), and the operator routes only the page's Operations view
 * reads: `/ops/latency` (journal and acknowledgement latency in 10 s samples)
 * and `/ops/sessions` (sessions with seq, size, last activity, lease owner,
 * and the recovery report). The page itself holds no secret: it asks for a
 * token and sends it in the Authorization header.
 */

/** Where the built page lives: `<package>/dist/console/`, from src/server/ and from dist/server/ alike. */
export const CONSOLE_DIR = fileURLToPath(new URL('../../dist/console/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json; charset=utf-8',
};

/** The page's Content-Security-Policy: its own scripts, styles and API only; no inline script, no frame, no plugin. */
export const CONSOLE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONSOLE_CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

/** One 10-second sample of a latency: how many, their mean and their maximum (ms). */
export interface LatencyStat {
  count: number;
  avgMs: number;
  maxMs: number;
}

export interface LatencySample {
  /** start of the 10 s window, epoch ms */
  t: number;
  /** group-commit batches: write (and sync) of one batch */
  journal: LatencyStat;
  /** write requests (POST) until their acknowledgement (the response head, sent once durable) */
  ack: LatencyStat;
}

type Acc = { count: number; sum: number; max: number };
const acc = (): Acc => ({ count: 0, sum: 0, max: 0 });

/** A ring of per-window latency samples, the newest `keep` windows; each window holds a count, a sum and a maximum, whatever the load. */
export class LatencyRing {
  readonly windowMs: number;
  readonly keep: number;
  readonly #now: () => number;
  #windows: { t: number; journal: Acc; ack: Acc }[] = [];

  constructor(options: { windowMs?: number; keep?: number; now?: () => number } = {}) {
    this.windowMs = options.windowMs ?? 10_000;
    this.keep = options.keep ?? 30;
    this.#now = options.now ?? Date.now;
  }

  add(kind: 'journal' | 'ack', ms: number): void {
    const t = Math.floor(this.#now() / this.windowMs) * this.windowMs;
    let w = this.#windows.at(-1);
    if (w === undefined || w.t !== t) {
      w = { t, journal: acc(), ack: acc() };
      this.#windows.push(w);
      if (this.#windows.length > this.keep) this.#windows.splice(0, this.#windows.length - this.keep);
    }
    const a = w[kind];
    a.count += 1;
    a.sum += ms;
    if (ms > a.max) a.max = ms;
  }

  /** The windows of the last `keep * windowMs`, oldest first, each present (an idle window has count 0). */
  samples(): LatencySample[] {
    const end = Math.floor(this.#now() / this.windowMs) * this.windowMs;
    const byT = new Map(this.#windows.map((w) => [w.t, w]));
    const round = (x: number) => Math.round(x * 1000) / 1000;
    const stat = (a: Acc | undefined): LatencyStat => (a === undefined || a.count === 0 ? { count: 0, avgMs: 0, maxMs: 0 } : { count: a.count, avgMs: round(a.sum / a.count), maxMs: round(a.max) });
    const out: LatencySample[] = [];
    for (let i = this.keep - 1; i >= 0; i -= 1) {
      const w = byT.get(end - i * this.windowMs);
      out.push({ t: end - i * this.windowMs, journal: stat(w?.journal), ack: stat(w?.ack) });
    }
    return out;
  }
}

export interface ConsoleDeps {
  arbor: Arbor;
  auth: TokenAuthenticator;
  /** Aborted at shutdown: the telemetry subscription ends. */
  shutdown: AbortSignal;
  /** The built page (default CONSOLE_DIR). */
  dir?: string;
}

/** Who may read the operator details: anyone on an open server (no tokens at all), else an operator token only (as /health's details). */
function assertOperator(c: Context, auth: TokenAuthenticator): void {
  const open = !auth.enabled && !auth.hasOperators;
  if (open || auth.isOperator(c.req.header('authorization'))) return;
  c.header('WWW-Authenticate', 'Bearer');
  throw new HttpError(401, HttpErrorCodes.UNAUTHORIZED, 'the operations routes need an operator token (operatorTokens)');
}

const ASSET_NAME = /^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9]{1,16}){1,3}$/;

/**
 * Registers the page, its assets and the operator routes. Call it before the
 * API routes: the acknowledgement timer is a middleware around them.
 */
export function registerConsole(app: Hono<any>, deps: ConsoleDeps): void {
  const dir = deps.dir ?? CONSOLE_DIR;
  const ring = new LatencyRing();
  const stop = subscribeTelemetry({ journalWrite: (m) => ring.add('journal', m.durationMs) });
  if (deps.shutdown.aborted) stop();
  else deps.shutdown.addEventListener('abort', stop, { once: true });

  // A write is acknowledged when its response head goes out (after the fsync for a message).
  app.use('/v1/*', async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const started = performance.now();
    await next();
    if (c.res.status < 400) ring.add('ack', performance.now() - started);
  });

  const serveFile = async (c: Context, name: string, cache: string): Promise<Response> => {
    let bytes: Buffer;
    try {
      bytes = await readFile(dir + name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (name !== 'index.html') throw new HttpError(404, HttpErrorCodes.NOT_FOUND, `no console asset ${name}`);
      // From a checkout that was never built: say how to build it, rather than a bare 404.
      const text = 'The web console is not built: run `npm run build` (or `node scripts/build-console.mjs`) in the package, then reload.\n';
      return new Response(text, { status: 503, headers: { 'Content-Type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS, 'Cache-Control': 'no-store' } });
    }
    return new Response(new Uint8Array(bytes), { status: 200, headers: { 'Content-Type': CONTENT_TYPES[extname(name)] ?? 'application/octet-stream', ...SECURITY_HEADERS, 'Cache-Control': cache } });
  };

  app.get('/', (c) => serveFile(c, 'index.html', 'no-cache'));
  app.get('/console/:file', (c) => {
    const file = c.req.param('file');
    if (!ASSET_NAME.test(file) || file === 'index.html') throw new HttpError(404, HttpErrorCodes.NOT_FOUND, `no console asset ${file.slice(0, 80)}`);
    return serveFile(c, file, 'no-cache');
  });

  app.get('/ops/latency', (c) => {
    assertOperator(c, deps.auth);
    return c.json({ windowMs: ring.windowMs, samples: ring.samples() });
  });

  /**
   * Sessions of the default id space (an open server's every session) with
   * seq, size and last activity; on a shared backend the lease owner where
   * this node knows it (the sessions it holds); and the recovery report.
   */
  app.get('/ops/sessions', async (c) => {
    assertOperator(c, deps.auth);
    const { arbor } = deps;
    const rawLimit = c.req.query('limit');
    const limit = rawLimit === undefined ? 50 : Number(rawLimit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new ArborError(ErrorCodes.INVALID_INPUT, `limit must be an integer from 1 to 200, got ${JSON.stringify(String(rawLimit).slice(0, 40))}`, { field: 'limit' });
    const cursor = c.req.query('cursor');
    const page = await arbor.sessions({ limit, ...(cursor === undefined ? {} : { cursor }) });
    const ownership = arbor.backend.ownership;
    const held = new Set(arbor.sessionsInMemory());
    const sessions = page.sessions.map((s) => {
      let bytes: number | null = null;
      if (held.has(s.id)) {
        try {
          bytes = Buffer.byteLength(JSON.stringify(arbor.session(s.id).state));
        } catch (err) {
          if (!isArborError(err)) throw err;
        }
      }
      return { ...s, bytes, ...(ownership === undefined ? {} : { owner: held.has(s.id) ? ownership.nodeId : null }) };
    });
    const report = arbor.recoveryReport();
    return c.json({
      backend: arbor.backend.kind,
      node: ownership === undefined ? null : { id: ownership.nodeId, address: ownership.nodeAddress ?? null },
      sessions,
      nextCursor: page.nextCursor,
      recovery: {
        pending: report.pending,
        completedAt: report.completedAt ?? null,
        counts: report.counts,
        sessions: report.sessions.map((r) => ({ id: publicSessionId(r.sid), status: r.status, seq: r.seq, replayed: r.replayed })),
      },
    });
  });
}
