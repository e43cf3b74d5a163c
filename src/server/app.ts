import { randomUUID } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { routePath } from 'hono/route';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { Logger } from 'pino';
import { z } from 'zod';
import { ArborError, assertSessionId, ErrorCodes, isArborError, isSessionId, isTenantStorageId, parseEventData, publicSessionId, storageSessionId, type Arbor, type JournalRecord, type Session, type SessionState, type SessionUpdate } from '../index.ts';
import type { PrometheusMetrics } from './prometheus.ts';
import type { OtelTracing } from './otel.ts';
import { TokenAuthenticator } from './auth.ts';
import type { HealthChecker } from './health.ts';
import { errorBody, HttpError, HttpErrorCodes, toHttpError } from './http-errors.ts';
import { FORWARDED_BY_HEADER, forwardRequest, type ForwardResult, type NodeInfo } from './router.ts';
import { StreamIndex } from './stream-index.ts';
import { chatBodySessionId, registerChatRoutes } from './chat.ts';
import { registerConsole } from './console.ts';
import { summarizeEvent } from '../ops.ts';
import { registerApprovalRoutes } from './approvals.ts';
import { corsPolicy, hostCheck, jsonBodies, securityHeaders, type BrowserSafetyOptions } from './browser-safety.ts';

/**
 * The config key under which a session's tenant is journaled at creation (a
 * `session_config_changed` event, so it survives restarts like everything
 * else). Keys under `arbor.` are reserved: clients can neither set nor see them.
 */
export const TENANT_CONFIG_KEY = 'arbor.tenant';
const RESERVED_PREFIX = 'arbor.';

/** Updates queued for one slow SSE client before it is cut off (it reconnects with Last-Event-ID). */
const MAX_SSE_QUEUE = 10_000;
/** A comment line this often keeps proxies from closing an idle stream. */
const SSE_HEARTBEAT_MS = 15_000;

export interface AppDeps {
  arbor: Arbor;
  auth: TokenAuthenticator;
  health: HealthChecker;
  metrics: PrometheusMetrics;
  logger: Logger;
  maxBodyBytes: number;
  retryAfterSeconds: number;
  /** Aborted at shutdown: new requests get ARBOR_CLOSED, open streams end after their last events. */
  shutdown: AbortSignal;
  /** On PostgreSQL: this node, for routing requests to the owner of each session. */
  node?: NodeInfo;
  /** OpenTelemetry traces: a span per request, the parent of the turns it starts. */
  tracing?: OtelTracing;
  /** The Host check and CORS (docs/http-safety.md); default: loopback names and IP addresses, same origin only. */
  browser?: BrowserSafetyOptions;
}

/** Attempts to reach a session's owner (or take it over) before a request is refused. */
const MAX_ROUTING_ATTEMPTS = 4;
/** The longest a request waits for an unreachable owner's lease to run out. */
const MAX_LEASE_WAIT_MS = 30_000;

type Env = { Variables: { tenant: string; tokenId: string | undefined; body: Uint8Array | undefined; routeId: string | undefined } };

/** What GET /v1/sessions/:id answers. */
export interface SessionView {
  id: string;
  seq: number;
  status: 'idle' | 'streaming';
  streaming?: { messageId: string; requestMessageId: string };
  messages: MessageView[];
  config: Record<string, unknown>;
  /** the session this one was forked from (docs/sessions-api.md) */
  forkedFrom?: { id: string; atSeq: number };
  /** forks made of this session */
  forks?: { id: string; atSeq: number }[];
}

type MessageView = { id: string; role: string; content: string; seq: number; metadata?: Readonly<Record<string, unknown>> };

function messageView(m: SessionState['messages'][number]): MessageView {
  return { id: m.id, role: m.role, content: m.content, seq: m.seq, ...(m.metadata === undefined ? {} : { metadata: m.metadata }) };
}

/** The session as clients see it; `newest`: only the newest that many messages (`?messages=<n>`), else all. */
export function sessionView(state: SessionState, newest?: number): SessionView {
  const config: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(state.config)) if (!key.startsWith(RESERVED_PREFIX)) config[key] = value;
  const messages = newest === undefined ? state.messages : newest === 0 ? [] : state.messages.slice(-newest);
  return {
    id: publicSessionId(state.id),
    seq: state.seq,
    status: state.stream.status,
    ...(state.stream.status === 'streaming' ? { streaming: { messageId: state.stream.messageId, requestMessageId: state.stream.requestMessageId } } : {}),
    messages: messages.map(messageView),
    config,
    ...(state.forkedFrom === undefined ? {} : { forkedFrom: { id: publicSessionId(state.forkedFrom.sessionId), atSeq: state.forkedFrom.atSeq } }),
    ...(state.forks === undefined ? {} : { forks: state.forks.map((f) => ({ id: publicSessionId(f.sessionId), atSeq: f.atSeq })) }),
  };
}

const CreateBody = z.strictObject({
  id: z.string().optional(),
  config: z.record(z.string(), z.unknown()).optional(),
});
const ForkBody = z.strictObject({
  id: z.string().optional(),
  atSeq: z.int().optional(),
});
const MessageBody = z.strictObject({
  content: z.string(),
  clientMessageId: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

function invalid(field: string, message: string): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, message, { field });
}

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : 'body';
  throw invalid(field, `invalid request body: ${field}: ${issue.message}`);
}

/**
 * Reads a request body of at most `max` bytes: a declared Content-Length
 * above it is refused before a byte is read; a body without one (chunked) is
 * counted as it streams in and cut off at the limit. Either way at most `max`
 * bytes sit in memory. The router reads it before it forwards a request, and
 * keeps it on the context for the handler when it serves it locally after all.
 */
async function readBytes(c: Context<Env>, max: number): Promise<Uint8Array> {
  const kept = c.get('body');
  if (kept !== undefined) return kept;
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > max) {
    throw new HttpError(413, HttpErrorCodes.BODY_TOO_LARGE, `request body of ${declared} bytes is over the limit of ${max} bytes (maxBodyBytes)`);
  }
  const body = c.req.raw.body;
  if (body === null) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch {
      // The body comes from the client's socket: it failed because the client went away (or was cut off as too slow).
      throw new HttpError(499, HttpErrorCodes.CLIENT_CLOSED_REQUEST, `the client closed the connection after ${total} bytes of its request body`);
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      throw new HttpError(413, HttpErrorCodes.BODY_TOO_LARGE, `request body is over the limit of ${max} bytes (maxBodyBytes)`);
    }
    parts.push(value);
  }
  const bytes = Buffer.concat(parts);
  c.set('body', bytes);
  return bytes;
}

/** Reads a JSON body of at most `max` bytes (see readBytes); empty is `{}`. */
async function readJson(c: Context<Env>, max: number): Promise<unknown> {
  const bytes = await readBytes(c, max);
  if (bytes.byteLength === 0) return {};
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new HttpError(400, HttpErrorCodes.INVALID_JSON, `request body is not JSON: ${(err as Error).message}`);
  }
}

/** A resume position: the client saw every update up to here. */
export type Resume = { kind: 'fresh' } | { kind: 'seq'; seq: number } | { kind: 'chunk'; messageId: string; index: number };

export function parseLastEventId(raw: string | undefined): Resume {
  if (raw === undefined || raw === '') return { kind: 'fresh' };
  if (/^[0-9]{1,15}$/.test(raw)) return { kind: 'seq', seq: Number(raw) };
  const m = /^([A-Za-z0-9_-]{1,128}):([0-9]{1,9})$/.exec(raw);
  if (m !== null) return { kind: 'chunk', messageId: m[1]!, index: Number(m[2]) };
  throw invalid('Last-Event-ID', `Last-Event-ID ${JSON.stringify(raw.slice(0, 80))} is neither an event seq nor <messageId>:<index>`);
}

function isReservedConfigEvent(e: JournalRecord): boolean {
  return e.type === 'session_config_changed' && String((e.data as { key?: unknown }).key).startsWith(RESERVED_PREFIX);
}

/** An event's data as clients see it: the sessions a fork link names by the ids their tenant knows. */
function publicEventData(e: JournalRecord): unknown {
  const d = e.data as Record<string, unknown>;
  if (e.type === 'forked_from' && typeof d.sourceId === 'string') return { ...d, sourceId: publicSessionId(d.sourceId) };
  if (e.type === 'fork_created' && typeof d.forkId === 'string') return { ...d, forkId: publicSessionId(d.forkId) };
  return e.data;
}

function eventMessage(e: JournalRecord): { id: string; event: string; data: string } {
  return { id: String(e.seq), event: e.type, data: JSON.stringify({ seq: e.seq, type: e.type, ts: e.ts, data: publicEventData(e) }) };
}

/** An optional integer query parameter within [min, max]; anything else is a 400 naming it. */
function intQuery(c: Context, name: string, min: number, max: number): number | undefined {
  const raw = c.req.query(name);
  if (raw === undefined) return undefined;
  if (!/^[0-9]{1,15}$/.test(raw) || Number(raw) < min || Number(raw) > max) throw invalid(name, `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw.slice(0, 40))}`);
  return Number(raw);
}

/** Page sizes of the list, messages and events routes. */
const MAX_PAGE = 200;
const DEFAULT_PAGE = 50;

/** The HTTP API of DESIGN §7 on Hono: sessions, messages, SSE, retry, /health and /metrics. */
export function createApp(deps: AppDeps): { app: Hono<Env>; streams: StreamIndex } {
  const { arbor, auth, health, metrics, logger, maxBodyBytes, shutdown } = deps;
  const app = new Hono<Env>();
  const streams = new StreamIndex();
  const creating = new Set<string>();

  app.use('*', async (c, next) => {
    const started = performance.now();
    if (shutdown.aborted) {
      const err = new HttpError(503, ErrorCodes.CLOSED, 'the server is shutting down', true);
      c.header('Retry-After', String(deps.retryAfterSeconds));
      return c.json(errorBody(err), 503);
    }
    if (deps.tracing === undefined) await next();
    else await deps.tracing.request(c.req.method, c.req.path, c.req.raw.headers, next, () => ({ route: routePath(c, -1), status: c.res.status }));
    const route = routePath(c, -1);
    const seconds = (performance.now() - started) / 1000;
    metrics.observeRequest(c.req.method, route, c.res.status, seconds);
    logger.debug({ method: c.req.method, route, status: c.res.status, ms: Math.round(seconds * 1e4) / 10, tenant: c.get('tenant') }, 'request');
  });
  // Browser-safe HTTP (docs/http-safety.md): headers on every answer, then the Host check and CORS before anything runs.
  const browser = deps.browser ?? { allowedHosts: [], corsOrigins: [] };
  app.use('*', securityHeaders());
  app.use('*', hostCheck(browser));
  app.use('*', corsPolicy(browser));

  app.onError((err, c) => {
    const http = toHttpError(err);
    if (http.retryAfter) c.header('Retry-After', String(deps.retryAfterSeconds));
    const fields = { method: c.req.method, route: routePath(c, -1), status: http.status, code: http.code };
    if (http.status >= 500 && http.status !== 503 && http.status !== 507) logger.error({ ...fields, err }, http.message);
    else if (http.retryAfter) logger.warn(fields, http.message);
    // The client's doing, not the server's: nobody reads the answer, and it is no server error (status 499, as nginx counts it).
    else if (http.code === HttpErrorCodes.CLIENT_CLOSED_REQUEST) logger.debug(fields, `client abort: ${http.message}`);
    return c.json(errorBody(http), http.status as 400);
  });

  app.notFound((c) => c.json(errorBody(new HttpError(404, HttpErrorCodes.NOT_FOUND, `no route ${c.req.method} ${new URL(c.req.url).pathname.slice(0, 200)}`)), 404));

  // The web console at `/` and its operator routes (src/server/console.ts); before the API routes, whose acknowledgements it times.
  registerConsole(app, { arbor, auth, shutdown });

  app.use('/v1/*', async (c, next) => {
    const who = auth.identify(c.req.header('authorization'));
    const tenant = who?.tenant;
    if (tenant === undefined) {
      c.header('WWW-Authenticate', 'Bearer');
      throw new HttpError(401, HttpErrorCodes.UNAUTHORIZED, c.req.header('authorization') === undefined ? 'missing bearer token' : 'invalid bearer token');
    }
    c.set('tenant', tenant);
    c.set('tokenId', who?.tokenId);
    await next();
  });
  app.use('/v1/*', jsonBodies());

  /**
   * Routing on several nodes (PostgreSQL): a request for a session another
   * live node owns is forwarded to that node and its answer streamed back.
   * When the owner cannot be reached (it died), the request waits until the
   * owner's lease can have expired, then this node takes the session over
   * (loading it does) and serves it. A forwarded request is never forwarded
   * again: a node that does not own its session answers 421 with Retry-After.
   */
  const node = deps.node;
  const route = async (c: Context<Env>, next: () => Promise<void>): Promise<Response | void> => {
    // POST /v1/chat names its session in the body (read by the middleware below), the other routes in the path.
    const raw = c.get('routeId') ?? c.req.param('id');
    if (node === undefined || raw === undefined || !isSessionId(raw) || isTenantStorageId(raw)) return next();
    let id: string;
    try {
      id = sidOf(c, raw);
      // A session the tenant created under its own id, before tenants had their own id space.
      const legacy = legacyId(c, raw);
      if (legacy !== undefined && !(await arbor.backend.exists(id)) && (await arbor.backend.exists(legacy))) id = legacy;
    } catch {
      return next(); // the handler meets and reports it
    }
    const forwardedBy = c.req.header(FORWARDED_BY_HEADER);
    for (let attempt = 1; ; attempt += 1) {
      const askedAt = performance.now();
      let notOwner: ArborError;
      try {
        // On PostgreSQL this loads the session, taking its lease when it is free or expired.
        await arbor.exists(id);
        return next();
      } catch (err) {
        if (!isArborError(err) || err.code !== ErrorCodes.NOT_OWNER) return next(); // the handler meets and reports it
        notOwner = err;
      }
      const owner = String(notOwner.details.owner ?? '(unknown)');
      const ownerAddress = notOwner.details.ownerAddress;
      const expiresInMs = Number(notOwner.details.expiresInMs ?? node.leaseMs);
      if (forwardedBy !== undefined) {
        throw new ArborError(ErrorCodes.NOT_OWNER, `session ${id}: node ${node.nodeId} got a request forwarded by node ${forwardedBy} but node ${owner} owns the session; it is not forwarded twice`, { ...notOwner.details });
      }
      if (typeof ownerAddress !== 'string' || ownerAddress === '' || attempt >= MAX_ROUTING_ATTEMPTS) throw notOwner;
      const body = c.req.method === 'GET' || c.req.method === 'HEAD' ? undefined : await readBytes(c, maxBodyBytes);
      const headersTimeoutMs = Math.min(30_000, Math.max(5_000, 2 * node.leaseMs));
      // The owner registered this very address: it was an earlier process on this port, dead since this one listens here.
      const r: ForwardResult =
        ownerAddress === node.nodeAddress
          ? { kind: 'unreachable', delivered: false, reason: `node ${owner} had this node's address ${ownerAddress}: an earlier process, gone` }
          : await forwardRequest(c, ownerAddress, body, node.nodeId, headersTimeoutMs, shutdown);
      if (r.kind === 'response') {
        logger.debug({ sessionId: id, owner, ownerAddress, status: r.response.status }, 'forwarded to the owner');
        return r.response;
      }
      // A write the owner may have received cannot be replayed here: the client retries (with its clientMessageId).
      if (r.delivered && c.req.method !== 'GET' && c.req.method !== 'HEAD') {
        throw new HttpError(503, ErrorCodes.NOT_OWNER, `session ${id}: its owner, node ${owner} at ${ownerAddress}, did not answer (${r.reason}); retry`, true);
      }
      const waitMs = Math.min(MAX_LEASE_WAIT_MS, Math.max(0, askedAt + expiresInMs + 50 - performance.now()));
      logger.warn({ sessionId: id, owner, ownerAddress, reason: r.reason, waitMs }, 'the owner of the session is unreachable: waiting for its lease to expire, then taking the session over');
      if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  };
  app.use('/v1/sessions/:id', route);
  app.use('/v1/sessions/:id/*', route);
  app.use('/v1/chat/:id', route);
  app.use('/v1/chat/:id/*', route);
  app.use('/v1/chat', async (c, next) => {
    if (node === undefined || c.req.method !== 'POST') return next();
    c.set('routeId', chatBodySessionId(await readJson(c, maxBodyBytes)));
    return route(c, next);
  });


  /**
   * The storage id of session `id` of the request's tenant: each tenant has
   * its own id space (docs/sessions-api.md). Without tokens (one tenant) the
   * id itself. Ids of the storage form `__t<tag>_…` are refused (400).
   */
  function sidOf(c: Context<Env>, id: string): string {
    assertSessionId(id);
    if (isTenantStorageId(id)) throw new ArborError(ErrorCodes.INVALID_SESSION_ID, `invalid session id ${JSON.stringify(id.slice(0, 40))}: ids of the form __t<tag>_… are reserved`, { field: 'id', sessionId: id });
    return auth.enabled ? storageSessionId(id, c.get('tenant')) : id;
  }

  /** Where a tenant's session `id` was stored before tenants had their own id space (its own id), when that differs from sidOf. */
  function legacyId(c: Context<Env>, id: string): string | undefined {
    return auth.enabled && sidOf(c, id) !== id ? id : undefined;
  }

  /** Whether session `sid` is stored under its own id and its recorded tenant is the request's (a session of that tenant from before per-tenant ids). */
  async function ownedLegacy(c: Context<Env>, sid: string): Promise<boolean> {
    try {
      if (!(await arbor.exists(sid))) return false;
      return (await arbor.session(sid).load()).config[TENANT_CONFIG_KEY] === c.get('tenant');
    } catch (err) {
      if (isArborError(err, ErrorCodes.NOT_OWNER)) return false;
      throw err;
    }
  }

  /**
   * The session `id` of the request's tenant. Another tenant's session is 404,
   * exactly like a missing one, so ids cannot be probed across tenants (and
   * another tenant's `id` is another session anyway). Without tokens every
   * session stored under its own id is served, including those the library wrote.
   */
  async function find(c: Context<Env>, use: 'read' | 'write', requested: string = c.req.param('id')!): Promise<{ session: Session; state: SessionState }> {
    let id = sidOf(c, requested);
    const notFound = new HttpError(404, HttpErrorCodes.SESSION_NOT_FOUND, `session ${requested} not found`);
    // On PostgreSQL asking took the lease of a session that does not exist: it is handed back, so any node can create it.
    const missing = async (): Promise<never> => {
      if (deps.node !== undefined) await arbor.passivate(id).catch(() => false);
      throw notFound;
    };
    if (!(await arbor.exists(id))) {
      const legacy = legacyId(c, requested);
      if (legacy === undefined || !(await arbor.exists(legacy))) return missing();
      id = legacy;
    }
    const session = arbor.session(id);
    // A read gets the session recovered (first access after a restart) or loaded back (passivated) first.
    // A write needs only its tenant, which never changes: any state this process knows of the session
    // says it, and the command loads the session itself, so the write makes one trip through the mailbox, not two.
    const known = use === 'write' ? knownState(session) : undefined;
    const state = known !== undefined && known.seq > 0 ? known : await session.load();
    if (state.seq === 0) return missing();
    // An open server (no tokens) has one tenant: it also serves sessions written without the server.
    // A tenant's storage id proves its tenant; a session under its own id must have recorded the tenant.
    if (auth.enabled && !isTenantStorageId(id) && state.config[TENANT_CONFIG_KEY] !== c.get('tenant')) throw notFound;
    return { session, state };
  }

  let lastReopenAt = 0;
  /**
   * Writes are refused while the data disk is past the fail threshold, and
   * accepted again once it is not. A journal that failed (ENOSPC or EIO inside
   * it) is reopened in place once the disk reads fine again, at most once per
   * Retry-After period: writing resumes without a restart.
   */
  async function assertWritable(): Promise<void> {
    // Fast path: the last disk reading while it is fresh, and the runtime's own answer; no I/O, no health report.
    const disk = health.cachedDisk() ?? (await health.disk(true));
    if (disk.status === 'fail') throw new HttpError(507, HttpErrorCodes.DISK_FULL, `writes are refused: ${disk.message}`, true);
    const writable = arbor.writable();
    if (writable.ok) return;
    // Closing: the command itself answers ARBOR_CLOSED.
    if (arbor.closing) return;
    const full = writable.errno === 'ENOSPC';
    const refuse = (why: string) => new HttpError(full ? 507 : 503, full ? HttpErrorCodes.DISK_FULL : ErrorCodes.JOURNAL_FAILED, `writes are refused: ${writable.message}; ${why}`, true);
    if (Date.now() - lastReopenAt < deps.retryAfterSeconds * 1000) throw refuse('it is reopened once the disk works again');
    lastReopenAt = Date.now();
    try {
      await arbor.reopen();
    } catch (err) {
      throw refuse(`reopening it failed: ${(err as Error).message}`);
    }
  }

  app.post('/v1/sessions', async (c) => {
    const body = parseBody(CreateBody, await readJson(c, maxBodyBytes));
    const requested = body.id ?? randomUUID();
    const id = sidOf(c, requested);
    const config = Object.entries(body.config ?? {});
    for (const [key, newValue] of config) {
      if (key.startsWith(RESERVED_PREFIX)) throw invalid(`config.${key}`, `config key ${JSON.stringify(key)} is reserved (keys starting with "${RESERVED_PREFIX}")`);
      // Validated before anything is written, so a bad key cannot leave a half-created session.
      try {
        parseEventData('session_config_changed', { key, newValue }, { sessionId: id });
      } catch (err) {
        throw invalid(`config.${key}`, `config.${key}: ${(err as Error).message}`);
      }
    }
    await assertWritable();
    // Claimed before the existence check's await, so two concurrent creates cannot both pass.
    if (creating.has(id)) throw new HttpError(409, HttpErrorCodes.SESSION_EXISTS, `session ${requested} already exists`);
    creating.add(id);
    try {
      // On PostgreSQL a session another node holds exists too.
      const exists = await arbor.exists(id).catch((err: unknown) => {
        if (isArborError(err) && err.code === ErrorCodes.NOT_OWNER) return true;
        throw err;
      });
      const legacy = legacyId(c, requested);
      if (exists || (legacy !== undefined && (await ownedLegacy(c, legacy)))) throw new HttpError(409, HttpErrorCodes.SESSION_EXISTS, `session ${requested} already exists`);
      const session = arbor.session(id);
      streams.watch(session);
      await session.changeConfig(TENANT_CONFIG_KEY, c.get('tenant'));
      for (const [key, value] of config) await session.changeConfig(key, value);
      return c.json(sessionView(session.state), 201);
    } finally {
      creating.delete(id);
    }
  });

  app.get('/v1/sessions', async (c) => {
    const limit = intQuery(c, 'limit', 1, MAX_PAGE);
    const cursor = c.req.query('cursor');
    // Without tokens, the one id space of the open server; with them, the caller's tenant only.
    const page = await arbor.sessions({ ...(auth.enabled ? { tenant: c.get('tenant') } : {}), ...(limit === undefined ? {} : { limit }), ...(cursor === undefined ? {} : { cursor }) });
    return c.json(page);
  });

  app.get('/v1/sessions/:id', async (c) => {
    const newest = intQuery(c, 'messages', 0, Number.MAX_SAFE_INTEGER);
    const { state } = await find(c, 'read');
    return c.json(sessionView(state, newest));
  });

  app.get('/v1/sessions/:id/messages', async (c) => {
    const limit = intQuery(c, 'limit', 1, MAX_PAGE) ?? DEFAULT_PAGE;
    const before = intQuery(c, 'before', 1, Number.MAX_SAFE_INTEGER);
    const { state } = await find(c, 'read');
    // Messages are in seq order: the page is the `limit` newest below `before`, oldest first.
    const all = state.messages;
    let end = all.length;
    if (before !== undefined) {
      let lo = 0;
      while (lo < end) {
        const mid = (lo + end) >>> 1;
        if (all[mid]!.seq < before) lo = mid + 1;
        else end = mid;
      }
    }
    const start = Math.max(0, end - limit);
    return c.json({ messages: all.slice(start, end).map(messageView), nextBefore: start > 0 ? all[start]!.seq : null });
  });

  app.get('/v1/sessions/:id/events', async (c) => {
    const limit = intQuery(c, 'limit', 1, MAX_PAGE) ?? DEFAULT_PAGE;
    const fromSeq = intQuery(c, 'fromSeq', 1, Number.MAX_SAFE_INTEGER) ?? 1;
    const { session } = await find(c, 'read');
    // The events still held (older ones were compacted into snapshots); the server's own tenant record is not shown.
    const held = await session.events({ fromSeq });
    const visible = held.filter((e) => !isReservedConfigEvent(e));
    const page = visible.slice(0, limit);
    return c.json({
      events: page.map((e) => ({ seq: e.seq, type: e.type, ts: e.ts, data: publicEventData(e), summary: summarizeEvent({ ...e, data: publicEventData(e) }) })),
      nextFromSeq: visible.length > limit ? page.at(-1)!.seq + 1 : null,
    });
  });

  app.post('/v1/sessions/:id/fork', async (c) => {
    const { session } = await find(c, 'write');
    const body = parseBody(ForkBody, await readJson(c, maxBodyBytes));
    if (body.id !== undefined) sidOf(c, body.id);
    await assertWritable();
    const fork = await arbor.fork(session.id, { ...(body.id === undefined ? {} : { id: body.id }), ...(body.atSeq === undefined ? {} : { atSeq: body.atSeq }), ...(auth.enabled ? { tenant: c.get('tenant') } : {}) });
    streams.watch(fork);
    return c.json(sessionView(fork.state), 201);
  });

  // The delete is durable before the 204; a streaming answer ends first (its subscribers get the terminal event).
  app.delete('/v1/sessions/:id', async (c) => {
    const { session } = await find(c, 'write');
    await assertWritable();
    await session.delete();
    return c.body(null, 204);
  });

  app.post('/v1/sessions/:id/messages', async (c) => {
    const { session } = await find(c, 'write');
    const body = parseBody(MessageBody, await readJson(c, maxBodyBytes));
    await assertWritable();
    streams.watch(session);
    const r = await session.sendMessage({ content: body.content, ...(body.clientMessageId === undefined ? {} : { clientMessageId: body.clientMessageId }), ...(body.metadata === undefined ? {} : { metadata: body.metadata }) });
    // Sent only now: the message is durable.
    return c.json({ messageId: r.messageId, seq: r.seq, duplicate: r.duplicate }, 202);
  });

  app.post('/v1/sessions/:id/retry', async (c) => {
    const { session } = await find(c, 'write');
    await assertWritable();
    streams.watch(session);
    const r = await session.retry();
    return c.json({ requestMessageId: r.requestMessageId, retryOf: r.retryOf ?? null }, 202);
  });

  app.get('/v1/sessions/:id/stream', async (c) => {
    const { session } = await find(c, 'read');
    const resume = parseLastEventId(c.req.header('last-event-id') ?? c.req.query('lastEventId'));
    const newest = intQuery(c, 'messages', 0, Number.MAX_SAFE_INTEGER);
    streams.watch(session);
    return streamSSE(c, (stream) => runStream(stream, session, resume, newest));
  });

  /**
   * One SSE connection: subscribe first (queueing live updates), replay what
   * the client missed after its Last-Event-ID, then forward live updates,
   * skipping any the replay already sent: every update exactly once.
   */
  async function runStream(stream: SSEStreamingApi, session: Session, resume: Resume, newest?: number): Promise<void> {
    const queue: SessionUpdate[] = [];
    let wake: (() => void) | undefined;
    let overflow = false;
    const unsubscribe = session.subscribe((u) => {
      if (queue.length >= MAX_SSE_QUEUE) overflow = true;
      else queue.push(u);
      wake?.();
    });
    const onShutdown = () => wake?.();
    shutdown.addEventListener('abort', onShutdown);
    const sseClosed = metrics.sseOpened();
    stream.onAbort(() => wake?.());
    let lastSeq = 0;
    const sentChunk = new Map<string, number>();
    const send = async (u: SessionUpdate): Promise<void> => {
      if (u.kind === 'event') {
        if (u.event.seq <= lastSeq) return;
        lastSeq = u.event.seq;
        // The tenant record is the server's: clients see a gap in seqs there, never the key.
        if (isReservedConfigEvent(u.event)) return;
        await stream.writeSSE(eventMessage(u.event));
      } else if (u.kind === 'chunk') {
        const { messageId, index, text } = u.chunk;
        if (index <= (sentChunk.get(messageId) ?? -1)) return;
        sentChunk.set(messageId, index);
        await stream.writeSSE({ id: `${messageId}:${index}`, event: 'chunk', data: JSON.stringify({ messageId, index, text }) });
      } else {
        await stream.writeSSE({ event: u.type, data: JSON.stringify(u.data) });
      }
    };
    try {
      const plan = await planReplay(session, resume, streams);
      if (plan.reset !== undefined) await stream.writeSSE({ id: String(plan.reset.seq), event: 'state', data: JSON.stringify(sessionView(plan.reset, newest)) });
      lastSeq = plan.clientSeq;
      if (resume.kind === 'chunk') sentChunk.set(resume.messageId, resume.index);
      for (const u of plan.updates) await send(u);
      while (!stream.aborted && !stream.closed) {
        while (queue.length > 0 && !stream.aborted) await send(queue.shift()!);
        // Shutdown: arbor.close() published the last events (stream_interrupted) before the signal.
        if (shutdown.aborted || overflow) break;
        const heartbeat = setTimeout(() => wake?.(), SSE_HEARTBEAT_MS);
        await new Promise<void>((r) => (wake = r));
        clearTimeout(heartbeat);
        wake = undefined;
        if (queue.length === 0 && !shutdown.aborted && !stream.aborted) await stream.write(': ping\n\n');
      }
    } finally {
      sseClosed();
      unsubscribe();
      shutdown.removeEventListener('abort', onShutdown);
    }
  }

  const chatDeps: Parameters<typeof registerChatRoutes>[1] = {
    find: (c, use, id) => find(c as Context<Env>, use, id),
    findOrCreate: async (c, id) => {
      const tenant = (c as Context<Env>).get('tenant');
      const sid = sidOf(c as Context<Env>, id);
      const legacy = legacyId(c as Context<Env>, id);
      const exists = await (async () => (legacy !== undefined && (await ownedLegacy(c as Context<Env>, legacy))) || (await arbor.exists(sid)))().catch((err: unknown) => {
        if (isArborError(err) && err.code === ErrorCodes.NOT_OWNER) return true;
        throw err;
      });
      if (exists) return (await find(c as Context<Env>, 'write', id)).session;
      if (!auth.mayCreateSessions(tenant)) {
        if (deps.node !== undefined) await arbor.passivate(sid).catch(() => false);
        throw new HttpError(404, HttpErrorCodes.SESSION_NOT_FOUND, `session ${id} not found (tenant ${tenant} does not create sessions on first use)`);
      }
      if (creating.has(sid)) throw new HttpError(409, HttpErrorCodes.SESSION_EXISTS, `session ${id} is being created; retry`, true);
      creating.add(sid);
      try {
        const session = arbor.session(sid);
        streams.watch(session);
        await session.changeConfig(TENANT_CONFIG_KEY, tenant);
        return session;
      } finally {
        creating.delete(sid);
      }
    },
    assertWritable,
    readJson: (c) => readJson(c as Context<Env>, maxBodyBytes),
    watch: (session) => streams.watch(session),
    decidedBy: (c) => ({ tenant: (c as Context<Env>).get('tenant'), ...((c as Context<Env>).get('tokenId') === undefined ? {} : { tokenId: (c as Context<Env>).get('tokenId') }) }),
    keepAliveMs: SSE_HEARTBEAT_MS,
  };
  registerChatRoutes(app, chatDeps);
  registerApprovalRoutes(app, chatDeps);

  /**
   * GET /health. Its details name sessions (the recovery probe's) of every
   * tenant, so once the server has tokens (tenants' or operators') only an
   * operator's token (`operatorTokens`) sees them; anyone else, tenants
   * included, gets the statuses alone. An open server (no tokens at all) has
   * one tenant, who can read every session anyway: it shows everything.
   */
  app.get('/health', async (c) => {
    const report = await health.check();
    const code = report.status === 'fail' ? 503 : 200;
    const open = !auth.enabled && !auth.hasOperators;
    if (!open && !auth.isOperator(c.req.header('authorization'))) {
      const checks = Object.fromEntries(Object.entries(report.checks).map(([name, check]) => [name, { status: check.status }]));
      return c.json({ status: report.status, checks }, code);
    }
    // On several nodes: which node answered, and how many sessions it lost to others (taken over, or fenced).
    const body = node === undefined ? report : { ...report, node: { id: node.nodeId, address: node.nodeAddress ?? null, sessionsLost: arbor.health().sessions.lost } };
    return c.json(body, code);
  });

  app.get('/metrics', async (c) => {
    return c.body(await metrics.text(), 200, { 'Content-Type': metrics.contentType });
  });

  return { app, streams };
}

/** The session's state this process knows, without a trip through its mailbox; undefined while it is still being recovered. */
function knownState(session: Session): SessionState | undefined {
  try {
    return session.state;
  } catch (err) {
    if (isArborError(err) && err.code === ErrorCodes.NOT_LOADED) return undefined;
    throw err;
  }
}

/**
 * What a (re)connecting SSE client must be sent: `reset` (the whole state,
 * when it is new or its position can no longer be replayed), then `updates`
 * in the order they happened: committed events after its position and the
 * chunks of the answer streaming now that it has not seen. `clientSeq` is the
 * last seq the client holds once `reset` is sent.
 */
export async function planReplay(session: Session, resume: Resume, streams: StreamIndex): Promise<{ reset: SessionState | undefined; clientSeq: number; updates: SessionUpdate[] }> {
  const state = session.state;
  const streamingId = state.stream.status === 'streaming' ? state.stream.messageId : undefined;
  const allChunks = (): SessionUpdate[] => (streamingId === undefined ? [] : session.chunks(streamingId, 0).map((chunk) => ({ kind: 'chunk', chunk })));
  let fromSeq: number;
  let chunkSeen: (messageId: string, index: number, seqAt: number | undefined) => boolean;
  if (resume.kind === 'fresh') {
    // A new client gets the whole state first, then the answer streaming now from its first chunk.
    return { reset: state, clientSeq: state.seq, updates: allChunks() };
  } else if (resume.kind === 'seq') {
    fromSeq = resume.seq;
    // A chunk published after event `seq` has seqAt ≥ seq: the client has not seen it.
    chunkSeen = (_m, _i, seqAt) => seqAt !== undefined && seqAt < resume.seq;
  } else {
    const at = streams.seqAtChunk(session.id, resume.messageId, resume.index);
    // Not indexed (this server did not start that answer): from the answer's start if it is still streaming.
    fromSeq = at ?? (state.stream.status === 'streaming' && state.stream.messageId === resume.messageId ? state.stream.startedSeq : state.seq);
    chunkSeen = (m, i, seqAt) => (m === resume.messageId ? i <= resume.index : seqAt !== undefined && seqAt <= fromSeq);
  }
  // The client claims events this server never committed (another data dir?): it starts over.
  if (fromSeq > state.seq) return { reset: state, clientSeq: state.seq, updates: allChunks() };
  const events = fromSeq < state.seq ? await session.events({ fromSeq: fromSeq + 1 }) : [];
  // The events after fromSeq were released by a snapshot: the client starts over from the state.
  if (fromSeq < state.seq && events[0]?.seq !== fromSeq + 1) return { reset: state, clientSeq: state.seq, updates: allChunks() };
  const ordered: { pos: number; u: SessionUpdate }[] = events.filter((e) => e.seq > fromSeq && e.seq <= state.seq).map((e) => ({ pos: e.seq, u: { kind: 'event', event: e } }));
  if (streamingId !== undefined) {
    for (const chunk of session.chunks(streamingId, 0)) {
      const seqAt = streams.seqAtChunk(session.id, chunk.messageId, chunk.index);
      if (chunkSeen(chunk.messageId, chunk.index, seqAt)) continue;
      // Between event seqAt and event seqAt + 1.
      ordered.push({ pos: (seqAt ?? state.seq) + 0.5, u: { kind: 'chunk', chunk } });
    }
  }
  // A stable sort keeps the chunks of one answer in index order.
  return { reset: undefined, clientSeq: fromSeq, updates: ordered.sort((a, b) => a.pos - b.pos).map((x) => x.u) };
}
