import { ArborError, ErrorCodes } from '../core/errors.ts';
import type { SessionState } from '../core/state.ts';
import type { SessionBackend } from '../backend/backend.ts';
import { parseStorageId, publicSessionId, tenantTag } from './tenancy.ts';

/** One session as `arbor.sessions()` lists it. */
export interface SessionSummary {
  /** the id its tenant knows it by */
  id: string;
  createdAt: number;
  updatedAt: number;
  seq: number;
  status: 'idle' | 'streaming';
  messageCount: number;
  /** the session's `title` config value, when it is a string */
  title?: string;
}

/** One page of `arbor.sessions()`. */
export interface SessionPage {
  sessions: SessionSummary[];
  /** pass it back as `cursor` for the next page; null after the last */
  nextCursor: string | null;
}

export interface ListOptions {
  /** The tenant whose sessions are listed; without it, the default id space (every session stored under its own id). */
  tenant?: string;
  /** Sessions per page, 1–200 (default 50). */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

export const DEFAULT_LIST_LIMIT = 50;
export const MAX_LIST_LIMIT = 200;
const TENANT_CONFIG_KEY = 'arbor.tenant';
const CURSOR_VERSION = 1;
/** Stored sessions summarised at once (reads of sessions not in memory). */
const PEEK_CONCURRENCY = 8;

/** What the lister keeps per session: its summary, the tenant it recorded, and the times of its activity. */
interface Entry {
  seq: number;
  summary: SessionSummary;
  /** `arbor.tenant` as recorded in its config (sessions stored under their own id) */
  recordedTenant: string | undefined;
  /** createdAt and the ts of every message, tool execution and command, ascending */
  times: Float64Array;
}

interface Cursor {
  v: number;
  /** the tenant's tag ('' = default id space; '*' = a tenant listing that includes its sessions under their own id) */
  g: string;
  /** the paging's start: positions are taken as they were at this time */
  s: number;
  /** the last listed session's position (activity time) and storage id */
  k: number;
  i: string;
}

/** ARBOR_INVALID_INPUT naming `field`. */
function invalid(field: string, message: string): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, message, { field });
}

export function checkLimit(limit: unknown, fallback: number, max = MAX_LIST_LIMIT): number {
  if (limit === undefined) return fallback;
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > max) throw invalid('limit', `limit must be an integer from 1 to ${max}, got ${JSON.stringify(limit)}`);
  return limit;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c), 'utf8').toString('base64url');
}

function decodeCursor(raw: string, group: string): Cursor {
  let c: unknown;
  try {
    if (raw.length > 1024 || !/^[A-Za-z0-9_-]+$/.test(raw)) throw new Error('not base64url');
    c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw invalid('cursor', 'cursor is not one this server issued');
  }
  const k = c as Partial<Cursor>;
  if (typeof c !== 'object' || c === null || k.v !== CURSOR_VERSION || typeof k.g !== 'string' || typeof k.s !== 'number' || typeof k.k !== 'number' || typeof k.i !== 'string') {
    throw invalid('cursor', 'cursor is not one this server issued');
  }
  // The same answer as for a made-up cursor: a tenant learns nothing from another's.
  if (k.g !== group) throw invalid('cursor', 'cursor is not one this server issued');
  return k as Cursor;
}

/**
 * The position of a session in a paging that began at `at`: the time of its
 * last activity (its creation, or a message, tool execution or command) at
 * or before `at`; undefined when it did not exist yet. Everything it reads
 * is in the state for good once `at` has passed (those lists only grow, and
 * later events carry later times), so a session keeps its position for the
 * whole paging however it changes meanwhile: no page repeats or skips it.
 */
export function positionAt(times: Float64Array, at: number): number | undefined {
  // times[0] is createdAt (0 when unknown: an old session, taken as existing).
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid]! <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo === 0 ? undefined : times[lo - 1];
}

export function summarise(state: SessionState): { summary: SessionSummary; recordedTenant: string | undefined; times: Float64Array } {
  const title = state.config.title;
  // Nothing happened in a session before it was created: a fork's copied messages count from the fork's creation.
  const created = state.createdAt;
  const times: number[] = [created];
  for (const m of state.messages) times.push(Math.max(created, m.ts));
  for (const t of state.toolExecutions) times.push(Math.max(created, t.ts));
  for (const c of state.commands) times.push(Math.max(created, c.ts));
  const recorded = state.config[TENANT_CONFIG_KEY];
  return {
    summary: {
      id: publicSessionId(state.id),
      createdAt: state.createdAt,
      updatedAt: state.updatedAt,
      seq: state.seq,
      status: state.stream.status,
      messageCount: state.messages.length,
      ...(typeof title === 'string' ? { title } : {}),
    },
    recordedTenant: typeof recorded === 'string' ? recorded : undefined,
    times: Float64Array.from(times).sort(),
  };
}

/**
 * `arbor.sessions()`: lists the stored sessions of one tenant, most recently
 * active first, in pages. Summaries come from the state in memory when the
 * runtime has it, else from a read-only rebuild (`backend.peekSession`),
 * kept per session until its seq moves.
 */
export class SessionLister {
  readonly #backend: () => SessionBackend<SessionState>;
  readonly #hot: (sid: string) => SessionState | undefined;
  readonly #cache = new Map<string, Entry>();

  constructor(backend: () => SessionBackend<SessionState>, hot: (sid: string) => SessionState | undefined) {
    this.#backend = backend;
    this.#hot = hot;
  }

  async list(options: ListOptions = {}): Promise<SessionPage> {
    const limit = checkLimit(options.limit, DEFAULT_LIST_LIMIT);
    const tenant = options.tenant;
    if (tenant !== undefined && (typeof tenant !== 'string' || tenant === '')) throw invalid('tenant', 'tenant must be a non-empty string');
    const tag = tenantTag(tenant);
    const group = tenant === undefined ? '' : `${tag}*`;
    if (options.cursor !== undefined && typeof options.cursor !== 'string') throw invalid('cursor', 'cursor must be a string');
    const cursor = options.cursor === undefined || options.cursor === '' ? undefined : decodeCursor(options.cursor, group);
    // One millisecond back: an event committed after this call reads the clock later, so it never counts as before the start.
    const at = cursor?.s ?? Date.now() - 1;
    const stored = await this.#backend().listSessions();
    const mine = stored.filter(({ sid }) => {
      const parsed = parseStorageId(sid);
      // A tenant's sessions: those under its tag, and those it created under their own id before tenants had their own space.
      return tenant === undefined ? parsed.tag === '' : parsed.tag === tag || (tag !== '' && parsed.tag === '');
    });
    const entries = await this.#entries(mine);
    const placed: { sid: string; key: number; entry: Entry }[] = [];
    for (const [sid, entry] of entries) {
      if (tenant !== undefined && parseStorageId(sid).tag === '' && entry.recordedTenant !== tenant) continue;
      if (entry.summary.seq === 0) continue;
      const key = positionAt(entry.times, at);
      if (key === undefined) continue;
      if (cursor !== undefined && !(key < cursor.k || (key === cursor.k && sid > cursor.i))) continue;
      placed.push({ sid, key, entry });
    }
    placed.sort((a, b) => b.key - a.key || (a.sid < b.sid ? -1 : a.sid > b.sid ? 1 : 0));
    const page = placed.slice(0, limit);
    const last = page.at(-1);
    return {
      sessions: page.map((p) => ({ ...p.entry.summary })),
      nextCursor: placed.length > limit && last !== undefined ? encodeCursor({ v: CURSOR_VERSION, g: group, s: at, k: last.key, i: last.sid }) : null,
    };
  }

  /** Forgets a session's cached summary (it was deleted, or replaced). */
  forget(sid: string): void {
    this.#cache.delete(sid);
  }

  async #entries(stored: { sid: string; seq: number }[]): Promise<Map<string, Entry>> {
    const out = new Map<string, Entry>();
    const toRead: { sid: string; seq: number }[] = [];
    for (const s of stored) {
      const hot = this.#hot(s.sid);
      const cached = this.#cache.get(s.sid);
      if (hot !== undefined && hot.seq > 0 && hot.seq >= s.seq) {
        // Same seq and same creation: the same session (one deleted and created again elsewhere has another createdAt).
        out.set(s.sid, cached !== undefined && cached.seq === hot.seq && cached.summary.createdAt === hot.createdAt ? cached : this.#remember(s.sid, hot));
      } else if (cached !== undefined && cached.seq === s.seq) {
        out.set(s.sid, cached);
      } else {
        toRead.push(s);
      }
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < toRead.length) {
        const { sid } = toRead[next++]!;
        const peeked = await this.#backend().peekSession(sid);
        if (peeked !== undefined) out.set(sid, this.#remember(sid, peeked.state));
      }
    };
    await Promise.all(Array.from({ length: Math.min(PEEK_CONCURRENCY, toRead.length) }, worker));
    return out;
  }

  #remember(sid: string, state: SessionState): Entry {
    const entry: Entry = { seq: state.seq, ...summarise(state) };
    this.#cache.set(sid, entry);
    return entry;
  }
}
