import { ArborError, ErrorCodes, isArborError } from './core/errors.ts';
import { errorChannel, type ErrorMessage } from './telemetry/channels.ts';
import { readRestoreMarker, restoreNoticeFor, type RestoreMarker } from './file/restore-marker.ts';
import { NodeFileSystem } from './storage/node-fs.ts';
import { assertSessionId } from './core/ids.ts';
import { SESSION_HOOKS } from './core/session-hooks.ts';
import { initialSessionState, pendingInterruption, type SessionState } from './core/state.ts';
import type { EventData } from './core/events.ts';
import { HotTier } from './hot/hot-tier.ts';
import { MockProvider } from './llm/mock-provider.ts';
import type { LlmProvider } from './llm/provider.ts';
import type { StoreOptions } from './file/options.ts';
import { Store, type RecoveredSession, type RecoveryReport } from './file/store.ts';
import type { CheckpointEntry } from './file/table-checkpoint.ts';
import type { SessionBackend } from './backend/backend.ts';
import type { JournalRecord } from './core/record.ts';
import type { SessionRecovery } from './backend/replay.ts';
import { openPgBackend, type PgBackendInternals, type PgBackendOptions } from './postgres/index.ts';
import { SessionActor, unansweredRequests, type CommandHandler, type SessionContext, type SessionUpdate } from './sessions/session-actor.ts';
import type { Chunk } from './sessions/chunk-buffer.ts';

/** Options of the runtime, on top of the storage engine's. Every field has a default in DEFAULT_RUNTIME_OPTIONS. */
export interface RuntimeOptions {
  /** The LLM provider (default: the deterministic mock, shaped by ARBOR_MOCK_CHUNKS / ARBOR_MOCK_CHUNK_DELAY_MS). */
  llm: LlmProvider | undefined;
  /** Handlers for `session.executeCommand(name, args)`. */
  commands: Readonly<Record<string, CommandHandler>>;
  /** A session without commands for this long is snapshotted and dropped from memory. */
  sessionIdleTimeoutMs: number;
  /** Snapshot a session after this many events since its last snapshot. */
  snapshotEveryEvents: number;
  /** Snapshot sessions with new events (and those pinning the oldest journal segment) at this interval. */
  snapshotIntervalMs: number;
  /** Commands waiting per session before ARBOR_MAILBOX_FULL. */
  mailboxCapacity: number;
  /** Crashes allowed within `restartWindowMs` before a session is stopped. */
  maxRestarts: number;
  restartWindowMs: number;
  /** Chunks kept in memory per session for subscribers that reconnect mid-stream. */
  streamBufferChunks: number;
  /** Sessions loaded back from disk at once (snapshot + journal reads); more wait their turn. */
  maxConcurrentRecoveries: number;
  /**
   * Write the whole-table checkpoint (every session in memory, in one file) at
   * this interval when something changed: after a crash, the next start's
   * background pass reads it instead of one snapshot per session plus the
   * records since. An accelerator only; `tableCheckpoint: false` turns it off.
   */
  checkpointIntervalMs: number;
  tableCheckpoint: boolean;
  /**
   * `false` keeps a session in memory only while its commands and stream
   * run: each command loads it from disk (snapshot + journal replay) again.
   * Nothing is lost, but every command pays a load.
   */
  enableHotStorage: boolean;
  /**
   * Run on PostgreSQL instead of the file store: several processes share one
   * database, each session owned by one process at a time through a fenced
   * lease (see PgBackendOptions; `hooks` are the runtime's).
   */
  postgres: (Omit<PgBackendOptions<SessionState>, 'hooks'> & PgBackendInternals) | undefined;
  /** A command whose session takes longer than this to load from disk fails with ARBOR_IO_ERROR (the load goes on; a retry joins it). */
  recoveryTimeoutMs: number;
}

export const DEFAULT_RUNTIME_OPTIONS: Readonly<RuntimeOptions> = Object.freeze({
  llm: undefined,
  commands: Object.freeze({}),
  sessionIdleTimeoutMs: 3_600_000,
  snapshotEveryEvents: 100,
  snapshotIntervalMs: 300_000,
  mailboxCapacity: 1000,
  maxRestarts: 5,
  restartWindowMs: 10_000,
  streamBufferChunks: 10_000,
  maxConcurrentRecoveries: 8,
  checkpointIntervalMs: 60_000,
  tableCheckpoint: true,
  enableHotStorage: true,
  postgres: undefined,
  recoveryTimeoutMs: 30_000,
});

export type ArborOptions = Partial<StoreOptions> & Partial<RuntimeOptions>;

const RUNTIME_KEYS = new Set(Object.keys(DEFAULT_RUNTIME_OPTIONS));

function positiveInteger(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`option ${name} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Health figures of a running Arbor (the server turns them into /health). */
export interface ArborHealth {
  ok: boolean;
  /** 'file' or 'postgres' */
  backend: string;
  hot: { sessions: number; approxBytes: number };
  /** `failure`: why a failed journal failed (`errno`: e.g. ENOSPC, EIO); `reopens`: times `reopen()` resumed it */
  journal: { state: string; queueDepth: number; lastFlushAgeMs: number; segments: number; bytes: number; syncedLsn: number; failure?: { code: string; errno: string | undefined; message: string }; reopens: number };
  /** `lost`: sessions another process took over from this one (multi-node) */
  sessions: { active: number; stopped: string[]; crashes: number; lost: number };
  /** sessions recovered per status so far, and those still waiting for the background pass */
  recovery: RecoveryReport['counts'] & { pending: number };
  /** the last whole-table checkpoint this process wrote */
  checkpoint: { at: number; entries: number; bytes: number } | undefined;
}

/**
 * The runtime: the storage engine, the hot tier, one actor per active session,
 * a supervisor, and background snapshots. `createArbor` opens the store,
 * recovers every session, and marks streams cut by the last process death as
 * interrupted.
 */
export class Arbor {
  #backend: SessionBackend<SessionState>;
  /** The backend when it is the file store (lazy recovery, checkpoint, journal figures); undefined on PostgreSQL. */
  #file: Store<SessionState> | undefined;
  /** The storage options the file store was opened with (reopen uses them again). */
  #storeOptions: Partial<StoreOptions> = {};
  #reopening: Promise<void> | undefined;
  /** Loads on PostgreSQL, for recoveryReport (the file store keeps its own). */
  readonly #loads: SessionRecovery[] = [];
  readonly #hot = new HotTier<SessionState>();
  readonly #o: Readonly<RuntimeOptions> & { llm: LlmProvider };
  readonly #actors = new Map<string, SessionActor>();
  readonly #handles = new Map<string, Session>();
  readonly #lastActivity = new Map<string, number>();
  readonly #eventsSinceSnapshot = new Map<string, number>();
  readonly #snapshotting = new Map<string, Promise<void>>();
  /** Sessions past snapshotEveryEvents, waiting for the background snapshot worker (insertion-ordered). */
  readonly #snapshotQueue = new Set<string>();
  #snapshotWorker: Promise<void> | undefined;
  readonly #stopped = new Set<string>();
  /** Sessions this process has had in memory (recovered, loaded or created): later loads are not recoveries. */
  readonly #seen = new Set<string>();
  /** Recovered by the background pass with interrupted turns to journal before their next command. */
  readonly #needsRepair = new Set<string>();
  readonly #evicting = new Set<string>();
  /** seq and LSN of each in-memory session's last event, when known: what a checkpoint entry must carry. */
  readonly #lastEvent = new Map<string, { seq: number; lsn: number }>();
  #changedSinceCheckpoint = 0;
  #lastCheckpoint: { at: number; entries: number; bytes: number } | undefined;
  #checkpointing: Promise<void> | undefined;
  /** The background recovery pass (lazy recovery); resolves when every session is recovered. */
  #recoveryPass: Promise<void> | undefined;
  #crashCount = 0;
  #sessionsLost = 0;
  #reopens = 0;
  /** Set when the data directory was restored from a backup (`arbor restore`): its sessions show a notice once. */
  #restoreMarker: RestoreMarker | undefined;
  #recoveries = 0;
  #recoveryWaiters: (() => void)[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  readonly #ctx: SessionContext;

  private constructor(backend: SessionBackend<SessionState>, options: Readonly<RuntimeOptions> & { llm: LlmProvider }) {
    this.#backend = backend;
    this.#file = backend instanceof Store ? backend : undefined;
    this.#o = options;
    const self = this;
    this.#ctx = {
      get store() {
        return self.#backend;
      },
      hot: this.#hot,
      llm: options.llm,
      commands: options.commands,
      mailboxCapacity: options.mailboxCapacity,
      maxRestarts: options.maxRestarts,
      restartWindowMs: options.restartWindowMs,
      streamBufferChunks: options.streamBufferChunks,
      activate: (sid) => this.#activate(sid),
      restoreNotice: (state) => (this.#restoreMarker === undefined ? undefined : restoreNoticeFor(this.#restoreMarker, state)) as { content: string; metadata: Record<string, unknown> } | undefined,
      committed: (sid, state, lsn) => {
        this.#lastEvent.set(sid, { seq: state.seq, lsn });
        this.#changedSinceCheckpoint += 1;
        this.#committed(sid);
      },
      crashed: (sid, err, stopped) => {
        this.#crashCount += 1;
        if (stopped) this.#stopped.add(sid);
        publishError('handler', stopped ? ErrorCodes.SESSION_STOPPED : ErrorCodes.HANDLER_CRASHED, err, sid);
      },
    };
  }

  /** Opens the store in `options.dataDir`, recovers every session and starts background work. */
  static async create(options: ArborOptions = {}): Promise<Arbor> {
    const storeOptions: Partial<StoreOptions> = {};
    const runtime: Partial<RuntimeOptions> = {};
    for (const [key, value] of Object.entries(options)) {
      if (RUNTIME_KEYS.has(key)) (runtime as Record<string, unknown>)[key] = value;
      else (storeOptions as Record<string, unknown>)[key] = value;
    }
    const o = { ...DEFAULT_RUNTIME_OPTIONS, ...Object.fromEntries(Object.entries(runtime).filter(([, v]) => v !== undefined)) } as RuntimeOptions;
    for (const key of ['sessionIdleTimeoutMs', 'snapshotEveryEvents', 'snapshotIntervalMs', 'mailboxCapacity', 'maxRestarts', 'restartWindowMs', 'streamBufferChunks', 'maxConcurrentRecoveries', 'checkpointIntervalMs', 'recoveryTimeoutMs'] as const) positiveInteger(key, o[key]);
    for (const key of ['tableCheckpoint', 'enableHotStorage'] as const) {
      if (typeof o[key] !== 'boolean') throw new TypeError(`option ${key} must be a boolean, got ${JSON.stringify(o[key])}`);
    }
    const llm = o.llm ?? new MockProvider();
    const hooks = SESSION_HOOKS;
    const backend: SessionBackend<SessionState> =
      o.postgres !== undefined
        ? await openPgBackend<SessionState>({ ...o.postgres, hooks }, { unsafeDisableFencing: o.postgres.unsafeDisableFencing === true })
        : // Lazy recovery unless asked otherwise: the runtime answers as soon as the journal is indexed.
          await Store.open<SessionState>({ recovery: 'lazy', ...storeOptions }, hooks);
    const arbor = new Arbor(backend, Object.freeze({ ...o, llm }));
    arbor.#storeOptions = storeOptions;
    await arbor.#start();
    return arbor;
  }

  async #start(): Promise<void> {
    // An eager open rebuilt everything already; a lazy one recovers each session on first access
    // (#activate) and all of them in the background, through the same #recovered.
    // On PostgreSQL sessions are only ever loaded on access: loading them all would take every lease.
    this.#backend.onSessionLost((sid, reason) => this.#lost(sid, reason));
    const file = this.#file;
    if (file !== undefined) {
      this.#restoreMarker = await readRestoreMarker(file.options.fs ?? new NodeFileSystem(), file.options.dataDir);
      for (const [sid, r] of file.recovered) this.#recovered(sid, r);
      file.dropRecovered();
      this.#recoveryPass = file.recoverAll((sid, r) => this.#recovered(sid, r));
      this.#recoveryPass.catch(() => undefined);
    }
    const tick = Math.min(this.#o.snapshotIntervalMs, Math.max(1000, Math.floor(this.#o.sessionIdleTimeoutMs / 2)));
    this.#timer = setInterval(() => void this.#background().catch(() => undefined), tick);
    this.#timer.unref();
  }

  /**
   * A session rebuilt by the background pass: into the hot tier, unless this
   * process has had it already (it was loaded on access first). A stream cut
   * by the last process death, and requests whose answer never started, get
   * their interrupted turns through the session's mailbox, ahead of any
   * command that arrives later.
   */
  #recovered(sid: string, r: RecoveredSession<SessionState>): void {
    if (this.#seen.has(sid) || this.#closing !== undefined) return;
    const healthy = r.status !== 'damaged' && r.status !== 'failed';
    const restored = this.#restoreMarker !== undefined && restoreNoticeFor(this.#restoreMarker, r.state) !== undefined;
    const repair = healthy && (pendingInterruption(r.state) !== undefined || unansweredRequests(r.state).length > 0 || restored);
    // Without hot storage nothing stays in memory: the session is loaded when it is used.
    if (!this.#o.enableHotStorage && !repair) return;
    this.#seen.add(sid);
    this.#hot.store(sid, r.state);
    if (r.report.lastLsn !== undefined) this.#lastEvent.set(sid, { seq: r.seq, lsn: r.report.lastLsn });
    if (repair) {
      this.#needsRepair.add(sid);
      void this.#actor(sid).run('recover', async () => undefined, true).catch(() => undefined);
    }
  }

  /**
   * Whether the session has any durable event or snapshot (without creating
   * it). On PostgreSQL this loads it, taking its lease.
   */
  async exists(id: string): Promise<boolean> {
    assertSessionId(id);
    if ((this.#hot.peek(id)?.seq ?? 0) > 0) return true;
    const file = this.#file;
    if (file !== undefined) return file.journal.lastSeq(id) > 0 || file.snapshots.seqs(id).length > 0;
    return (await this.session(id).load()).seq > 0;
  }

  /** The session with this id (created on first use). `tenant` is reserved for the server's tenancy. */
  session(id: string, _options: { tenant?: string } = {}): Session {
    assertSessionId(id);
    this.#assertOpen();
    let handle = this.#handles.get(id);
    if (handle === undefined) {
      handle = new Session(id, this, () => this.#actor(id), () => this.#hot.peek(id), () => this.#file?.isPendingRecovery(id) ?? false);
      this.#handles.set(id, handle);
    }
    return handle;
  }

  #assertOpen(): void {
    if (this.#closing !== undefined) throw new ArborError(ErrorCodes.CLOSED, 'arbor is closed');
  }

  #actor(sid: string): SessionActor {
    let actor = this.#actors.get(sid);
    if (actor === undefined) {
      actor = new SessionActor(sid, this.#ctx);
      this.#actors.set(sid, actor);
    }
    this.#lastActivity.set(sid, Date.now());
    return actor;
  }

  /**
   * The session's committed state, loaded into the hot tier when it is not
   * there: recovered (first access after a restart), or loaded back after
   * passivation. `fresh` says it is the first time this process has it, so
   * the actor repairs what the last process death left (interrupted turns).
   */
  async #activate(sid: string): Promise<{ state: SessionState; fresh: boolean }> {
    this.#lastActivity.set(sid, Date.now());
    const hot = this.#hot.retrieve(sid);
    if (hot !== undefined) return { state: hot, fresh: this.#needsRepair.delete(sid) };
    // At most maxConcurrentRecoveries loads at once, so a burst of returning sessions cannot swamp the disk.
    while (this.#recoveries >= this.#o.maxConcurrentRecoveries) await new Promise<void>((r) => this.#recoveryWaiters.push(r));
    this.#recoveries += 1;
    try {
      const again = this.#hot.retrieve(sid);
      if (again !== undefined) return { state: again, fresh: this.#needsRepair.delete(sid) };
      const loaded = await this.#withTimeout(this.#backend.loadSession(sid), sid);
      if (loaded !== undefined && this.#file === undefined) this.#loads.push(loaded.report);
      // The background pass may have brought it in meanwhile (and queued its repair).
      const raced = this.#hot.retrieve(sid);
      if (raced !== undefined) return { state: raced, fresh: this.#needsRepair.delete(sid) };
      const state = loaded?.state ?? initialSessionState(sid);
      if (loaded?.report.lastLsn !== undefined) this.#lastEvent.set(sid, { seq: loaded.seq, lsn: loaded.report.lastLsn });
      const fresh = !this.#seen.has(sid) && loaded !== undefined && loaded.status !== 'damaged' && loaded.status !== 'failed';
      this.#seen.add(sid);
      this.#hot.store(sid, state);
      return { state, fresh };
    } finally {
      this.#recoveries -= 1;
      this.#recoveryWaiters.shift()?.();
    }
  }

  #withTimeout<T>(load: Promise<T>, sid: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ArborError(ErrorCodes.IO_ERROR, `loading session ${sid} took longer than recoveryTimeoutMs (${this.#o.recoveryTimeoutMs} ms); it goes on in the background, retry shortly`, { sessionId: sid, field: 'recoveryTimeoutMs' })), this.#o.recoveryTimeoutMs);
    });
    return Promise.race([load, timeout]).finally(() => clearTimeout(timer));
  }

  #committed(sid: string): void {
    this.#lastActivity.set(sid, Date.now());
    const n = (this.#eventsSinceSnapshot.get(sid) ?? 0) + 1;
    this.#eventsSinceSnapshot.set(sid, n);
    if (!this.#o.enableHotStorage) {
      this.#evictSoon(sid);
      return;
    }
    if (n >= this.#o.snapshotEveryEvents && !this.#snapshotQueue.has(sid)) {
      this.#snapshotQueue.add(sid);
      this.#drainSnapshotQueue();
    }
  }

  /**
   * enableHotStorage: false — once the command that committed has finished
   * (next turn of the event loop) and no stream runs, the session leaves
   * memory; snapshotted first when it reached its threshold, or always when
   * the journal is off (then the snapshot is all that keeps it).
   */
  #evictSoon(sid: string): void {
    if (this.#evicting.has(sid)) return;
    this.#evicting.add(sid);
    setImmediate(() => {
      this.#evicting.delete(sid);
      if (this.#closing !== undefined) return;
      const snapshot = !(this.#file?.options.enableJournal ?? true) || (this.#eventsSinceSnapshot.get(sid) ?? 0) >= this.#o.snapshotEveryEvents;
      void this.#passivate(sid, snapshot).catch(() => undefined);
    });
  }

  /**
   * Threshold snapshots are taken by one background worker, one session per
   * event-loop turn, never on the commit path: when many sessions cross the
   * threshold together, their encodings are spread out instead of stalling
   * the loop (and every ack behind it) in one burst.
   */
  #drainSnapshotQueue(): void {
    if (this.#snapshotWorker !== undefined) return;
    this.#snapshotWorker = (async () => {
      for (const sid of this.#snapshotQueue) {
        this.#snapshotQueue.delete(sid);
        if (this.#closing !== undefined) break;
        await new Promise<void>((r) => setImmediate(r));
        await this.#snapshot(sid).catch((err: unknown) => publishError('snapshot', ErrorCodes.IO_ERROR, err, sid));
      }
    })().finally(() => {
      this.#snapshotWorker = undefined;
      if (this.#snapshotQueue.size > 0 && this.#closing === undefined) this.#drainSnapshotQueue();
    });
  }

  /** Snapshots the session's current committed state in the background; one at a time per session. */
  #snapshot(sid: string): Promise<void> {
    const running = this.#snapshotting.get(sid);
    if (running !== undefined) return running;
    if (!(this.#file?.options.enableSnapshots ?? true)) {
      // Snapshots are off: the journal keeps everything (and is never compacted).
      this.#eventsSinceSnapshot.set(sid, 0);
      return Promise.resolve();
    }
    const state = this.#hot.peek(sid);
    if (state === undefined || state.seq === 0) return Promise.resolve();
    this.#eventsSinceSnapshot.set(sid, 0);
    const p = this.#backend
      .snapshot(sid, state, state.seq)
      .then(() => undefined)
      .finally(() => this.#snapshotting.delete(sid));
    this.#snapshotting.set(sid, p);
    return p;
  }

  /** Periodic work: snapshot sessions with new events and those pinning the oldest segment; passivate idle ones. */
  async #background(): Promise<void> {
    if (this.#closing !== undefined) return;
    // Through the same one-at-a-time worker as threshold snapshots: the sessions pinning the oldest
    // segment first (so the journal stays bounded), then every session with new events.
    for (const sid of this.#backend.sessionsToSnapshot()) if (this.#hot.has(sid)) this.#snapshotQueue.add(sid);
    for (const [sid, n] of this.#eventsSinceSnapshot) if (n > 0) this.#snapshotQueue.add(sid);
    this.#drainSnapshotQueue();
    await this.#snapshotWorker;
    if (this.#o.tableCheckpoint && this.#changedSinceCheckpoint > 0 && Date.now() - (this.#lastCheckpoint?.at ?? 0) >= this.#o.checkpointIntervalMs) await this.checkpoint();
    const now = Date.now();
    for (const [sid, last] of this.#lastActivity) {
      if (now - last < this.#o.sessionIdleTimeoutMs) continue;
      await this.passivate(sid);
    }
  }

  /**
   * Writes the whole-table checkpoint now: every session in memory whose last
   * event's LSN is known, in one file, encoded in slices off the commit path.
   * Runs in the background every `checkpointIntervalMs`.
   */
  checkpoint(): Promise<void> {
    const file = this.#file;
    if (file === undefined) return Promise.resolve(); // PostgreSQL: each node loads what it owns, on access
    this.#checkpointing ??= (async () => {
      const changed = this.#changedSinceCheckpoint;
      const entries: CheckpointEntry<SessionState>[] = [];
      for (const sid of this.#hot.keys()) {
        const state = this.#hot.peek(sid);
        const last = this.#lastEvent.get(sid);
        if (state === undefined || last === undefined || last.seq !== state.seq) continue;
        entries.push({ sid, seq: state.seq, lsn: last.lsn, state, dedupe: file.journal.dedupeEntries(sid, state.seq) });
      }
      const written = await file.writeCheckpoint(entries);
      this.#changedSinceCheckpoint -= changed;
      this.#lastCheckpoint = { at: Date.now(), ...written };
    })().finally(() => {
      this.#checkpointing = undefined;
    });
    return this.#checkpointing;
  }

  /** Snapshots an idle session and drops it from memory; the next command loads it back. */
  passivate(sid: string): Promise<boolean> {
    return this.#passivate(sid, true);
  }

  async #passivate(sid: string, snapshot: boolean): Promise<boolean> {
    const actor = this.#actors.get(sid);
    if (actor !== undefined && (actor.mailboxDepth > 0 || this.#hot.peek(sid)?.stream.status === 'streaming')) return false;
    if (snapshot && ((this.#eventsSinceSnapshot.get(sid) ?? 0) > 0 || (await this.#backend.snapshotSeq(sid)) !== this.#hot.peek(sid)?.seq)) await this.#snapshot(sid);
    if (actor !== undefined && (actor.mailboxDepth > 0 || this.#hot.peek(sid)?.stream.status === 'streaming')) return false;
    const state = this.#hot.peek(sid);
    if (state !== undefined) this.#handles.get(sid)?.[REMEMBER](state);
    this.#hot.delete(sid);
    this.#lastEvent.delete(sid);
    // An actor with subscribers stays (it is small): they keep receiving once the session is loaded back.
    if (actor === undefined || !actor.hasSubscribers) this.#actors.delete(sid);
    this.#lastActivity.delete(sid);
    // Without a snapshot the count goes on, so the threshold still triggers one (enableHotStorage: false).
    if (snapshot) this.#eventsSinceSnapshot.delete(sid);
    // A multi-node backend hands the session back: any node may take it next.
    await this.#backend.release(sid).catch(() => undefined);
    return true;
  }

  /**
   * Another process took the session over (its lease moved, or an append was
   * fenced): drop everything this process holds of it. Its next command loads
   * it again, from the backend, as a fresh recovery.
   */
  #lost(sid: string, reason: string): void {
    const actor = this.#actors.get(sid);
    actor?.abortStreams(`this server lost the session to another: ${reason}`);
    const state = this.#hot.peek(sid);
    if (state !== undefined) this.#handles.get(sid)?.[REMEMBER](state);
    this.#hot.delete(sid);
    this.#seen.delete(sid);
    this.#needsRepair.delete(sid);
    this.#lastEvent.delete(sid);
    this.#eventsSinceSnapshot.delete(sid);
    this.#lastActivity.delete(sid);
    if (actor !== undefined && actor.mailboxDepth === 0 && !actor.hasSubscribers) this.#actors.delete(sid);
    this.#sessionsLost += 1;
  }

  /**
   * After the journal failed (a full or failing disk: it refuses every write
   * from then on, because a retried fsync cannot be trusted), reopens the
   * file store in this process, as a restart would: running answers end as
   * interrupted, every session is recovered again from disk (on access and in
   * the background), and writes resume. Records of the failed batch that did
   * reach the file come back like the one unacknowledged event a crash may
   * leave (a retried clientMessageId finds its original). Rejects, leaving the
   * journal failed, when the disk still fails. Only for the file backend.
   */
  reopen(): Promise<void> {
    const file = this.#file;
    if (file === undefined) return Promise.reject(new ArborError(ErrorCodes.INVALID_INPUT, `reopen() is for the file store; this arbor runs on ${this.#backend.kind}`, { field: 'backend' }));
    this.#assertOpen();
    this.#reopening ??= (async () => {
      for (const actor of this.#actors.values()) actor.abortStreams('the journal failed while this answer was streaming');
      await Promise.all([...this.#actors.values()].map((a) => a.settled()));
      file.stopRecovery();
      await this.#recoveryPass?.catch(() => undefined);
      await this.#snapshotWorker;
      await Promise.all([...this.#snapshotting.values()].map((p) => p.catch(() => undefined)));
      await this.#checkpointing?.catch(() => undefined);
      await file.close().catch(() => undefined);
      const store = await Store.open<SessionState>({ recovery: 'lazy', ...this.#storeOptions }, SESSION_HOOKS);
      // Everything in memory may be behind what the file now holds: start over from it.
      for (const sid of [...this.#hot.keys()]) {
        const state = this.#hot.peek(sid);
        if (state !== undefined) this.#handles.get(sid)?.[REMEMBER](state);
        this.#hot.delete(sid);
      }
      this.#seen.clear();
      this.#needsRepair.clear();
      this.#lastEvent.clear();
      this.#eventsSinceSnapshot.clear();
      this.#snapshotQueue.clear();
      this.#backend = store;
      this.#file = store;
      this.#reopens += 1;
      this.#recoveryPass = store.recoverAll((sid, r) => this.#recovered(sid, r));
      this.#recoveryPass.catch(() => undefined);
    })().finally(() => {
      this.#reopening = undefined;
    });
    return this.#reopening;
  }

  /** Health figures: hot tier, journal writer, sessions, recovery. */
  health(): ArborHealth {
    const memory = this.#hot.memory();
    const stats = this.#backend.stats();
    const j = this.#file?.journal;
    return {
      ok: stats.state === 'open',
      backend: this.#backend.kind,
      hot: { sessions: this.#hot.size, approxBytes: memory.approxBytes },
      journal: {
        state: stats.state,
        queueDepth: stats.queueDepth,
        lastFlushAgeMs: Date.now() - stats.lastFlushAt,
        segments: j?.segmentNames().length ?? 0,
        bytes: stats.journalBytes,
        syncedLsn: j?.syncedLsn ?? 0,
        ...(j?.failure === undefined ? {} : { failure: { code: j.failure.code, errno: errnoOf(j.failure), message: j.failure.message } }),
        reopens: this.#reopens,
      },
      sessions: { active: this.#actors.size, stopped: [...this.#stopped], crashes: this.#crashCount, lost: this.#sessionsLost },
      recovery: { ...this.#recoveryCounts(), pending: this.#file?.pendingRecoveries ?? 0 },
      checkpoint: this.#lastCheckpoint,
    };
  }

  /**
   * What recovery found, per session, so far (`pending` counts those the
   * background pass has not reached). On PostgreSQL: the sessions this
   * process loaded (each on first access).
   */
  recoveryReport(): RecoveryReport {
    if (this.#file !== undefined) return this.#file.recoveryReport();
    return {
      durationMs: 0,
      counts: this.#recoveryCounts(),
      sessions: [...this.#loads],
      pending: 0,
      completedAt: Date.now(),
      journal: { segments: 0, records: 0, bytes: 0, tornTails: [], damage: [], removedTempFiles: [], durationMs: 0 },
      snapshotTempFilesRemoved: [],
    };
  }

  /** Sessions recovered so far per status; on PostgreSQL, those this process loaded. */
  #recoveryCounts(): RecoveryReport['counts'] {
    if (this.#file !== undefined) return this.#file.recoveryCounts();
    const counts: RecoveryReport['counts'] = { recovered: 0, 'tail-truncated': 0, damaged: 0, salvaged: 0, failed: 0 };
    for (const r of this.#loads) counts[r.status] += 1;
    return counts;
  }

  /** Resolves once every session is recovered (the background pass is done), with the report. */
  async whenRecovered(): Promise<RecoveryReport> {
    await this.#recoveryPass;
    return this.recoveryReport();
  }

  /** True once close() has begun. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** The file store underneath (for operations tooling and tests); throws on another backend. */
  get store(): Store<SessionState> {
    if (this.#file === undefined) throw new ArborError(ErrorCodes.INVALID_INPUT, `arbor runs on the ${this.#backend.kind} backend, not the file store`, { field: 'store' });
    return this.#file;
  }

  /** The storage backend underneath: the file store, or PostgreSQL. */
  get backend(): SessionBackend<SessionState> {
    return this.#backend;
  }

  /**
   * Stops intake, interrupts running streams (each ends with
   * stream_interrupted), drains every mailbox, snapshots sessions with new
   * events, flushes and closes the store. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    // Sessions not recovered yet stay as they are on disk; the next start recovers them.
    this.#file?.stopRecovery();
    await this.#recoveryPass?.catch(() => undefined);
    for (const actor of this.#actors.values()) actor.abortStreams('the server shut down while this answer was streaming');
    await Promise.all([...this.#actors.values()].map((a) => a.settled()));
    // Requests accepted while shutting down, or queued behind an aborted answer, end with a notice too.
    await Promise.all([...this.#actors.values()].map((a) => a.interruptUnanswered('the server shut down before this answer started').catch(() => undefined)));
    await this.#snapshotWorker;
    await Promise.all([...this.#snapshotting.values()].map((p) => p.catch(() => undefined)));
    for (const [sid, n] of this.#eventsSinceSnapshot) if (n > 0) await this.#snapshot(sid).catch(() => undefined);
    // No checkpoint at close: the final snapshots cover every session, so it would add nothing.
    await this.#checkpointing?.catch(() => undefined);
    await this.#backend.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Whether a write would be taken now, from the backend's state alone: no
   * I/O and no walk over sessions, cheap enough to ask before every write.
   * Refusals: ARBOR_JOURNAL_FAILED (a write or sync failed and the journal
   * refuses everything until `reopen()`; `errno` says which, e.g. ENOSPC or
   * EIO) and ARBOR_CLOSED (the backend is closing or closed). It says nothing
   * about one session (quarantined, stopped, owned by another node): its
   * command answers that. While `close()` drains it stays `ok` until the
   * backend closes; new commands are refused with ARBOR_CLOSED all the same.
   */
  writable(): ArborWritable {
    const backend = this.backend;
    const state = backend.stats().state;
    // Fast path, taken by every write: one look at the backend's state.
    if (state === 'open') return WRITABLE;
    const known = REFUSALS.get(backend);
    if (known !== undefined && known.state === state) return known.answer;
    // A failed journal stays failed until reopen() swaps the backend: its failure is read once, not per write.
    const failure = this.health().journal.failure;
    const answer: ArborWritable =
      failure === undefined
        ? { ok: false, code: ErrorCodes.CLOSED, message: `the ${backend.kind} backend is ${state}` }
        : { ok: false, code: ErrorCodes.JOURNAL_FAILED, message: `the journal failed (${failure.message})`, ...(failure.errno === undefined ? {} : { errno: failure.errno }) };
    REFUSALS.set(backend, { state, answer });
    return answer;
  }

  /**
   * The recovery probe behind /health: rebuilds session `sid` from the
   * backend exactly as a restart would (its newest snapshot and the journal
   * records after it, read and decoded) and compares that state, field by
   * field, with the one in memory. A session not in memory yet (after a
   * restart, before the background pass reached it) is loaded first: that
   * is its lazy recovery, and it is what gets compared. Commits landing
   * while it reads are told apart from a difference. What it finds is the
   * answer, never a rejection (a rebuild that fails is `outcome: 'error'`
   * with its code); it rejects only with ARBOR_INVALID_INPUT (`field:
   * 'backend'`) on a backend several processes share (`backend.ownership`),
   * where a rebuild would take the session's lease from the copy it is
   * compared with, and with ARBOR_CLOSED once close() began.
   */
  async probeRecovery(sid: string): Promise<RecoveryProbe> {
    const backend = this.backend;
    if (backend.ownership !== undefined) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid} is not probed: on the ${backend.kind} backend a rebuild takes the session's lease from its owner`, { field: 'backend', sessionId: sid });
    }
    const session = this.session(sid);
    const started = performance.now();
    const found = (probe: Omit<RecoveryProbe, 'sessionId' | 'durationMs'>): RecoveryProbe => ({ sessionId: sid, ...probe, durationMs: Math.round((performance.now() - started) * 100) / 100 });
    try {
      for (let attempt = 1; attempt <= PROBE_ATTEMPTS; attempt += 1) {
        // The copy in memory, without a trip through the mailbox when it is there. A handle that never
        // had the session shows the empty state: loading it (its lazy recovery, after a restart) gives the real one.
        const known = knownState(session);
        const before = known === undefined || known.seq === 0 ? await session.load() : known;
        const rebuilt = await backend.loadSession(sid);
        const after = session.state;
        if (rebuilt === undefined) {
          if (after.seq === 0) return found({ outcome: 'match', seq: 0, message: `session ${sid} has no event yet` });
          return found({ outcome: 'missing', liveSeq: after.seq, message: `session ${sid} has ${after.seq} committed events in memory, but the backend holds nothing of it` });
        }
        // Everything committed before the read began must be in the backend; more may have landed since.
        if (rebuilt.seq < before.seq) {
          return found({ outcome: 'mismatch', seq: rebuilt.seq, liveSeq: before.seq, path: 'seq', message: `session ${sid} rebuilt at seq ${rebuilt.seq}, but ${before.seq} events were committed` });
        }
        const live = rebuilt.seq === after.seq ? after : rebuilt.seq === before.seq ? before : undefined;
        // Commits landed while the backend was read, and no state in memory has the rebuilt seq: look again.
        if (live === undefined) continue;
        const path = firstDifference(rebuilt.state, live, 'state');
        if (path !== undefined) {
          return found({ outcome: 'mismatch', seq: rebuilt.seq, liveSeq: live.seq, path, message: `session ${sid} rebuilt at seq ${rebuilt.seq} differs from the state in memory at ${path}` });
        }
        if (rebuilt.status === 'damaged') return found({ outcome: 'damaged', seq: rebuilt.seq, message: `session ${sid} is damaged (readable, writes refused); its rebuilt state equals the one in memory` });
        return found({ outcome: 'match', seq: rebuilt.seq, message: `session ${sid} rebuilt at seq ${rebuilt.seq} equals the state in memory` });
      }
      return found({ outcome: 'moved', seq: session.state.seq, message: `session ${sid} took new events during each of ${PROBE_ATTEMPTS} rebuilds: only their seqs were compared` });
    } catch (err) {
      return found({ outcome: 'error', code: isArborError(err) ? err.code : ((err as { code?: unknown })?.code as string | undefined) ?? ErrorCodes.IO_ERROR, message: `rebuilding session ${sid} failed: ${(err as Error)?.message ?? String(err)}` });
    }
  }
}

/** What `arbor.writable()` answers: `ok`, or why writes are refused now. */
export type ArborWritable = { readonly ok: true } | { readonly ok: false; readonly code: (typeof ErrorCodes)['JOURNAL_FAILED' | 'CLOSED']; readonly message: string; readonly errno?: string };

/** What `arbor.probeRecovery(sid)` found. */
export interface RecoveryProbe {
  sessionId: string;
  /**
   * `match`: the rebuilt state equals the one in memory; `damaged`: equal, and
   * the session is quarantined; `mismatch`: they differ (`path` says where,
   * e.g. `state.messages[3].content`, or `seq` when committed events are
   * missing); `missing`: the backend holds nothing of a session with committed
   * events; `moved`: new events landed during every rebuild, so only seqs were
   * compared; `error`: the rebuild failed (`code`).
   */
  outcome: 'match' | 'damaged' | 'mismatch' | 'missing' | 'moved' | 'error';
  /** seq of the rebuilt state */
  seq?: number;
  /** seq of the state in memory it was compared with, when they differ */
  liveSeq?: number;
  path?: string;
  code?: string;
  message: string;
  durationMs: number;
}

const WRITABLE: ArborWritable = Object.freeze({ ok: true });
/** The refusal last computed per backend and state (the failure behind a failed journal does not change). */
const REFUSALS = new WeakMap<object, { state: string; answer: ArborWritable }>();
/** Rebuilds tried before a session that keeps taking events is compared by seq only. */
const PROBE_ATTEMPTS = 3;

/** The session's state in memory without a trip through its mailbox; undefined while it is still being recovered. */
function knownState(session: Session): SessionState | undefined {
  try {
    return session.state;
  } catch (err) {
    if (isArborError(err, ErrorCodes.NOT_LOADED)) return undefined;
    throw err;
  }
}

/**
 * Where two JSON-like values differ (`state.messages[2].content`), or
 * undefined when they are equal. A key holding undefined equals a missing
 * key: snapshot codecs may keep or drop either.
 */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  if (a === b || (Number.isNaN(a) && Number.isNaN(b))) return undefined;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return path;
  if (Array.isArray(a)) {
    const other = b as unknown[];
    if (a.length !== other.length) return `${path}.length`;
    for (let i = 0; i < a.length; i += 1) {
      const d = firstDifference(a[i], other[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  for (const key of new Set([...Object.keys(ra), ...Object.keys(rb)])) {
    const d = firstDifference(ra[key], rb[key], `${path}.${key}`);
    if (d !== undefined) return d;
  }
  return undefined;
}

/** The errno code (ENOSPC, EIO, …) somewhere in an error's cause chain. */
function errnoOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; depth += 1) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Tells telemetry about an error the runtime handled (only when someone listens). */
function publishError(source: string, fallbackCode: string, err: unknown, sessionId?: string): void {
  if (!errorChannel.hasSubscribers) return;
  const code = isArborError(err) ? err.code : fallbackCode;
  errorChannel.publish({ source, code, message: (err as Error)?.message ?? String(err), ...(sessionId === undefined ? {} : { sessionId }) } satisfies ErrorMessage);
}

/** Runtime-internal: tells a session handle the state its session was dropped from memory with. */
const REMEMBER = Symbol('remember');

/**
 * A session as applications use it. Every method goes through the session's
 * mailbox; every write resolves only once its event is durable.
 */
export class Session {
  readonly id: string;
  readonly #arbor: Arbor;
  readonly #actor: () => SessionActor;
  readonly #peek: () => SessionState | undefined;
  readonly #pending: () => boolean;
  #last: SessionState;

  constructor(id: string, arbor: Arbor, actor: () => SessionActor, peek: () => SessionState | undefined, pending: () => boolean) {
    this.id = id;
    this.#arbor = arbor;
    this.#actor = actor;
    this.#peek = peek;
    this.#pending = pending;
    this.#last = peek() ?? initialSessionState(id);
  }

  [REMEMBER](state: SessionState): void {
    this.#last = state;
  }

  /** Runs a command on the actor; intake stops when close() begins (ARBOR_CLOSED). */
  #command<T>(run: (actor: SessionActor) => Promise<T>): Promise<T> {
    if (this.#arbor.closing) return Promise.reject(new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new commands`, { sessionId: this.id }));
    return run(this.#actor());
  }

  /**
   * The committed state (immutable). A session dropped from memory shows the
   * state it was dropped with. Right after a restart, a session the
   * background pass has not reached yet throws ARBOR_NOT_LOADED: `await
   * session.load()` (or any command) recovers it at once.
   */
  get state(): SessionState {
    const hot = this.#peek();
    if (hot !== undefined) this.#last = hot;
    else if (this.#pending()) {
      throw new ArborError(ErrorCodes.NOT_LOADED, `session ${this.id} is still being recovered; await session.load() first`, { sessionId: this.id });
    }
    return this.#last;
  }

  /**
   * The committed state, recovering the session first if needed (on first
   * access after a restart: its snapshot and journal records, and the
   * interrupted turns the last process death left). Works while closing.
   */
  async load(): Promise<SessionState> {
    await this.#actor().run('load', async () => undefined, true);
    return this.state;
  }

  /**
   * Sends the user's message. Resolves with `{ messageId, seq }` once the
   * message is durable, and starts the assistant's streamed answer. A retried
   * `clientMessageId` resolves with the original message and starts nothing.
   */
  sendMessage(input: { content: string; clientMessageId?: string; metadata?: Record<string, unknown> }): Promise<{ messageId: string; seq: number; duplicate: boolean }> {
    return this.#command((a) => a.sendMessage(input.content, input.clientMessageId, input.metadata));
  }

  /** Regenerates the last answer (the interrupted one first). */
  retry(): Promise<{ requestMessageId: string; retryOf: string | undefined }> {
    return this.#command((a) => a.retry());
  }

  changeConfig(key: string, value: unknown): Promise<{ seq: number }> {
    return this.#command((a) => a.changeConfig(key, value));
  }

  decidePermission(decision: EventData<'permission_decided'>): Promise<{ seq: number }> {
    return this.#command((a) => a.decidePermission(decision));
  }

  recordToolExecution(event: { type: 'mcp_server_connected'; data: EventData<'mcp_server_connected'> } | { type: 'mcp_tool_executed'; data: EventData<'mcp_tool_executed'> }): Promise<{ seq: number }> {
    return this.#command((a) => a.recordToolExecution(event));
  }

  executeCommand(command: string, args: readonly unknown[] = []): Promise<{ commandId: string; seq: number; result: unknown }> {
    return this.#command((a) => a.executeCommand(command, args));
  }

  /**
   * Sends a recoverable event (`typing_indicator`, `ui_state_changed`,
   * `cache_updated`) to this session's subscribers. Validated (ARBOR_INVALID_INPUT
   * naming the field), never written to disk, not part of the state.
   */
  publish<T extends 'typing_indicator' | 'ui_state_changed' | 'cache_updated'>(type: T, data: EventData<T>): void {
    if (this.#arbor.closing) throw new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new events`, { sessionId: this.id });
    this.#actor().publishRecoverable(type, data);
  }

  /** Committed events, stream chunks and recoverable events as they happen; returns the unsubscribe function. */
  subscribe(listener: (update: SessionUpdate) => void): () => void {
    return this.#actor().subscribe(listener);
  }

  /** Buffered chunks of a streaming message from `fromIndex`: what a reconnecting client missed. */
  chunks(messageId: string, fromIndex = 0): Chunk[] {
    return this.#actor().chunksSince(messageId, fromIndex);
  }

  /**
   * Journaled events with seq ≥ `fromSeq` that no snapshot has released yet,
   * in order (older ones are summarised by `state`).
   */
  events(options: { fromSeq?: number } = {}): Promise<JournalRecord[]> {
    return this.#arbor.backend.read(this.id, options.fromSeq ?? 1);
  }

  /** Resolves when the commands queued so far and every answer they started have ended (completed or interrupted). */
  idle(): Promise<void> {
    return this.#actor().settled();
  }
}

/** Opens Arbor: the store in `dataDir` (default ./data), recovery, background snapshots. */
export function createArbor(options: ArborOptions = {}): Promise<Arbor> {
  return Arbor.create(options);
}
