import { readFile } from 'node:fs/promises';
import pg from 'pg';
import type { BackendCheck, BackendOwnership, BackendStats, RecoveredSession, SessionBackend, StoredSession } from '../backend/backend.ts';
import { checkAppendAgainst, checkAppendInput, duplicateOf } from '../backend/append-checks.ts';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { assertSessionId } from '../core/ids.ts';
import type { JournalRecord } from '../core/record.ts';
import type { AppendInput, AppendResult, DedupeEntry } from '../backend/backend.ts';
import { SessionReplay, type DamagedSnapshot, type RecoveryHooks } from '../backend/replay.ts';
import { decodeSnapshot, encodeSnapshot } from '../backend/snapshot-codec.ts';
import { ContentSealer, keyCheck, keyCheckOpens, masterKeyId, newDataKey, parseMasterKey, resolveMasterKey, unwrapDataKey, wrapDataKey, type MasterKey } from '../backend/encryption.ts';
import { migrate, quoteSchema } from './migrations.ts';
import { errorChannel, journalWriteChannel, leaseChannel, recoveryChannel, snapshotChannel, type ErrorMessage, type JournalWriteMessage, type LeaseMessage, type RecoveryMessage, type SnapshotMessage } from '../telemetry/channels.ts';
import { resolvePgBackendOptions, type PgBackendOptions, type ResolvedPgBackendOptions } from './options.ts';

/** Knobs for tests only; not part of the documented surface. */
export interface PgBackendInternals {
  /**
   * Writes without any lease check: no fence in the database, no local
   * deadline, and a lease that renewal finds gone is not noticed (the node
   * goes on believing it owns the session, like a store without fencing).
   * Exists only so that a test can show the double write that fencing
   * prevents (its negative control). Never use it.
   */
  unsafeDisableFencing?: boolean;
}

/** What `stats()` reports beyond the common figures. */
export interface PgBackendStats extends BackendStats {
  nodeId: string;
  /** sessions whose lease this process holds */
  heldSessions: number;
  /** group-commit transactions so far, and the events they carried */
  flushes: number;
  flushedEvents: number;
  /** appends rejected with ARBOR_FENCED, and sessions lost (fenced or lease not renewed) */
  fencedAppends: number;
  sessionsLost: number;
}

/** A lease this process holds, and the session's write-side state under it. */
interface Held {
  sid: string;
  epoch: number;
  /** performance.now() after which the lease is no longer trusted locally (sent time of the last renewal + leaseMs) */
  validUntil: number;
  /** highest seq assigned, pending appends included */
  lastSeq: number;
  /** highest seq committed */
  durableSeq: number;
  /** appends queued or in flight */
  pending: number;
  cids: Map<string, AppendResult | Promise<AppendResult>>;
  quarantined: string | undefined;
}

interface Pending {
  held: Held;
  seq: number;
  ts: number;
  type: string;
  v: number;
  data: string;
  cid: string | undefined;
  bytes: number;
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

type State = 'open' | 'closing' | 'closed';

/** A session as read back from the tables, with what its write side needs. */
interface Rebuilt<S> {
  session: RecoveredSession<S> | undefined;
  lastSeq: number;
  cids: Map<string, AppendResult>;
  quarantined: string | undefined;
}

interface SnapshotRow {
  seq: string;
  body: Buffer;
  state_schema_version: number;
}

interface EventRow {
  seq: string;
  ts: number;
  type: string;
  v: number;
  data: string;
  cid: string | null;
}

/** Rows of an append, column by column, for `unnest`. */
interface Columns {
  sid: string[];
  seq: number[];
  ts: number[];
  type: string[];
  v: number[];
  data: string[];
  cid: (string | null)[];
}

/**
 * The PostgreSQL backend: journal, snapshots and session ownership in one
 * database that several Arbor processes share (docs/postgres.md).
 *
 * Ownership: `loadSession` takes the session's lease (a row with owner, epoch
 * and an expiry on the database clock) or rejects with ARBOR_NOT_OWNER naming
 * the owner; leases are renewed together every `renewEveryMs`. A session whose
 * lease could not be renewed in time, or whose write was fenced, is dropped:
 * `onSessionLost` listeners hear of it, and nothing is written for it again
 * until `loadSession` re-acquires it.
 *
 * Durability: an append resolves after the COMMIT of the transaction that
 * carried it (with the server's `synchronous_commit`, on by default: flushed
 * to the server's WAL). Appends queued while a transaction runs go into the
 * next one; one transaction per flush however many sessions wrote.
 *
 * Fencing: the flush inserts a session's rows only if, in the same statement,
 * its lease row still names this process at the epoch it acquired and has not
 * expired; the lease row is share-locked, so a takeover waits for the flush to
 * commit and then sees its rows. Appends of other sessions in the same batch
 * are unaffected.
 */
export class PgBackend<S> implements SessionBackend<S> {
  readonly kind = 'postgres';
  readonly options: Readonly<ResolvedPgBackendOptions>;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #hooks: RecoveryHooks<S>;
  readonly #fencing: boolean;
  readonly #sql: ReturnType<typeof statements>;
  readonly #held = new Map<string, Held>();
  /** sessions lost since they were last held, with why: appends reject ARBOR_FENCED until re-acquired */
  readonly #lost = new Map<string, string>();
  /** per-session chain of loads and releases, so they never interleave */
  readonly #sessionOps = new Map<string, Promise<unknown>>();
  readonly #listeners: ((sid: string, reason: string) => void)[] = [];
  /** leases taken by loads still rebuilding their session: renewed, not yet writable */
  readonly #loading = new Map<string, { epoch: number; validUntil: number; lost: boolean }>();
  #queue: Pending[] = [];
  #queuedBytes = 0;
  #pumping = false;
  #scheduled = false;
  #idle: (() => void)[] = [];
  #renewTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  #state: State = 'open';
  #closing: Promise<void> | undefined;
  #lastFlushAt = Date.now();
  #flushes = 0;
  #flushedEvents = 0;
  #fencedAppends = 0;
  #sessionsLost = 0;
  /** performance.now() of the last lease renewal the database answered (or of opening) */
  #lastRenewalAt = performance.now();
  #renewalFailure: string | undefined;
  /** Encryption at rest: the master key (undefined: off), the unwrapped data keys of the sessions met, and the sealer using them. */
  #master: MasterKey | undefined;
  readonly #dataKeys = new Map<string, Buffer>();
  readonly #sealer: ContentSealer | undefined;

  private constructor(options: Readonly<ResolvedPgBackendOptions>, pool: pg.Pool, ownsPool: boolean, hooks: RecoveryHooks<S>, internals: PgBackendInternals, master: MasterKey | undefined) {
    this.options = options;
    this.#master = master;
    this.#sealer = master === undefined ? undefined : new ContentSealer((sid) => this.#dataKey(sid));
    this.#pool = pool;
    this.#ownsPool = ownsPool;
    this.#hooks = hooks;
    this.#fencing = internals.unsafeDisableFencing !== true;
    this.#sql = statements(quoteSchema(options.schema));
  }

  /**
   * Connects, applies pending migrations (safe when several processes start
   * at once) and starts renewing leases. Takes no lease yet: `loadSession` does.
   */
  static async open<S>(options: PgBackendOptions<S>, internals: PgBackendInternals = {}): Promise<PgBackend<S>> {
    const o = resolvePgBackendOptions(options);
    const master = await resolveMasterKey((file) => readFile(file), o);
    const ownsPool = options.pool === undefined;
    const pool = options.pool ?? new pg.Pool({ connectionString: o.connectionString, max: o.poolSize, application_name: `arbor ${o.nodeId}`.slice(0, 63) });
    // An idle client that dies (server restart) emits 'error' on the pool; without a listener that kills the process.
    // The pool replaces the client by itself; the operator hears of it.
    const onIdleError = (err: Error): void => reportError(ErrorCodes.IO_ERROR, `an idle PostgreSQL connection failed: ${err.message}`);
    if (ownsPool) pool.on('error', onIdleError);
    try {
      // The key is checked before anything is written (migrations included): a wrong or missing one refuses here.
      await openKeyRing(pool, o.schema, master, false);
      await migrate(pool, o.schema);
      await openKeyRing(pool, o.schema, master, true);
    } catch (err) {
      // The migration's error is the one to report; ending a pool whose server is unreachable fails too.
      if (ownsPool) await pool.end().catch(() => undefined);
      throw err;
    }
    const backend = new PgBackend<S>(o, pool, ownsPool, options.hooks, internals, master);
    backend.#renewTimer = setInterval(() => void backend.#renew(), o.renewEveryMs);
    backend.#renewTimer.unref();
    return backend;
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** This node as the others see it (the server routes requests for sessions it does not own by it). */
  get ownership(): BackendOwnership {
    return { nodeId: this.options.nodeId, nodeAddress: this.options.nodeAddress, leaseMs: this.options.leaseMs };
  }

  // ---- appends and the group committer ----------------------------------

  /**
   * Queues one event of a session this process holds (`loadSession` first) and
   * resolves after the COMMIT that carried it. Rejects with
   * ARBOR_INVALID_INPUT (`details.field`), ARBOR_TOO_LARGE, ARBOR_SEQ_CONFLICT,
   * ARBOR_QUEUE_FULL, ARBOR_SESSION_QUARANTINED (nothing written),
   * ARBOR_NOT_OWNER (not loaded here), ARBOR_FENCED (the lease was lost: not
   * committed), ARBOR_IO_ERROR (the transaction failed: not acknowledged, and
   * the session is dropped so that a reload learns what committed) or ARBOR_CLOSED.
   */
  append(input: AppendInput): Promise<AppendResult> {
    try {
      return this.#append(input);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #append(input: AppendInput): Promise<AppendResult> {
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'postgres backend is closed');
    const { sid, type, data, clientMessageId: cid } = input;
    const v = checkAppendInput(input);
    const held = this.#writable(sid);
    const duplicate = duplicateOf(held.cids, cid);
    if (duplicate !== undefined) return duplicate;
    checkAppendAgainst(input, held);
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} is not JSON-serialisable: ${(err as Error).message}`, { field: 'data', sessionId: sid }, { cause: err });
    }
    if (json === undefined) throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} has no JSON form`, { field: 'data', sessionId: sid });
    const bytes = Buffer.byteLength(json) + Buffer.byteLength(type) + (cid === undefined ? 0 : Buffer.byteLength(cid));
    if (bytes > this.options.maxEventBytes) {
      throw new ArborError(ErrorCodes.TOO_LARGE, `event of session ${sid} is ${bytes} bytes; the limit is ${this.options.maxEventBytes}`, { sessionId: sid, bytes, limit: this.options.maxEventBytes });
    }
    if (this.#queue.length >= this.options.maxQueueRecords || this.#queuedBytes + bytes > this.options.maxQueueBytes) {
      throw new ArborError(ErrorCodes.QUEUE_FULL, `postgres append queue is full (${this.#queue.length} events, ${this.#queuedBytes} bytes); retry later`, {
        sessionId: sid,
        queueDepth: this.#queue.length,
        queuedBytes: this.#queuedBytes,
      });
    }
    // Past every check: from here the append is committed to the queue, and its seq taken.
    const seq = held.lastSeq + 1;
    held.lastSeq = seq;
    held.pending += 1;
    const ts = input.ts ?? Date.now();
    const promise = new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ held, seq, ts, type, v, data: json, cid, bytes, resolve, reject });
    });
    this.#queuedBytes += bytes;
    if (cid !== undefined) this.#rememberCid(held, cid, promise);
    this.#schedule();
    return promise;
  }

  /** The session's lease as this process holds it, or why it may not write. */
  #writable(sid: string): Held {
    const held = this.#held.get(sid);
    if (held === undefined) {
      const lost = this.#lost.get(sid);
      if (lost !== undefined) {
        this.#fencedAppends += 1;
        throw new ArborError(ErrorCodes.FENCED, `session ${sid} was lost by node ${this.nodeId} (${lost}); load it again to write`, { sessionId: sid, reason: lost });
      }
      throw new ArborError(ErrorCodes.NOT_OWNER, `session ${sid} is not held by node ${this.nodeId}; loadSession takes it`, { sessionId: sid });
    }
    // The process may have been paused past the lease's end: step back before writing anything.
    if (this.#fencing && performance.now() > held.validUntil) {
      this.#lose(held, 'lease expired before it was renewed');
      this.#fencedAppends += 1;
      throw new ArborError(ErrorCodes.FENCED, `session ${sid}: node ${this.nodeId} lease expired before it was renewed`, { sessionId: sid, epoch: held.epoch });
    }
    return held;
  }

  #rememberCid(held: Held, cid: string, result: AppendResult | Promise<AppendResult>): void {
    held.cids.set(cid, result);
    if (result instanceof Promise) {
      // Once settled keep the plain result; forget a failed one (it was never acknowledged).
      result.then(
        (r) => {
          if (held.cids.get(cid) === result) held.cids.set(cid, r);
        },
        () => {
          if (held.cids.get(cid) === result) held.cids.delete(cid);
        },
      );
    }
    if (held.cids.size > this.options.dedupeWindow) held.cids.delete(held.cids.keys().next().value as string);
  }

  #schedule(): void {
    if (this.#pumping || this.#scheduled) return;
    this.#scheduled = true;
    const start = (): void => {
      this.#scheduled = false;
      void this.#pump();
    };
    // Fast path: on a microtask, so appends made in the same tick share the transaction.
    if (this.options.flushIntervalMs === 0) queueMicrotask(start);
    else setTimeout(start, this.options.flushIntervalMs);
  }

  /** The single writer: one transaction at a time, each carrying everything queued (up to the caps). */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0) {
        await this.#flush(this.#takeBatch());
      }
    } finally {
      this.#pumping = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const done of idle) done();
    }
  }

  #takeBatch(): Pending[] {
    let n = 0;
    let bytes = 0;
    while (n < this.#queue.length && n < this.options.maxBatchRecords) {
      const b = this.#queue[n]!.bytes;
      if (n > 0 && bytes + b > this.options.maxBatchBytes) break;
      bytes += b;
      n += 1;
    }
    const batch = this.#queue.slice(0, n);
    this.#queue = this.#queue.slice(n);
    this.#queuedBytes -= bytes;
    return batch;
  }

  async #flush(batch: Pending[]): Promise<void> {
    // Appends of a session lost (or re-acquired under a new epoch) since they were queued never go out.
    const live: Pending[] = [];
    const now = performance.now();
    for (const p of batch) {
      const current = this.#held.get(p.held.sid);
      if (this.#fencing && current === p.held && now > current.validUntil) this.#lose(current, 'lease expired before it was renewed');
      if (this.#held.get(p.held.sid) !== p.held) {
        this.#rejectFenced(p, this.#lost.get(p.held.sid) ?? 'the session was reloaded or released');
        continue;
      }
      live.push(p);
    }
    let attempt = live;
    const started = performance.now();
    for (let round = 0; attempt.length > 0; round += 1) {
      let committed: Set<string>;
      try {
        committed = await this.#insert(attempt);
      } catch (err) {
        // A clientMessageId older than the in-memory window whose row still exists: the unique index
        // refused the whole statement (rolled back, nothing written). Answer those appends as the
        // duplicates they are and write the rest again.
        if (isCidConflict(err) && round < 3) {
          try {
            attempt = await this.#settleDuplicates(attempt);
            continue;
          } catch (lookupErr) {
            this.#failBatch(attempt, lookupErr);
            return;
          }
        }
        this.#failBatch(attempt, err);
        return;
      }
      this.#flushes += 1;
      this.#lastFlushAt = Date.now();
      if (journalWriteChannel.hasSubscribers) {
        let bytes = 0;
        for (const p of attempt) bytes += p.bytes;
        // The COMMIT is as durable as the server's synchronous_commit (on by default: flushed to its WAL).
        journalWriteChannel.publish({ batchSize: attempt.length, bytes, durationMs: performance.now() - started, durability: 'fsync', queueDepth: this.#queue.length } satisfies JournalWriteMessage);
      }
      for (const p of attempt) {
        if (!committed.has(p.held.sid)) {
          // Another node took the lease (or it expired): this write was fenced and is not in the table.
          if (this.#held.get(p.held.sid) === p.held) this.#lose(p.held, 'fenced: the lease was taken over or expired');
          this.#rejectFenced(p, this.#lost.get(p.held.sid) ?? 'fenced');
          continue;
        }
        this.#flushedEvents += 1;
        p.held.pending -= 1;
        if (p.seq > p.held.durableSeq) p.held.durableSeq = p.seq;
        p.resolve({ sid: p.held.sid, seq: p.seq, lsn: 0, ts: p.ts, duplicate: false });
      }
      return;
    }
  }

  /**
   * The transaction failed. Its outcome may be unknown (the COMMIT may have happened before the
   * connection broke), so nothing is acknowledged and each session is dropped: a reload reads what
   * really committed.
   */
  #failBatch(batch: Pending[], err: unknown): void {
    const message = (err as Error)?.message ?? String(err);
    reportError(ErrorCodes.IO_ERROR, `a flush of ${batch.length} events failed, none is acknowledged: ${message}`);
    for (const p of batch) {
      if (this.#held.get(p.held.sid) === p.held) this.#lose(p.held, `a write failed: ${message}`);
      p.held.pending -= 1;
      p.reject(new ArborError(ErrorCodes.IO_ERROR, `session ${p.held.sid} seq ${p.seq}: the transaction failed, the append is not acknowledged: ${message}`, { sessionId: p.held.sid, seq: p.seq }, { cause: err }));
    }
  }

  /**
   * After a (sid, cid) unique violation: resolves the appends whose clientMessageId is already
   * stored as duplicates of the stored event, and returns the appends to write again. A session
   * whose other appends were numbered after a duplicate cannot keep those numbers: it is dropped
   * (those appends reject ARBOR_IO_ERROR, not written) unless the duplicates were its last appends.
   */
  async #settleDuplicates(batch: Pending[]): Promise<Pending[]> {
    const withCid = batch.filter((p) => p.cid !== undefined);
    const { rows } = await this.#pool.query<{ sid: string; cid: string; seq: string; ts: number }>(this.#sql.findCids, [withCid.map((p) => p.held.sid), withCid.map((p) => p.cid)]);
    const found = new Map(rows.map((r) => [`${r.sid} ${r.cid}`, { seq: Number(r.seq), ts: r.ts }]));
    const stored = (p: Pending) => (p.cid === undefined ? undefined : found.get(`${p.held.sid} ${p.cid}`));
    const affected = new Set(withCid.filter((p) => stored(p) !== undefined).map((p) => p.held));
    for (const held of affected) {
      const mine = batch.filter((p) => p.held === held);
      const onlyDuplicates = mine.every((p) => stored(p) !== undefined) && held.pending === mine.length && held.lastSeq === Math.max(...mine.map((p) => p.seq));
      if (onlyDuplicates) held.lastSeq = Math.min(...mine.map((p) => p.seq)) - 1;
      else if (this.#held.get(held.sid) === held) this.#lose(held, 'a clientMessageId older than the dedupe window came again among other appends; reload the session');
      for (const p of mine) {
        held.pending -= 1;
        const original = stored(p);
        if (original !== undefined) p.resolve({ sid: held.sid, seq: original.seq, lsn: 0, ts: original.ts, duplicate: true });
        else p.reject(new ArborError(ErrorCodes.IO_ERROR, `session ${held.sid} seq ${p.seq}: not written, an earlier append of the batch was a duplicate; reload the session`, { sessionId: held.sid, seq: p.seq }));
      }
    }
    return batch.filter((p) => !affected.has(p.held));
  }

  #rejectFenced(p: Pending, reason: string): void {
    this.#fencedAppends += 1;
    p.held.pending -= 1;
    p.reject(new ArborError(ErrorCodes.FENCED, `session ${p.held.sid} seq ${p.seq}: not committed, node ${this.nodeId} no longer holds the lease (${reason})`, { sessionId: p.held.sid, seq: p.seq, epoch: p.held.epoch }));
  }

  /** One statement, one transaction: the fenced multi-row insert. Returns the sessions whose rows went in. */
  async #insert(batch: Pending[]): Promise<Set<string>> {
    const epochs = new Map<string, number>();
    const c: Columns = { sid: [], seq: [], ts: [], type: [], v: [], data: [], cid: [] };
    const sealer = this.#sealer;
    // Encryption at rest: every session of the batch has its data key (made and stored first when new), and
    // each event's data is sealed with it here, so the database only ever receives ciphertext.
    if (sealer !== undefined) await this.#ensureKeys([...new Set(batch.map((p) => p.held.sid))]);
    for (const p of batch) {
      epochs.set(p.held.sid, p.held.epoch);
      c.sid.push(p.held.sid);
      c.seq.push(p.seq);
      c.ts.push(p.ts);
      c.type.push(p.type);
      c.v.push(p.v);
      c.data.push(sealer === undefined ? p.data : sealer.sealDataJson(p.held.sid, p.seq, p.data));
      c.cid.push(p.cid ?? null);
    }
    const rows = [c.sid, c.seq, c.ts, c.type, c.v, c.data, c.cid];
    if (!this.#fencing) {
      await this.#pool.query(this.#sql.insertUnfenced, rows);
      return new Set(epochs.keys());
    }
    const { rows: held } = await this.#pool.query<{ sid: string }>(this.#sql.insertFenced, [this.nodeId, [...epochs.keys()], [...epochs.values()], ...rows]);
    return new Set(held.map((r) => r.sid));
  }

  /** Resolves when nothing is queued or being written. */
  #drained(): Promise<void> {
    if (!this.#pumping && !this.#scheduled && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  // ---- leases -------------------------------------------------------------

  onSessionLost(listener: (sid: string, reason: string) => void): void {
    this.#listeners.push(listener);
  }

  /** Drops a held session: no more writes for it until re-acquired; listeners hear of it once. */
  #lose(held: Held, reason: string): void {
    if (this.#held.get(held.sid) !== held) return;
    this.#held.delete(held.sid);
    this.#lost.set(held.sid, reason);
    this.#sessionsLost += 1;
    publishLease(held.sid, 'lost', this.nodeId, held.epoch, reason);
    for (const listener of this.#listeners) {
      try {
        listener(held.sid, reason);
      } catch (err) {
        // A listener's failure must not stop the others hearing of the loss; it is reported, not lost.
        reportError(ErrorCodes.HANDLER_CRASHED, `an onSessionLost listener threw: ${(err as Error)?.message ?? String(err)}`, held.sid);
      }
    }
  }

  /**
   * Renews every held lease in one statement. A lease the database did not
   * extend (expired, or taken over) is lost at once; one whose renewal failed
   * or came late is lost when its local deadline passes.
   */
  async #renew(): Promise<void> {
    if (this.#renewing !== undefined || this.#state === 'closed') return;
    const run = async (): Promise<void> => {
      const now = performance.now();
      // (Without fencing — a test's negative control only — a lost lease goes unnoticed.)
      if (this.#fencing) for (const h of [...this.#held.values()]) if (now > h.validUntil) this.#lose(h, 'lease expired before it was renewed');
      const held = [...this.#held.values()];
      const loading = [...this.#loading.entries()];
      if (held.length === 0 && loading.length === 0) {
        // Nothing to renew: no lag, unless renewals were failing (the database is asked once, to know when they would work again).
        if (this.#renewalFailure !== undefined) {
          try {
            await this.#pool.query('SELECT 1');
          } catch (err) {
            this.#renewalFailure = (err as Error)?.message ?? String(err);
            return;
          }
        }
        this.#lastRenewalAt = now;
        this.#renewalFailure = undefined;
        return;
      }
      const sids = [...held.map((h) => h.sid), ...loading.map(([sid]) => sid)];
      const epochs = [...held.map((h) => h.epoch), ...loading.map(([, l]) => l.epoch)];
      const sentAt = performance.now();
      let renewed: Set<string>;
      try {
        const { rows } = await this.#pool.query<{ sid: string }>(this.#sql.renew, [this.nodeId, this.options.leaseMs, sids, epochs]);
        renewed = new Set(rows.map((r) => r.sid));
        this.#lastRenewalAt = sentAt;
        this.#renewalFailure = undefined;
      } catch (err) {
        this.#renewalFailure = (err as Error)?.message ?? String(err);
        // The database is unreachable: keep the old deadlines; sessions step back when they pass.
        reportError(ErrorCodes.IO_ERROR, `lease renewal of node ${this.nodeId} failed: ${(err as Error)?.message ?? String(err)}`);
        return;
      }
      for (const [sid, l] of loading) {
        if (renewed.has(sid)) l.validUntil = Math.max(l.validUntil, sentAt + this.options.leaseMs);
        else l.lost = true;
      }
      for (const h of held) {
        if (renewed.has(h.sid)) {
          // The database set expires_at = its now() + leaseMs, and its now() came after sentAt.
          h.validUntil = Math.max(h.validUntil, sentAt + this.options.leaseMs);
        } else if (this.#fencing) {
          this.#lose(h, 'lease not renewed: it expired or another node took it over');
        }
      }
    };
    this.#renewing = run().finally(() => (this.#renewing = undefined));
    await this.#renewing;
  }

  /** Runs `op` after every earlier load or release of `sid` has finished. */
  #serial<T>(sid: string, op: () => Promise<T>): Promise<T> {
    const prev = this.#sessionOps.get(sid) ?? Promise.resolve();
    const next = prev.then(op, op);
    // The caller gets the failure through `next`; the chain only has to go on for the next operation.
    const tail = next.catch(() => undefined);
    this.#sessionOps.set(sid, tail);
    void tail.then(() => {
      if (this.#sessionOps.get(sid) === tail) this.#sessionOps.delete(sid);
    });
    return next;
  }

  /** Takes (or renews with a new epoch) the lease of `sid`, or rejects with ARBOR_NOT_OWNER. */
  async #acquire(sid: string): Promise<{ epoch: number; sentAt: number }> {
    for (let attempt = 0; ; attempt += 1) {
      const sentAt = performance.now();
      const { rows } = await this.#pool.query<{ epoch: string }>(this.#sql.acquire, [sid, this.nodeId, this.options.nodeAddress ?? null, this.options.leaseMs]);
      if (rows.length === 1) return { epoch: Number(rows[0]!.epoch), sentAt };
      const { rows: owners } = await this.#pool.query<{ owner: string; owner_address: string | null; epoch: string; expires_in_ms: number }>(this.#sql.owner, [sid]);
      const o = owners[0];
      // The lease expired (or was released) between the two statements: try again.
      if ((o === undefined || o.expires_in_ms <= 0) && attempt < 3) continue;
      throw new ArborError(ErrorCodes.NOT_OWNER, `session ${sid} is owned by node ${o?.owner ?? '(unknown)'}${o?.owner_address ? ` at ${o.owner_address}` : ''}`, {
        sessionId: sid,
        owner: o?.owner,
        ownerAddress: o?.owner_address ?? undefined,
        epoch: o === undefined ? undefined : Number(o.epoch),
        expiresInMs: o === undefined ? undefined : Math.max(0, Math.ceil(o.expires_in_ms)),
      });
    }
  }

  /**
   * Takes the session for this process and rebuilds it: acquires its lease
   * (a new epoch; rejects with ARBOR_NOT_OWNER and `details.owner`,
   * `details.ownerAddress` when another live node holds it), then the newest
   * valid snapshot and every event after it through the reducer. Undefined
   * when nothing was ever written for it — the lease is held all the same, so
   * the caller can start the session.
   */
  loadSession(sid: string): Promise<RecoveredSession<S> | undefined> {
    try {
      assertSessionId(sid);
      this.#assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#serial(sid, () => this.#load(sid));
  }

  async #load(sid: string): Promise<RecoveredSession<S> | undefined> {
    this.#assertOpen();
    const started = performance.now();
    // Appends queued under the current lease go out (or fail) before the epoch changes under them.
    if ((this.#held.get(sid)?.pending ?? 0) > 0) await this.#drained();
    const { epoch, sentAt } = await this.#acquire(sid);
    const previous = this.#held.get(sid);
    if (previous !== undefined) this.#held.delete(sid);
    try {
      // While it is rebuilt the session is not held yet, but its lease is renewed with the others.
      const loading = { epoch, validUntil: sentAt + this.options.leaseMs, lost: false };
      this.#loading.set(sid, loading);
      let rebuilt: Rebuilt<S>;
      try {
        rebuilt = await this.#rebuild(sid);
      } finally {
        this.#loading.delete(sid);
      }
      if (loading.lost || performance.now() > loading.validUntil) {
        throw new ArborError(ErrorCodes.FENCED, `session ${sid}: node ${this.nodeId} lost the lease while loading the session`, { sessionId: sid, epoch });
      }
      const validUntil = loading.validUntil;
      const held: Held = {
        sid,
        epoch,
        validUntil,
        lastSeq: rebuilt.lastSeq,
        durableSeq: rebuilt.lastSeq,
        pending: 0,
        cids: rebuilt.cids,
        quarantined: rebuilt.quarantined,
      };
      this.#held.set(sid, held);
      this.#lost.delete(sid);
      publishLease(sid, 'taken', this.nodeId, epoch);
      if (recoveryChannel.hasSubscribers) {
        const r = rebuilt.session?.report;
        recoveryChannel.publish({
          sessionId: sid,
          kind: r === undefined ? 'new' : r.snapshotSeq > 0 ? 'snapshot' : 'journal',
          trigger: 'access',
          replayed: r?.replayed ?? 0,
          durationMs: performance.now() - started,
          status: r?.status ?? 'recovered',
        } satisfies RecoveryMessage);
      }
      return rebuilt.session;
    } catch (err) {
      // Reads failed: give the lease back rather than hold a session nobody serves. If that fails too the
      // lease expires by itself within leaseMs; the load's own error is the one to report.
      await this.#pool.query(this.#sql.release, [[sid], [epoch], this.nodeId]).catch(() => undefined);
      throw err;
    }
  }

  async #rebuild(sid: string): Promise<Rebuilt<S>> {
    // The data key as the table has it now (another node may have deleted and re-created the session meanwhile).
    if (this.#sealer !== undefined) await this.#fetchKey(sid);
    const { rows: snaps } = await this.#pool.query<SnapshotRow>(this.#sql.snapshots, [sid]);
    const damagedSnapshots: DamagedSnapshot[] = [];
    const cids = new Map<string, AppendResult>();
    let snapshot: { state: unknown; seq: number; stateSchemaVersion: number } | undefined;
    for (const row of snaps) {
      const seq = Number(row.seq);
      const where = `snapshots(${sid}, ${seq})`;
      const decoded = await this.#decodeSnapshot(sid, seq, row.body);
      if (typeof decoded === 'string') {
        damagedSnapshots.push({ file: where, reason: decoded });
        continue;
      }
      snapshot = decoded;
      for (const [cid, s, , ts] of decoded.dedupe) cids.set(cid, { sid, seq: s, lsn: 0, ts, duplicate: false });
      break;
    }
    const replay = new SessionReplay(this.#hooks, sid, { snapshot, stateSchemaVersion: this.options.stateSchemaVersion, damagedSnapshots });
    const report = replay.report;
    const { rows: events } = await this.#pool.query<EventRow>(this.#sql.eventsFrom, [sid, report.seq + 1]);
    const { rows: maxRows } = await this.#pool.query<{ max: string | null }>(this.#sql.maxSeq, [sid]);
    const maxEventSeq = Number(maxRows[0]?.max ?? 0);
    for (const row of events) {
      const record = this.#toRecord(sid, row);
      if (record.cid !== undefined) cids.set(record.cid, { sid, seq: record.seq, lsn: 0, ts: record.ts, duplicate: false });
      replay.apply(record);
    }
    // Rows carry no LSN (it is always 0): the report names none.
    delete report.lastLsn;
    const status = report.status;
    let quarantined: string | undefined;
    if (status === 'damaged') quarantined = `events ${report.missing?.[0]}..${report.missing?.[1]} are missing or damaged`;
    if (status === 'failed') quarantined = report.error ?? 'recovery failed';
    const state = replay.state;
    while (cids.size > this.options.dedupeWindow) cids.delete(cids.keys().next().value as string);
    const lastSeq = Math.max(report.seq, maxEventSeq, Number(snaps[0]?.seq ?? 0));
    if (snaps.length === 0 && events.length === 0 && maxEventSeq === 0) return { session: undefined, lastSeq: 0, cids, quarantined: undefined };
    return { session: { state, seq: report.seq, status, report }, lastSeq, cids, quarantined };
  }

  /**
   * Gives the session's lease up (after its queued appends are settled); other nodes may take it at
   * once. For a session already lost it only forgets the loss: later appends then reject
   * ARBOR_NOT_OWNER instead of ARBOR_FENCED.
   */
  release(sid: string): Promise<void> {
    try {
      assertSessionId(sid);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#serial(sid, async () => {
      const held = this.#held.get(sid);
      if (held === undefined) {
        this.#lost.delete(sid);
        return;
      }
      if (held.pending > 0) await this.#drained();
      if (this.#held.get(sid) !== held) return;
      this.#held.delete(sid);
      await this.#pool.query(this.#sql.release, [[sid], [held.epoch], this.nodeId]);
      publishLease(sid, 'released', this.nodeId, held.epoch);
    });
  }

  // ---- reads and snapshots ------------------------------------------------

  /** Ids of every session with events or snapshots in the database (every node's). */
  async sessionIds(): Promise<string[]> {
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ sid: string }>(this.#sql.sessionIds);
    return rows.map((r) => r.sid);
  }

  /** Whether the session has a stored event or snapshot; needs no lease. */
  async exists(sid: string): Promise<boolean> {
    assertSessionId(sid);
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ found: boolean }>(this.#sql.exists, [sid]);
    return rows[0]?.found === true;
  }

  /** The session's stored events with seq ≥ `fromSeq`, in order; needs no lease. */
  async read(sid: string, fromSeq = 1): Promise<JournalRecord[]> {
    assertSessionId(sid);
    this.#assertOpen();
    // A session this node does not hold may have been deleted and created again elsewhere: its key as stored now.
    if (this.#sealer !== undefined && (!this.#dataKeys.has(sid) || !this.#held.has(sid))) await this.#fetchKey(sid);
    const { rows } = await this.#pool.query<EventRow>(this.#sql.eventsFrom, [sid, fromSeq]);
    return rows.map((r) => this.#toRecord(sid, r));
  }

  /** Every session with events or snapshots in the database (every node's), with its newest seq; takes no lease. */
  async listSessions(): Promise<StoredSession[]> {
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ sid: string; seq: string }>(this.#sql.listSessions);
    return rows.map((r) => ({ sid: r.sid, seq: Number(r.seq) }));
  }

  /**
   * The session rebuilt read-only from its rows (newest valid snapshot at or
   * below `atSeq`, then the events after it up to `atSeq`): committed data
   * only, whichever node owns it; takes no lease.
   */
  async peekSession(sid: string, atSeq?: number): Promise<RecoveredSession<S> | undefined> {
    assertSessionId(sid);
    this.#assertOpen();
    try {
      return await this.#peek(sid, atSeq);
    } catch (err) {
      // Sealed rows whose data key was destroyed (rows of a deleted session put back, e.g. from an earlier dump):
      // erased, as far as a look is concerned; loading it still refuses with ARBOR_ENCRYPTION_KEY.
      if (err instanceof ArborError && err.code === ErrorCodes.ENCRYPTION_KEY && err.details.shredded === true) return undefined;
      throw err;
    }
  }

  async #peek(sid: string, atSeq: number | undefined): Promise<RecoveredSession<S> | undefined> {
    const upTo = atSeq ?? Number.MAX_SAFE_INTEGER;
    if (this.#sealer !== undefined) await this.#fetchKey(sid);
    const { rows: snaps } = await this.#pool.query<SnapshotRow>(this.#sql.snapshotsUpTo, [sid, upTo]);
    const damagedSnapshots: DamagedSnapshot[] = [];
    let snapshot: { state: unknown; seq: number; stateSchemaVersion: number } | undefined;
    for (const row of snaps) {
      const seq = Number(row.seq);
      const decoded = await this.#decodeSnapshot(sid, seq, row.body);
      if (typeof decoded === 'string') {
        damagedSnapshots.push({ file: `snapshots(${sid}, ${seq})`, reason: decoded });
        continue;
      }
      snapshot = decoded;
      break;
    }
    const replay = new SessionReplay(this.#hooks, sid, { snapshot, stateSchemaVersion: this.options.stateSchemaVersion, damagedSnapshots });
    const { rows: events } = await this.#pool.query<EventRow>(this.#sql.eventsBetween, [sid, replay.report.seq + 1, upTo]);
    if (snaps.length === 0 && events.length === 0) {
      if (atSeq === undefined || !(await this.exists(sid))) return undefined;
    }
    for (const row of events) replay.apply(this.#toRecord(sid, row));
    const report = replay.report;
    delete report.lastLsn;
    if (atSeq !== undefined && report.seq !== atSeq) {
      const { rows } = await this.#pool.query<{ oldest: string | null }>(this.#sql.oldestSeq, [sid]);
      throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid}: its state at seq ${atSeq} is no longer held (the oldest reachable seq is ${rows[0]?.oldest ?? 0}: earlier events were compacted into snapshots)`, {
        field: 'atSeq',
        sessionId: sid,
        atSeq,
        oldestSeq: Number(rows[0]?.oldest ?? 0),
      });
    }
    return { state: replay.state, seq: report.seq, status: report.status, report };
  }

  /**
   * Starts a new session from `state` at `seq`: takes its lease, refuses
   * (ARBOR_SESSION_EXISTS) when anything is stored for it, and stores the
   * snapshot in one fenced transaction.
   */
  async seedSession(sid: string, state: S, seq: number): Promise<void> {
    assertSessionId(sid);
    this.#assertOpen();
    if (!Number.isSafeInteger(seq) || seq < 0) throw new ArborError(ErrorCodes.INVALID_INPUT, `seed of session ${sid}: seq ${seq} is not a non-negative integer`, { field: 'seq', sessionId: sid });
    const existing = await this.loadSession(sid);
    const held = this.#held.get(sid);
    if (existing !== undefined || held === undefined || held.lastSeq > 0) throw new ArborError(ErrorCodes.SESSION_EXISTS, `session ${sid} already exists`, { sessionId: sid });
    const ts = Date.now();
    const body = await encodeSnapshot({ sid, seq, lsn: 0, ts, stateSchemaVersion: this.options.stateSchemaVersion, state: await this.#sealState(sid, state), dedupe: [] });
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      try {
        if (this.#fencing) {
          const { rows } = await client.query(this.#sql.checkLease, [sid, this.nodeId, held.epoch]);
          if (rows.length === 0) throw new ArborError(ErrorCodes.FENCED, `seed of session ${sid}: not written, node ${this.nodeId} no longer holds the lease`, { sessionId: sid, epoch: held.epoch });
        }
        // The primary key refuses a second seed of the same session from another node.
        await client.query(this.#sql.seedSnapshot, [sid, seq, ts, this.options.stateSchemaVersion, body.length, body]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        if (err instanceof ArborError) throw err;
        if ((err as { code?: unknown }).code === '23505') throw new ArborError(ErrorCodes.SESSION_EXISTS, `session ${sid} already exists`, { sessionId: sid });
        throw new ArborError(ErrorCodes.IO_ERROR, `seed of session ${sid} at seq ${seq} failed: ${(err as Error).message}`, { sessionId: sid, seq }, { cause: err });
      }
    } finally {
      client.release();
    }
    if (this.#held.get(sid) === held) {
      held.lastSeq = seq;
      held.durableSeq = seq;
    }
  }

  async snapshotSeq(sid: string): Promise<number> {
    assertSessionId(sid);
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ max: string | null }>(this.#sql.snapshotSeq, [sid]);
    return Number(rows[0]?.max ?? 0);
  }

  /** Always empty: PostgreSQL reclaims space per session as snapshots prune, no segment pins it. */
  sessionsToSnapshot(): string[] {
    return [];
  }

  /**
   * Stores `state` as the session's state after event `seq`, in one fenced
   * transaction that also prunes to `maxSnapshotsPerSession` and deletes the
   * events the oldest kept snapshot covers. The snapshot carries the session's
   * recent clientMessageIds, so deduplication survives the deleted events.
   * Rejects with ARBOR_FENCED when the lease is gone (nothing written).
   */
  async snapshot(sid: string, state: S, seq: number): Promise<{ bytes: number }> {
    assertSessionId(sid);
    this.#assertOpen();
    let held = this.#writable(sid);
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > held.lastSeq) {
      throw new RangeError(`snapshot of session ${sid}: seq ${seq} is not between 0 and the session's last seq ${held.lastSeq}`);
    }
    // A snapshot never gets ahead of the events it covers.
    if (seq > held.durableSeq) await this.#drained();
    held = this.#writable(sid);
    if (seq > held.durableSeq) throw new ArborError(ErrorCodes.IO_ERROR, `snapshot of session ${sid}: events up to seq ${seq} did not commit`, { sessionId: sid, seq });
    const dedupe: DedupeEntry[] = [];
    for (const [cid, r] of held.cids) if (!(r instanceof Promise) && r.seq <= seq) dedupe.push([cid, r.seq, 0, r.ts]);
    const started = performance.now();
    const ts = Date.now();
    const body = await encodeSnapshot({ sid, seq, lsn: 0, ts, stateSchemaVersion: this.options.stateSchemaVersion, state: await this.#sealState(sid, state), dedupe });
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      try {
        if (this.#fencing) {
          const { rows } = await client.query(this.#sql.checkLease, [sid, this.nodeId, held.epoch]);
          if (rows.length === 0) {
            await client.query('ROLLBACK');
            this.#lose(held, 'fenced: the lease was taken over or expired');
            throw new ArborError(ErrorCodes.FENCED, `snapshot of session ${sid} at seq ${seq}: not written, node ${this.nodeId} no longer holds the lease`, { sessionId: sid, seq, epoch: held.epoch });
          }
        }
        await client.query(this.#sql.insertSnapshot, [sid, seq, ts, this.options.stateSchemaVersion, body.length, body]);
        await client.query(this.#sql.pruneSnapshots, [sid, this.options.maxSnapshotsPerSession]);
        await client.query(this.#sql.releaseEvents, [sid]);
        await client.query('COMMIT');
      } catch (err) {
        // The snapshot's own error is reported below; a ROLLBACK on a broken connection fails too, and the
        // server rolls the transaction back when the connection goes.
        await client.query('ROLLBACK').catch(() => undefined);
        if (err instanceof ArborError) throw err;
        throw new ArborError(ErrorCodes.IO_ERROR, `snapshot of session ${sid} at seq ${seq} failed: ${(err as Error).message}`, { sessionId: sid, seq }, { cause: err });
      }
    } finally {
      client.release();
    }
    if (snapshotChannel.hasSubscribers) snapshotChannel.publish({ sessionId: sid, seq, bytes: body.length, durationMs: performance.now() - started } satisfies SnapshotMessage);
    return { bytes: body.length };
  }

  /**
   * The PostgreSQL health checks: `database` (a round trip through the pool
   * within a deadline; the pool's connections, idle and waiting clients) and
   * `leases` (how long since the database last renewed this node's leases,
   * against leaseMs: past half of it warn, past all of it fail — its sessions
   * are being taken over).
   */
  async checkHealth(): Promise<Record<string, BackendCheck>> {
    const max = (this.#pool as unknown as { options?: { max?: number } }).options?.max ?? this.options.poolSize;
    const poolFigures = () => ({ total: this.#pool.totalCount, idle: this.#pool.idleCount, waiting: this.#pool.waitingCount, max });
    let pool = poolFigures();
    const timeoutMs = Math.max(500, Math.min(5_000, this.options.leaseMs));
    let database: BackendCheck;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.#pool.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      const roundTripMs = Math.round((performance.now() - started) * 100) / 100;
      pool = poolFigures();
      // Saturated: every connection busy and clients queueing for one (a moment's queue while connections open is not).
      database =
        pool.waiting > 0 && pool.idle === 0 && pool.total >= pool.max
          ? { status: 'warn', message: `PostgreSQL answered in ${roundTripMs} ms, but ${pool.waiting} clients wait for one of the pool's ${pool.max} connections`, roundTripMs, pool }
          : { status: 'ok', message: `PostgreSQL answered in ${roundTripMs} ms; pool: ${pool.total} connections, ${pool.idle} idle`, roundTripMs, pool };
    } catch (err) {
      database = { status: 'fail', message: `PostgreSQL did not answer: ${(err as Error)?.message ?? String(err)}`, pool };
    } finally {
      clearTimeout(timer);
    }
    const held = this.#held.size + this.#loading.size;
    // Leases that could not be renewed are lost when they run out, so a failing renewal is lag even once none is held.
    const lagMs = held === 0 && this.#renewalFailure === undefined ? 0 : Math.round(performance.now() - this.#lastRenewalAt);
    const leaseMs = this.options.leaseMs;
    const figures = { heldSessions: held, renewalLagMs: lagMs, leaseMs, renewEveryMs: this.options.renewEveryMs, sessionsLost: this.#sessionsLost, ...(this.#renewalFailure === undefined ? {} : { lastFailure: this.#renewalFailure }) };
    const why = this.#renewalFailure === undefined ? '' : ` (last renewal failed: ${this.#renewalFailure})`;
    const leases: BackendCheck =
      lagMs > leaseMs
        ? { status: 'fail', message: `leases not renewed for ${lagMs} ms, past leaseMs ${leaseMs}: this node's sessions (${held} held, ${this.#sessionsLost} lost so far) go to other nodes${why}`, ...figures }
        : lagMs > leaseMs / 2
          ? { status: 'warn', message: `leases of ${held} sessions renewed ${lagMs} ms ago, over half of leaseMs ${leaseMs}${why}`, ...figures }
          : { status: 'ok', message: `${held} leases held, renewed ${lagMs} ms ago (leaseMs ${leaseMs})`, ...figures };
    return { database, leases };
  }

  /**
   * Deletes the session's rows (events and snapshots) in one transaction,
   * fenced like a flush: it commits only while this node holds the lease
   * (taken first when it does not). The COMMIT is the durable delete; the
   * lease is then given back, so any node may create the id again.
   */
  deleteSession(sid: string): Promise<void> {
    try {
      assertSessionId(sid);
      this.#assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#serial(sid, async () => {
      if (this.#held.get(sid) === undefined) await this.#load(sid);
      let held = this.#writable(sid);
      if (held.pending > 0) await this.#drained();
      held = this.#writable(sid);
      const client = await this.#pool.connect();
      try {
        await client.query('BEGIN');
        try {
          if (this.#fencing) {
            const { rows } = await client.query(this.#sql.checkLease, [sid, this.nodeId, held.epoch]);
            if (rows.length === 0) {
              await client.query('ROLLBACK');
              this.#lose(held, 'fenced: the lease was taken over or expired');
              throw new ArborError(ErrorCodes.FENCED, `delete of session ${sid}: not done, node ${this.nodeId} no longer holds the lease`, { sessionId: sid, epoch: held.epoch });
            }
          }
          // The data key goes first (crypto-shredding: every copy of the rows made before, a pg_dump included,
          // is unreadable once this commits), in the same transaction as the rows.
          if (this.#master !== undefined) await client.query(this.#sql.deleteKey, [sid]);
          await client.query(this.#sql.deleteEvents, [sid]);
          await client.query(this.#sql.deleteSnapshots, [sid]);
          await client.query('COMMIT');
          this.#dataKeys.delete(sid);
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          if (err instanceof ArborError) throw err;
          throw new ArborError(ErrorCodes.IO_ERROR, `delete of session ${sid} failed: ${(err as Error).message}`, { sessionId: sid }, { cause: err });
        }
      } finally {
        client.release();
      }
      this.#held.delete(sid);
      await this.#pool.query(this.#sql.release, [[sid], [held.epoch], this.nodeId]).catch((err: unknown) => reportError(ErrorCodes.IO_ERROR, `releasing the lease of deleted session ${sid}: ${(err as Error).message}`, sid));
    });
  }

  // ---- encryption at rest -------------------------------------------------

  /** Whether event data and snapshot states are sealed (a master key was given). */
  get encrypted(): boolean {
    return this.#master !== undefined;
  }

  #dataKey(sid: string): Buffer {
    const key = this.#dataKeys.get(sid);
    if (key === undefined) {
      throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `session ${sid} has no data key in ${this.options.schema}.data_keys: it was deleted (its key destroyed), so its rows can never be read`, { sessionId: sid, source: `${this.options.schema}.data_keys`, shredded: true });
    }
    return key;
  }

  #unwrap(sid: string, wrapped: Buffer): Buffer {
    const master = this.#master!;
    try {
      return unwrapDataKey(master, sid, wrapped);
    } catch (err) {
      throw new ArborError(
        ErrorCodes.ENCRYPTION_KEY,
        `the data key of session ${sid} in ${this.options.schema}.data_keys does not open with the key from ${master.source}: the master key was rotated since node ${this.nodeId} opened (restart it with the new key)`,
        { sessionId: sid, source: master.source },
        { cause: err },
      );
    }
  }

  /** Reads the session's data key as the table has it now (none: forgotten here too). */
  async #fetchKey(sid: string): Promise<void> {
    const { rows } = await this.#pool.query<{ wrapped: Buffer }>(this.#sql.selectKey, [sid]);
    if (rows.length === 0) this.#dataKeys.delete(sid);
    else this.#dataKeys.set(sid, this.#unwrap(sid, rows[0]!.wrapped));
  }

  /**
   * Makes sure each session has a data key: new ones are inserted with
   * ON CONFLICT DO NOTHING and then read back, so when two nodes make one at
   * once both use the one that went in. The insert holds a share lock on the
   * key ring at this node's master key id: after a rotation by another node it
   * inserts nothing and this fails (ARBOR_ENCRYPTION_KEY) rather than wrap a
   * key with the old master key.
   */
  async #ensureKeys(sids: string[]): Promise<void> {
    const missing = sids.filter((sid) => !this.#dataKeys.has(sid));
    if (missing.length === 0) return;
    const master = this.#master!;
    const wrapped = missing.map((sid) => wrapDataKey(master, sid, newDataKey()));
    await this.#pool.query(this.#sql.insertKeys, [missing, wrapped, masterKeyId(master.key)]);
    const { rows } = await this.#pool.query<{ sid: string; wrapped: Buffer }>(this.#sql.selectKeys, [missing]);
    for (const r of rows) this.#dataKeys.set(r.sid, this.#unwrap(r.sid, r.wrapped));
    for (const sid of missing) {
      if (!this.#dataKeys.has(sid)) {
        throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `session ${sid}: no data key could be stored, the master key of schema ${this.options.schema} is no longer the key from ${master.source} (rotated by another node: restart node ${this.nodeId} with the new key)`, { sessionId: sid, source: master.source });
      }
    }
  }

  /** The state as a snapshot stores it: sealed with the session's data key when encryption is on. */
  async #sealState(sid: string, state: S): Promise<unknown> {
    if (this.#sealer === undefined) return state;
    await this.#ensureKeys([sid]);
    return this.#sealer.sealState(sid, state);
  }

  /** A snapshot row decoded and its state opened; why it is refused otherwise (a missing data key throws). */
  async #decodeSnapshot(sid: string, seq: number, body: Buffer): Promise<{ state: unknown; seq: number; stateSchemaVersion: number; dedupe: DedupeEntry[] } | string> {
    const decoded = await decodeSnapshot(body);
    if (typeof decoded === 'string') return decoded;
    if (decoded.sid !== sid || decoded.seq !== seq) return 'header names another session or seq';
    if (this.#sealer === undefined) return decoded;
    try {
      return { ...decoded, state: this.#sealer.openState(sid, decoded.state) };
    } catch (err) {
      if (err instanceof ArborError && err.code === ErrorCodes.ENCRYPTION_KEY) throw err;
      return (err as Error).message;
    }
  }

  #toRecord(sid: string, row: EventRow): JournalRecord {
    const record = toRecord(sid, row);
    if (this.#sealer !== undefined) record.data = this.#sealer.openData(sid, record.seq, record.data);
    return record;
  }

  /**
   * Rewraps every session's data key with `newKey` and records it in the key
   * ring, in one transaction; no event or snapshot row changes. From then on
   * only the new key opens the schema; other nodes still running with the old
   * key keep the data keys they hold, and refuse to make or read new ones
   * until restarted with the new key.
   */
  async rotateMasterKey(newKey: string, source = 'the new key'): Promise<{ keys: number }> {
    this.#assertOpen();
    const master = this.#master;
    if (master === undefined) throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `schema ${this.options.schema} is not encrypted: there is no key to rotate`, { source });
    const next = parseMasterKey(newKey, source);
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      try {
        const { rows: ring } = await client.query<{ key_check: Buffer }>(this.#sql.lockKeyRing);
        if (ring.length === 0 || !keyCheckOpens(master, ring[0]!.key_check)) {
          throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `schema ${this.options.schema}: the key from ${master.source} is no longer its master key (rotated by another node?); nothing was changed`, { source: master.source });
        }
        const { rows } = await client.query<{ sid: string; wrapped: Buffer }>(this.#sql.lockKeys);
        const sids = rows.map((r) => r.sid);
        const rewrapped = rows.map((r) => wrapDataKey(next, r.sid, this.#unwrap(r.sid, r.wrapped)));
        if (sids.length > 0) await client.query(this.#sql.rewrapKeys, [sids, rewrapped]);
        await client.query(this.#sql.updateKeyRing, [masterKeyId(next.key), keyCheck(next)]);
        await client.query('COMMIT');
        this.#master = next;
        return { keys: sids.length };
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        if (err instanceof ArborError) throw err;
        throw new ArborError(ErrorCodes.IO_ERROR, `rotating the master key of schema ${this.options.schema} failed, nothing was changed: ${(err as Error).message}`, {}, { cause: err });
      }
    } finally {
      client.release();
    }
  }

  // ---- lifecycle ------------------------------------------------------------

  stats(): PgBackendStats {
    return {
      state: this.#state,
      queueDepth: this.#queue.length,
      lastFlushAt: this.#lastFlushAt,
      journalBytes: 0,
      nodeId: this.nodeId,
      heldSessions: this.#held.size,
      flushes: this.#flushes,
      flushedEvents: this.#flushedEvents,
      fencedAppends: this.#fencedAppends,
      sessionsLost: this.#sessionsLost,
    };
  }

  #assertOpen(): void {
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'postgres backend is closed');
  }

  /** Flushes queued appends, gives every lease up and disconnects (a caller's pool stays open). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#state = 'closing';
    try {
      clearInterval(this.#renewTimer);
      await this.#drained();
      await this.#renewing;
      const held = [...this.#held.values()];
      this.#held.clear();
      if (held.length > 0) {
        // Not released: other nodes wait up to leaseMs to take these sessions over. Closing goes on.
        await this.#pool.query(this.#sql.release, [held.map((h) => h.sid), held.map((h) => h.epoch), this.nodeId]).catch((err: unknown) => {
          reportError(ErrorCodes.IO_ERROR, `node ${this.nodeId} could not release ${held.length} leases at close; they expire within leaseMs: ${(err as Error)?.message ?? String(err)}`);
        });
      }
    } finally {
      if (this.#ownsPool) {
        await this.#pool.end().catch((err: unknown) => reportError(ErrorCodes.IO_ERROR, `closing the PostgreSQL pool failed: ${(err as Error)?.message ?? String(err)}`));
      }
      this.#state = 'closed';
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Opens a PostgreSQL backend; see `PgBackend.open`. */
export function openPgBackend<S>(options: PgBackendOptions<S>, internals: PgBackendInternals = {}): Promise<PgBackend<S>> {
  return PgBackend.open(options, internals);
}

/**
 * The schema's key ring against the master key, before anything is written:
 * a schema with a key ring refuses to open without its key or with another
 * one (ARBOR_ENCRYPTION_KEY naming the key's source). `create`: a schema
 * without one gets it now (INSERT … ON CONFLICT DO NOTHING, then read back:
 * of two nodes starting at once with different keys, the second is refused).
 */
async function openKeyRing(pool: pg.Pool, schema: string, master: MasterKey | undefined, create: boolean): Promise<void> {
  const q = quoteSchema(schema);
  const { rows: exists } = await pool.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [`${q}.key_ring`]);
  if (exists[0]?.t == null) return;
  const select = `SELECT master_key_id, key_check FROM ${q}.key_ring WHERE id = 1`;
  let { rows } = await pool.query<{ master_key_id: string; key_check: Buffer }>(select);
  if (rows.length === 0) {
    if (master === undefined || !create) return;
    await pool.query(`INSERT INTO ${q}.key_ring (id, master_key_id, key_check) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`, [masterKeyId(master.key), keyCheck(master)]);
    ({ rows } = await pool.query<{ master_key_id: string; key_check: Buffer }>(select));
  }
  const ring = rows[0]!;
  if (master === undefined) {
    throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `PostgreSQL schema ${schema} is encrypted at rest (master key id ${ring.master_key_id}) and no encryption key was given: set encryptionKey, encryptionKeyFile or ARBOR_ENCRYPTION_KEY; nothing was written`, { source: 'none', schema, expectedKeyId: ring.master_key_id });
  }
  if (!keyCheckOpens(master, ring.key_check)) {
    throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `the encryption key from ${master.source} is not the key PostgreSQL schema ${schema} was encrypted with (key id ${ring.master_key_id}, given ${masterKeyId(master.key)}); nothing was written`, { source: master.source, schema, expectedKeyId: ring.master_key_id });
  }
}

/** Reports a failure that is handled here (nothing is thrown for it) on the telemetry error channel. */
function reportError(code: string, message: string, sessionId?: string): void {
  if (!errorChannel.hasSubscribers) return;
  errorChannel.publish({ source: 'postgres', code, message, ...(sessionId === undefined ? {} : { sessionId }) } satisfies ErrorMessage);
}

/** Tells telemetry a lease was taken, released or lost (only when someone listens). */
function publishLease(sessionId: string, event: LeaseMessage['event'], nodeId: string, epoch: number, reason?: string): void {
  if (!leaseChannel.hasSubscribers) return;
  leaseChannel.publish({ sessionId, event, nodeId, epoch, ...(reason === undefined ? {} : { reason }) } satisfies LeaseMessage);
}

/** A unique violation of the (sid, cid) index: a clientMessageId stored before. */
function isCidConflict(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown };
  return e?.code === '23505' && e.constraint === 'events_sid_cid';
}

function toRecord(sid: string, row: EventRow): JournalRecord {
  const record: JournalRecord = { lsn: 0, sid, seq: Number(row.seq), ts: row.ts, type: row.type, v: row.v, data: JSON.parse(row.data) as unknown };
  if (row.cid !== null) record.cid = row.cid;
  return record;
}

/** Every statement, with the schema spliced in once. */
function statements(q: string) {
  /**
   * This owner's lease rows at the given epochs (`live`: not expired), locked.
   * Every statement that locks lease rows goes through here, so all lock them
   * in sid order: a flush (SHARE, the fence) and a renewal or release (UPDATE),
   * of one node or of two, may wait for each other but never deadlock.
   */
  const heldLeases = (owner: string, sids: string, epochs: string, lock: 'SHARE' | 'UPDATE', live: boolean): string => `
        SELECT l.sid FROM ${q}.leases l
        JOIN unnest(${sids}::text[], ${epochs}::bigint[]) AS h(sid, epoch) ON l.sid = h.sid AND l.epoch = h.epoch
        WHERE l.owner = ${owner}${live ? ' AND l.expires_at > now()' : ''}
        ORDER BY l.sid
        FOR ${lock} OF l`;
  const unnestRows = `unnest($4::text[], $5::bigint[], $6::float8[], $7::text[], $8::int[], $9::text[], $10::text[]) AS r(sid, seq, ts, type, v, data, cid)`;
  return {
    // The fence: rows go in only for sessions whose lease row, share-locked in this same statement,
    // still names this node at the acquired epoch and has not expired by the database clock.
    insertFenced: `
      WITH held AS (${heldLeases('$1', '$2', '$3', 'SHARE', true)}), ins AS (
        INSERT INTO ${q}.events (sid, seq, ts, type, v, data, cid)
        SELECT r.sid, r.seq, r.ts, r.type, r.v, r.data, r.cid FROM ${unnestRows}
        WHERE r.sid IN (SELECT sid FROM held)
        RETURNING 1
      )
      SELECT sid FROM held`,
    insertUnfenced: `
      INSERT INTO ${q}.events (sid, seq, ts, type, v, data, cid)
      SELECT * FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::text[], $5::int[], $6::text[], $7::text[])`,
    acquire: `
      INSERT INTO ${q}.leases AS l (sid, owner, owner_address, epoch, expires_at)
      VALUES ($1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond')
      ON CONFLICT (sid) DO UPDATE
        SET owner = excluded.owner, owner_address = excluded.owner_address, epoch = l.epoch + 1, expires_at = excluded.expires_at
        WHERE l.owner = excluded.owner OR l.expires_at <= now()
      RETURNING l.epoch`,
    owner: `SELECT owner, owner_address, epoch, EXTRACT(EPOCH FROM (expires_at - now())) * 1000 AS expires_in_ms FROM ${q}.leases WHERE sid = $1`,
    renew: `
      WITH locked AS (${heldLeases('$1', '$3', '$4', 'UPDATE', true)})
      UPDATE ${q}.leases l SET expires_at = now() + $2::bigint * interval '1 millisecond'
      FROM locked WHERE l.sid = locked.sid
      RETURNING l.sid`,
    // Released leases keep their row (and epoch): epochs only ever grow.
    release: `
      WITH locked AS (${heldLeases('$3', '$1', '$2', 'UPDATE', false)})
      UPDATE ${q}.leases l SET expires_at = now()
      FROM locked WHERE l.sid = locked.sid`,
    checkLease: `SELECT 1 FROM ${q}.leases WHERE sid = $1 AND owner = $2 AND epoch = $3 AND expires_at > now() FOR SHARE`,
    snapshots: `SELECT seq, body, state_schema_version FROM ${q}.snapshots WHERE sid = $1 ORDER BY seq DESC`,
    snapshotSeq: `SELECT max(seq) AS max FROM ${q}.snapshots WHERE sid = $1`,
    snapshotsUpTo: `SELECT seq, body, state_schema_version FROM ${q}.snapshots WHERE sid = $1 AND seq <= $2 ORDER BY seq DESC`,
    eventsBetween: `SELECT seq, ts, type, v, data, cid FROM ${q}.events WHERE sid = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq`,
    oldestSeq: `SELECT least((SELECT min(seq) FROM ${q}.snapshots WHERE sid = $1), (SELECT min(seq) - 1 FROM ${q}.events WHERE sid = $1)) AS oldest`,
    seedSnapshot: `INSERT INTO ${q}.snapshots (sid, seq, ts, state_schema_version, bytes, body) VALUES ($1, $2, $3, $4, $5, $6)`,
    listSessions: `SELECT sid, max(seq) AS seq FROM (SELECT sid, max(seq) AS seq FROM ${q}.events GROUP BY sid UNION ALL SELECT sid, max(seq) AS seq FROM ${q}.snapshots GROUP BY sid) AS s GROUP BY sid`,
    insertSnapshot: `
      INSERT INTO ${q}.snapshots (sid, seq, ts, state_schema_version, bytes, body) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (sid, seq) DO UPDATE SET ts = excluded.ts, state_schema_version = excluded.state_schema_version, bytes = excluded.bytes, body = excluded.body`,
    pruneSnapshots: `
      DELETE FROM ${q}.snapshots WHERE sid = $1 AND seq < (
        SELECT min(seq) FROM (SELECT seq FROM ${q}.snapshots WHERE sid = $1 ORDER BY seq DESC LIMIT $2) AS kept)`,
    // Events the oldest kept snapshot covers are no longer needed, even if newer snapshots turn out damaged.
    releaseEvents: `DELETE FROM ${q}.events WHERE sid = $1 AND seq <= (SELECT min(seq) FROM ${q}.snapshots WHERE sid = $1)`,
    deleteEvents: `DELETE FROM ${q}.events WHERE sid = $1`,
    deleteKey: `DELETE FROM ${q}.data_keys WHERE sid = $1`,
    selectKey: `SELECT wrapped FROM ${q}.data_keys WHERE sid = $1`,
    selectKeys: `SELECT sid, wrapped FROM ${q}.data_keys WHERE sid = ANY($1::text[])`,
    // Only while the key ring still names this node's master key (share-locked: a rotation waits for it, or it for the rotation).
    insertKeys: `
      INSERT INTO ${q}.data_keys (sid, wrapped)
      SELECT k.sid, k.wrapped FROM unnest($1::text[], $2::bytea[]) AS k(sid, wrapped)
      WHERE EXISTS (SELECT 1 FROM ${q}.key_ring WHERE id = 1 AND master_key_id = $3 FOR SHARE)
      ON CONFLICT (sid) DO NOTHING`,
    lockKeyRing: `SELECT key_check FROM ${q}.key_ring WHERE id = 1 FOR UPDATE`,
    lockKeys: `SELECT sid, wrapped FROM ${q}.data_keys ORDER BY sid FOR UPDATE`,
    rewrapKeys: `UPDATE ${q}.data_keys d SET wrapped = k.wrapped FROM unnest($1::text[], $2::bytea[]) AS k(sid, wrapped) WHERE d.sid = k.sid`,
    updateKeyRing: `UPDATE ${q}.key_ring SET master_key_id = $1, key_check = $2, rotated_at = now() WHERE id = 1`,
    deleteSnapshots: `DELETE FROM ${q}.snapshots WHERE sid = $1`,
    eventsFrom: `SELECT seq, ts, type, v, data, cid FROM ${q}.events WHERE sid = $1 AND seq >= $2 ORDER BY seq`,
    findCids: `SELECT e.sid, e.cid, e.seq, e.ts FROM ${q}.events e JOIN unnest($1::text[], $2::text[]) AS k(sid, cid) ON e.sid = k.sid AND e.cid = k.cid`,
    maxSeq: `SELECT max(seq) AS max FROM ${q}.events WHERE sid = $1`,
    sessionIds: `SELECT sid FROM ${q}.events UNION SELECT sid FROM ${q}.snapshots`,
    exists: `SELECT EXISTS (SELECT 1 FROM ${q}.events WHERE sid = $1) OR EXISTS (SELECT 1 FROM ${q}.snapshots WHERE sid = $1) AS found`,
  };
}
