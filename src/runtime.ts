import { boolean, positiveInteger } from './core/validate.ts';
import { ArborError, ErrorCodes, isArborError } from './core/errors.ts';
import { errorChannel, type ErrorMessage } from './telemetry/channels.ts';
import { restoreNoticeFor, type RestoreMarker } from './core/restore-notice.ts';
import { assertSessionId } from './core/ids.ts';
import { SESSION_HOOKS } from './core/session-hooks.ts';
import { commandsInFlight, initialSessionState, pendingInterruption, toolCallsInFlight, type SessionState } from './core/state.ts';
import { HotTier } from './hot/hot-tier.ts';
import { MockProvider } from './llm/mock-provider.ts';
import type { LlmProvider } from './llm/provider.ts';
import { LanguageModelProvider } from './llm/ai-sdk-provider.ts';
import type { LanguageModel } from 'ai';
import type { CheckpointInput, RecoveredSession, SessionBackend } from './backend/backend.ts';
import type { SessionRecovery } from './backend/replay.ts';
import { openBackend, STORE_OPTION_NAMES, type PostgresOptions, type RecoveryReport, type StoreOptions } from './backends.ts';
import { closestName } from './core/suggest.ts';
import { SessionActor, unansweredRequests, type CommandHandler, type SessionContext } from './sessions/session-actor.ts';
import { REMEMBER, Session } from './sessions/session.ts';
import { SessionManager, type SessionRecord } from './sessions/session-manager.ts';
import { SnapshotScheduler } from './sessions/snapshot-scheduler.ts';
import { SessionLister, type ListOptions, type SessionPage } from './sessions/session-list.ts';
import { isTenantStorageId, MAX_TENANT_SESSION_ID_CHARS, parseStorageId, storageSessionId } from './sessions/tenancy.ts';
import { randomUUID } from 'node:crypto';
import { ToolRegistry, type ArborTool } from './tools/registry.ts';
import { McpServers, parseMcpServers, type McpEvent, type McpServerConfig, type McpServerStatus } from './tools/mcp.ts';

export { Session } from './sessions/session.ts';

/** Options of the runtime, on top of the storage engine's. Every field has a default in DEFAULT_RUNTIME_OPTIONS. */
export interface RuntimeOptions {
  /** The LLM provider (default: the deterministic mock, shaped by ARBOR_MOCK_CHUNKS / ARBOR_MOCK_CHUNK_DELAY_MS). */
  llm: LlmProvider | undefined;
  /**
   * Any AI SDK `LanguageModel` (ai@6), e.g. `anthropic('claude-sonnet-4-5')` or
   * `openai('gpt-4o')`, instead of `llm`: answers stream through the SDK's
   * `streamText`, with the model's finish reason and usage.
   */
  model: LanguageModel | undefined;
  /** With `model`: other models a session may pick with its `model` config, by name. */
  models: Readonly<Record<string, LanguageModel>> | undefined;
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
  postgres: PostgresOptions<SessionState> | undefined;
  /**
   * A command whose session takes longer than this to load fails with
   * ARBOR_RECOVERY_TIMEOUT: the load is abandoned (its result, if it ever
   * comes, is dropped), and the next access to the session loads it again.
   */
  recoveryTimeoutMs: number;
  /**
   * Tools the model may call: AI SDK `tool()` definitions, each with an
   * `execute`; `idempotent: true` marks one safe to repeat (docs/tools.md).
   */
  tools: Readonly<Record<string, ArborTool>>;
  /** MCP servers whose tools the model may call: `{ command, args?, env? }` (stdio) or `{ url, headers? }`. */
  mcpServers: Readonly<Record<string, McpServerConfig>>;
  /** Model calls per turn at most: each step runs the tool calls of the one before. */
  maxToolSteps: number;
  /** Tools whose every call waits for an approval (beside MCP destructive ones and `needsApproval`). */
  toolsNeedApproval: readonly string[];
  /** Told when an MCP server connects, fails or dies (the server logs it). */
  onMcpEvent: ((event: McpEvent) => void) | undefined;
}

export const DEFAULT_RUNTIME_OPTIONS: Readonly<RuntimeOptions> = Object.freeze({
  llm: undefined,
  model: undefined,
  models: undefined,
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
  tools: Object.freeze({}),
  mcpServers: Object.freeze({}),
  maxToolSteps: 10,
  toolsNeedApproval: Object.freeze([]),
  onMcpEvent: undefined,
});

export type ArborOptions = Partial<StoreOptions> & Partial<RuntimeOptions>;

const RUNTIME_KEYS = new Set(Object.keys(DEFAULT_RUNTIME_OPTIONS));

/** Health figures of a running Arbor (the server turns them into /health). */
export interface ArborHealth {
  ok: boolean;
  /** the runtime's lifecycle (see `Arbor.state`) */
  state: ArborState;
  /** 'file' or 'postgres' */
  backend: string;
  /**
   * `approxBytes`: an estimate of the bytes of the states in memory, refreshed a bounded piece per call (each call
   * sizes at most a fixed number of values, so health() stays cheap however much is held; see README "Metrics"):
   * a session changed since it was last sized counts its earlier size, one never sized the mean of those
   * sized. `estimated`: the sessions whose share is such a stand-in (0: the figure is every state's own size).
   */
  hot: { sessions: number; approxBytes: number; estimated: number };
  /** `failure`: why a failed journal failed (`errno`: e.g. ENOSPC, EIO); `reopens`: times `reopen()` resumed it */
  journal: { state: string; queueDepth: number; lastFlushAgeMs: number; segments: number; bytes: number; syncedLsn: number; failure?: { code: string; errno: string | undefined; message: string }; reopens: number };
  /** `lost`: sessions another process took over from this one (multi-node); `failedToLoad`: sessions whose last load failed (the next access tries again) */
  sessions: { active: number; stopped: string[]; crashes: number; lost: number; failedToLoad: number };
  /** commands queued or running in the live sessions' mailboxes: in all, and in the fullest one */
  mailbox: { queued: number; max: number };
  /** sessions recovered per status so far, and those still waiting for the background pass */
  recovery: RecoveryReport['counts'] & { pending: number };
  /** the last whole-table checkpoint this process wrote */
  checkpoint: { at: number; entries: number; bytes: number } | undefined;
  /** each configured MCP server (connected, failed, closed) and the tools registered in all */
  tools: { registered: number; mcpServers: Record<string, McpServerStatus> };
}

/**
 * The runtime's lifecycle: `opening` (createArbor has not resolved), `open`,
 * `degraded` (the backend refuses writes, e.g. a failed journal, or the
 * background recovery pass failed: reads go on, `reopen()` may bring writes
 * back), `reopening`, `closing`, `closed`.
 */
export type ArborState = 'opening' | 'open' | 'degraded' | 'reopening' | 'closing' | 'closed';

type Backend = SessionBackend<SessionState, RecoveryReport>;

/**
 * The runtime: the storage backend, the hot tier, one record (and actor) per
 * active session, a supervisor, and background snapshots. `createArbor`
 * opens the backend, recovers every session, and marks streams cut by the
 * last process death as interrupted.
 */
export class Arbor {
  #backend: Backend;
  #state: ArborState = 'opening';
  #reopening: Promise<void> | undefined;
  /** Loads on a backend without lazy recovery, for recoveryReport (one with it keeps its own). */
  readonly #loads: SessionRecovery[] = [];
  readonly #hot = new HotTier<SessionState>();
  readonly #o: Readonly<RuntimeOptions> & { llm: LlmProvider };
  readonly #sessions = new SessionManager();
  readonly #snapshots: SnapshotScheduler;
  #changedSinceCheckpoint = 0;
  #lastCheckpoint: { at: number; entries: number; bytes: number } | undefined;
  #checkpointing: Promise<void> | undefined;
  /** The background recovery pass, as the backend runs it (whenRecovered rejects with its failure). */
  #recoveryPass: Promise<void> | undefined;
  /** The same pass, its failure reported: what shutdown and reopen wait for. */
  #recoveryPassSettled: Promise<void> | undefined;
  #crashCount = 0;
  #sessionsLost = 0;
  #reopens = 0;
  /** Set when the data was restored from a backup (`arbor restore`): its sessions show a notice once. */
  #restoreMarker: RestoreMarker | undefined;
  #recoveries = 0;
  #recoveryWaiters: (() => void)[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  readonly #ctx: SessionContext;
  readonly #lister = new SessionLister(() => this.#backend, (sid) => this.#hot.peek(sid));
  /** Storage ids of forks being made: a second fork into the same id is refused while the first runs. */
  readonly #forking = new Set<string>();
  readonly #tools: ToolRegistry;
  readonly #mcp: McpServers;

  private constructor(backend: Backend, options: Readonly<RuntimeOptions> & { llm: LlmProvider }, tools: ToolRegistry, mcp: McpServers) {
    this.#backend = backend;
    this.#o = options;
    this.#tools = tools;
    this.#mcp = mcp;
    this.#snapshots = new SnapshotScheduler(
      (sid) => this.#snapshot(sid),
      (sid, err) => publishError('snapshot', ErrorCodes.IO_ERROR, err, sid),
      () => this.#shuttingDown,
    );
    const self = this;
    this.#ctx = {
      get store() {
        return self.#backend;
      },
      hot: this.#hot,
      llm: options.llm,
      commands: options.commands,
      tools,
      maxToolSteps: options.maxToolSteps,
      mailboxCapacity: options.mailboxCapacity,
      maxRestarts: options.maxRestarts,
      restartWindowMs: options.restartWindowMs,
      streamBufferChunks: options.streamBufferChunks,
      activate: (sid) => this.#activate(sid),
      restoreNotice: (state) => (this.#restoreMarker === undefined ? undefined : restoreNoticeFor(this.#restoreMarker, state)) as { content: string; metadata: Record<string, unknown> } | undefined,
      committed: (sid, state, lsn) => this.#committed(sid, state, lsn),
      crashed: (sid, err, stopped) => {
        this.#crashCount += 1;
        if (stopped) this.#sessions.record(sid).phase = 'stopped';
        publishError('handler', stopped ? ErrorCodes.SESSION_STOPPED : ErrorCodes.HANDLER_CRASHED, err, sid);
      },
      failed: (sid, source, err) => publishError(source, ErrorCodes.IO_ERROR, err, sid),
    };
  }

  /** Opens the backend (`options.dataDir`, or `options.postgres`), recovers every session and starts background work. */
  static async create(options: ArborOptions = {}): Promise<Arbor> {
    checkOptionShapes(options);
    const storeOptions: Partial<StoreOptions> = {};
    const runtime: Partial<RuntimeOptions> = {};
    for (const [key, value] of Object.entries(options)) {
      if (RUNTIME_KEYS.has(key)) (runtime as Record<string, unknown>)[key] = value;
      else (storeOptions as Record<string, unknown>)[key] = value;
    }
    const o = { ...DEFAULT_RUNTIME_OPTIONS, ...Object.fromEntries(Object.entries(runtime).filter(([, v]) => v !== undefined)) } as RuntimeOptions;
    for (const key of ['sessionIdleTimeoutMs', 'snapshotEveryEvents', 'snapshotIntervalMs', 'mailboxCapacity', 'maxRestarts', 'restartWindowMs', 'streamBufferChunks', 'maxConcurrentRecoveries', 'checkpointIntervalMs', 'recoveryTimeoutMs'] as const) positiveInteger(key, o[key]);
    for (const key of ['tableCheckpoint', 'enableHotStorage'] as const) boolean(key, o[key]);
    if (o.llm !== undefined && o.model !== undefined) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, 'give createArbor either llm (an LlmProvider) or model (an AI SDK LanguageModel), not both', { field: 'model' });
    }
    positiveInteger('maxToolSteps', o.maxToolSteps);
    let llm: LlmProvider;
    try {
      llm = o.llm ?? (o.model !== undefined ? new LanguageModelProvider({ model: o.model, ...(o.models === undefined ? {} : { models: o.models }) }) : new MockProvider());
    } catch (err) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `option model: ${(err as Error).message}`, { field: 'model' }, { cause: err });
    }
    const tools = new ToolRegistry(o.tools, { needsApproval: o.toolsNeedApproval });
    const mcpServers = parseMcpServers(o.mcpServers);
    const mcp = new McpServers(tools, (e) => {
      if (e.type !== 'connected') publishError('mcp', ErrorCodes.TOOL_SERVER_FAILED, new Error(`MCP server ${e.server} ${e.type}: ${e.type === 'failed' ? e.error : (e.error ?? '')}`));
      o.onMcpEvent?.(e);
    });
    // Servers start before the node serves: a turn never sees a half-registered tool set.
    await mcp.connect(mcpServers);
    let backend: Backend;
    try {
      backend = await openBackend<SessionState>({ store: storeOptions, postgres: o.postgres }, SESSION_HOOKS);
    } catch (err) {
      await mcp.close();
      throw err;
    }
    const arbor = new Arbor(backend, Object.freeze({ ...o, llm }), tools, mcp);
    await arbor.#start();
    return arbor;
  }

  async #start(): Promise<void> {
    // An eager open rebuilt everything already; a lazy one recovers each session on first access
    // (#activate) and all of them in the background, through the same #recovered.
    // A backend without lazy recovery (PostgreSQL) only loads on access: loading them all would take every lease.
    this.#backend.onSessionLost((sid, reason) => this.#lost(sid, reason));
    try {
      this.#restoreMarker = await this.#backend.restoreMarker?.();
    } catch (err) {
      await this.#backend.close();
      throw err;
    }
    this.#startRecovery();
    const tick = Math.min(this.#o.snapshotIntervalMs, Math.max(1000, Math.floor(this.#o.sessionIdleTimeoutMs / 2)));
    this.#timer = setInterval(() => void this.#background().catch((err: unknown) => publishError('background', ErrorCodes.IO_ERROR, err)), tick);
    this.#timer.unref();
    this.#state = 'open';
  }

  /** Hands the sessions an eager open rebuilt to the hot tier and starts the background pass, if the backend has one. */
  #startRecovery(): void {
    const recovery = this.#backend.recovery;
    if (recovery === undefined) {
      this.#recoveryPass = undefined;
      this.#recoveryPassSettled = undefined;
      return;
    }
    for (const [sid, r] of recovery.takeRecovered()) this.#recovered(sid, r);
    const pass = recovery.recoverAll((sid, r) => this.#recovered(sid, r));
    this.#recoveryPass = pass;
    this.#recoveryPassSettled = pass.catch((err: unknown) => {
      // Sessions the pass did not reach still load on access; what is lost is the guarantee that all of them are checked.
      publishError('recovery', ErrorCodes.IO_ERROR, err);
      if (this.#state === 'open') this.#state = 'degraded';
    });
  }

  /**
   * A session rebuilt by the background pass: into the hot tier, unless this
   * process has had it already (it was loaded on access first). A stream cut
   * by the last process death, and requests whose answer never started, get
   * their interrupted turns through the session's mailbox, ahead of any
   * command that arrives later.
   */
  #recovered(sid: string, r: RecoveredSession<SessionState>): void {
    if (this.#shuttingDown) return;
    const rec = this.#sessions.record(sid);
    if (rec.seen || rec.phase === 'loading') return;
    const healthy = r.status !== 'damaged' && r.status !== 'failed';
    const restored = this.#restoreMarker !== undefined && restoreNoticeFor(this.#restoreMarker, r.state) !== undefined;
    const repair = healthy && (pendingInterruption(r.state) !== undefined || toolCallsInFlight(r.state).length > 0 || commandsInFlight(r.state).length > 0 || unansweredRequests(r.state).length > 0 || restored);
    // Without hot storage nothing stays in memory: the session is loaded when it is used.
    if (!this.#o.enableHotStorage && !repair) return;
    this.#hot.store(sid, r.state);
    if (r.report.lastLsn !== undefined) rec.lastEvent = { seq: r.seq, lsn: r.report.lastLsn };
    this.#sessions.loaded(rec, repair);
    if (repair) {
      void this.#actor(rec).run('recover', async () => undefined, true).catch((err: unknown) => publishError('recovery', ErrorCodes.IO_ERROR, err, sid));
    }
  }

  /**
   * Whether the session has any durable event or snapshot (without creating
   * it). When it has, it is loaded: on a multi-node backend this takes its
   * lease (or rejects with ARBOR_NOT_OWNER naming the owner).
   */
  async exists(id: string): Promise<boolean> {
    assertSessionId(id);
    if ((this.#hot.peek(id)?.seq ?? 0) > 0) return true;
    if (!(await this.#backend.exists(id))) return false;
    // A backend that keeps sessions itself (files) answers from its index; one with ownership hands the session over on load.
    if (this.#backend.recovery === undefined) return (await this.session(id).load()).seq > 0;
    return true;
  }

  /**
   * The session with this id (created on first use). With `tenant`, the
   * session `id` of that tenant: each tenant has its own id space (see
   * docs/sessions-api.md); the handle's `id` is then the storage id
   * (`__t<tag>_<id>`). Without it (or with the tenant `default`), the
   * session stored under `id` itself.
   */
  session(id: string, options: { tenant?: string } = {}): Session {
    const sid = options.tenant === undefined ? id : storageSessionId(id, options.tenant);
    return this.#session(sid);
  }

  #session(id: string): Session {
    assertSessionId(id);
    this.#assertOpen();
    const rec = this.#sessions.record(id);
    rec.handle ??= new Session(
      id,
      this,
      () => this.#actor(rec),
      () => this.#hot.peek(id),
      () => this.#backend.recovery?.isPending(id) ?? false,
    );
    return rec.handle;
  }

  /**
   * One page of the stored sessions of `tenant` (without it: of the default
   * id space), most recently active first: `{ sessions: [{ id, createdAt,
   * updatedAt, seq, status, messageCount, title? }], nextCursor }`. Pass
   * `nextCursor` back as `cursor` for the next page: a paging never repeats
   * or skips a session that existed when it began, however the sessions
   * change meanwhile (docs/sessions-api.md). Rejects with ARBOR_INVALID_INPUT
   * naming `limit` (1–200, default 50) or `cursor` (not issued for this tenant).
   */
  sessions(options: ListOptions = {}): Promise<SessionPage> {
    try {
      this.#assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#lister.list(options);
  }

  /**
   * Forks session `sid` (a storage id, as `session.id`): a new session, in
   * the same tenant, whose state is the source's as it stood after its event
   * `atSeq` (default: its last): the same messages, config and permission
   * decisions. The new session's first event is `forked_from`; the source
   * records `fork_created`. `id` is the new session's id in that tenant
   * (default: a random UUID). Rejects with ARBOR_INVALID_INPUT naming
   * `atSeq` (beyond the source's seq, below 1, or no longer held: its events
   * were compacted and no kept snapshot lies at or below it), with
   * ARBOR_SESSION_EXISTS when `id` is taken, ARBOR_INVALID_SESSION_ID for a
   * bad `id`. The source is not changed otherwise. `tenant`: the fork's
   * tenant (default: the source's id space).
   */
  async fork(sid: string, options: { id?: string; atSeq?: number; tenant?: string } = {}): Promise<Session> {
    this.#assertOpen();
    assertSessionId(sid);
    const { tag } = parseStorageId(sid);
    const id = options.id ?? randomUUID();
    assertSessionId(id);
    if (isTenantStorageId(id)) throw new ArborError(ErrorCodes.INVALID_SESSION_ID, `invalid session id ${JSON.stringify(id)}: ids of the form __t<tag>_… are reserved`, { field: 'id', sessionId: id });
    if (tag !== '' && id.length > MAX_TENANT_SESSION_ID_CHARS) storageSessionId(id, 'x'); // throws, naming the limit
    // In the tenant given (the server's caller), else in the source's own id space.
    const forkSid = options.tenant !== undefined ? storageSessionId(id, options.tenant) : tag === '' ? id : `__t${tag}_${id}`;
    const source = this.#session(sid);
    const current = await source.load();
    if (current.seq === 0) throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid} has no event: there is nothing to fork`, { field: 'sessionId', sessionId: sid });
    const atSeq = options.atSeq ?? current.seq;
    if (typeof atSeq !== 'number' || !Number.isSafeInteger(atSeq) || atSeq < 1 || atSeq > current.seq) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `atSeq ${JSON.stringify(atSeq)} is not a seq of session ${sid} (1 to ${current.seq})`, { field: 'atSeq', sessionId: sid, seq: current.seq });
    }
    if (this.#forking.has(forkSid) || (await this.exists(forkSid))) throw new ArborError(ErrorCodes.SESSION_EXISTS, `session ${id} already exists`, { sessionId: forkSid });
    this.#forking.add(forkSid);
    try {
      const at = atSeq === current.seq ? current : (await this.#backend.peekSession(sid, atSeq))?.state;
      if (at === undefined || at.seq !== atSeq) throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid}: its state at seq ${atSeq} is no longer held`, { field: 'atSeq', sessionId: sid, atSeq });
      // The fork starts idle (an answer streaming at atSeq is not the fork's), created by its forked_from event.
      const { forkedFrom: _from, forks: _forks, ...rest } = at;
      const seed: SessionState = Object.freeze({ ...rest, id: forkSid, stream: initialSessionState(forkSid).stream, createdAt: 0 });
      // A handle asked for earlier may hold the empty state: the seeded one is loaded instead.
      if (this.#hot.peek(forkSid)?.seq === 0) this.#hot.delete(forkSid);
      await this.#backend.seedSession(forkSid, seed, atSeq);
      const rec = this.#sessions.record(forkSid);
      const fork = this.#session(forkSid);
      // Not a restart: the fork holds exactly the source's messages up to atSeq, with nothing to repair.
      rec.seen = true;
      const actor = this.#actor(rec);
      await actor.run('fork', async (state) => void (await actor.commit(state, 'forked_from', { sourceId: sid, atSeq })));
      const sourceActor = this.#actor(this.#sessions.record(sid));
      await sourceActor.run('fork', async (state) => void (await sourceActor.commit(state, 'fork_created', { forkId: forkSid, atSeq })));
      return fork;
    } finally {
      this.#forking.delete(forkSid);
    }
  }

  #assertOpen(): void {
    if (this.#shuttingDown) throw new ArborError(ErrorCodes.CLOSED, 'arbor is closed');
  }

  #actor(rec: SessionRecord): SessionActor {
    rec.actor ??= new SessionActor(rec.id, this.#ctx);
    rec.lastActivityAt = Date.now();
    return rec.actor;
  }

  /**
   * The session's committed state, loaded into the hot tier when it is not
   * there: recovered (first access after a restart), or loaded back after
   * passivation. `fresh` says it is the first time this process has it, so
   * the actor repairs what the last process death left (interrupted turns).
   */
  #activate(sid: string): { state: SessionState; fresh: boolean } | Promise<{ state: SessionState; fresh: boolean }> {
    const rec = this.#sessions.record(sid);
    rec.lastActivityAt = Date.now();
    const hot = this.#hot.retrieve(sid);
    if (hot !== undefined) return { state: hot, fresh: this.#sessions.takeRepair(rec) };
    return this.#load(sid, rec);
  }

  /** {@link #activate} of a session not in the hot tier: loaded from the backend. */
  async #load(sid: string, rec: SessionRecord): Promise<{ state: SessionState; fresh: boolean }> {
    // At most maxConcurrentRecoveries loads at once, so a burst of returning sessions cannot swamp the disk.
    while (this.#recoveries >= this.#o.maxConcurrentRecoveries) await new Promise<void>((r) => this.#recoveryWaiters.push(r));
    this.#recoveries += 1;
    try {
      const again = this.#hot.retrieve(sid);
      if (again !== undefined) return { state: again, fresh: this.#sessions.takeRepair(rec) };
      const before = rec.phase;
      if (rec.phase !== 'stopped') rec.phase = 'loading';
      let loaded: RecoveredSession<SessionState> | undefined;
      try {
        loaded = await this.#withTimeout(this.#backend.loadSession(sid), sid);
      } catch (err) {
        // Failed to load: nothing of it is in memory, and the next access loads it again.
        rec.loadFailure = err;
        if (rec.phase === 'loading') rec.phase = before === 'lost' ? 'lost' : 'pending';
        throw err;
      }
      if (loaded !== undefined && this.#backend.recovery === undefined) this.#loads.push(loaded.report);
      // The background pass may have brought it in meanwhile (and queued its repair).
      const raced = this.#hot.retrieve(sid);
      if (raced !== undefined) return { state: raced, fresh: this.#sessions.takeRepair(rec) };
      const state = loaded?.state ?? initialSessionState(sid);
      if (loaded?.report.lastLsn !== undefined) rec.lastEvent = { seq: loaded.seq, lsn: loaded.report.lastLsn };
      const fresh = !rec.seen && loaded !== undefined && loaded.status !== 'damaged' && loaded.status !== 'failed';
      this.#sessions.loaded(rec, false);
      this.#hot.store(sid, state);
      return { state, fresh };
    } finally {
      this.#recoveries -= 1;
      this.#recoveryWaiters.shift()?.();
    }
  }

  /**
   * The load, or ARBOR_RECOVERY_TIMEOUT after recoveryTimeoutMs. A load that
   * timed out is abandoned: whatever it resolves with later is dropped, and a
   * failure is still reported.
   */
  #withTimeout<T>(load: Promise<T>, sid: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        load.catch((err: unknown) => publishError('recovery', ErrorCodes.IO_ERROR, err, sid));
        const err = new ArborError(ErrorCodes.RECOVERY_TIMEOUT, `loading session ${sid} took longer than recoveryTimeoutMs (${this.#o.recoveryTimeoutMs} ms); it was abandoned, the next access loads it again`, { sessionId: sid, field: 'recoveryTimeoutMs' });
        publishError('recovery', ErrorCodes.RECOVERY_TIMEOUT, err, sid);
        reject(err);
      }, this.#o.recoveryTimeoutMs);
    });
    return Promise.race([load, timeout]).finally(() => clearTimeout(timer));
  }

  #committed(sid: string, state: SessionState, lsn: number): void {
    const rec = this.#sessions.record(sid);
    rec.lastEvent = { seq: state.seq, lsn };
    this.#changedSinceCheckpoint += 1;
    rec.lastActivityAt = Date.now();
    rec.eventsSinceSnapshot += 1;
    if (!this.#o.enableHotStorage) {
      this.#evictSoon(rec);
      return;
    }
    if (rec.eventsSinceSnapshot >= this.#o.snapshotEveryEvents && !this.#snapshots.has(sid)) this.#snapshots.enqueue(sid);
  }

  /**
   * enableHotStorage: false — once the command that committed has finished
   * (next turn of the event loop) and no stream runs, the session leaves
   * memory; snapshotted first when it reached its threshold, or always when
   * the journal is off (then the snapshot is all that keeps it).
   */
  #evictSoon(rec: SessionRecord): void {
    if (rec.evicting) return;
    rec.evicting = true;
    setImmediate(() => {
      rec.evicting = false;
      if (this.#shuttingDown) return;
      const snapshot = !(this.#backend.persistence?.journal ?? true) || rec.eventsSinceSnapshot >= this.#o.snapshotEveryEvents;
      void this.#passivate(rec.id, snapshot).catch((err: unknown) => publishError('passivation', ErrorCodes.IO_ERROR, err, rec.id));
    });
  }

  /** Snapshots the session's current committed state in the background; one at a time per session. */
  #snapshot(sid: string): Promise<void> {
    const rec = this.#sessions.record(sid);
    if (rec.snapshotting !== undefined) return rec.snapshotting;
    if (!(this.#backend.persistence?.snapshots ?? true)) {
      // Snapshots are off: the journal keeps everything (and is never compacted).
      rec.eventsSinceSnapshot = 0;
      return Promise.resolve();
    }
    const state = this.#hot.peek(sid);
    if (state === undefined || state.seq === 0) return Promise.resolve();
    rec.eventsSinceSnapshot = 0;
    const p = this.#backend
      .snapshot(sid, state, state.seq)
      .then(() => undefined)
      .finally(() => {
        rec.snapshotting = undefined;
      });
    rec.snapshotting = p;
    return p;
  }

  /** Periodic work: snapshot sessions with new events and those pinning the oldest segment; passivate idle ones. */
  async #background(): Promise<void> {
    if (this.#shuttingDown || this.#reopening !== undefined) return;
    // Through the same one-at-a-time worker as threshold snapshots: the sessions pinning the oldest
    // segment first (so the journal stays bounded), then every session with new events.
    for (const sid of this.#backend.sessionsToSnapshot()) if (this.#hot.has(sid)) this.#snapshots.add(sid);
    for (const rec of this.#sessions.values()) if (rec.eventsSinceSnapshot > 0) this.#snapshots.add(rec.id);
    this.#snapshots.start();
    await this.#snapshots.idle();
    if (this.#o.tableCheckpoint && this.#changedSinceCheckpoint > 0 && Date.now() - (this.#lastCheckpoint?.at ?? 0) >= this.#o.checkpointIntervalMs) {
      await this.checkpoint().catch((err: unknown) => publishError('checkpoint', ErrorCodes.IO_ERROR, err));
    }
    const now = Date.now();
    for (const rec of [...this.#sessions.values()]) {
      if ((rec.phase !== 'hot' && rec.phase !== 'stopped') || !this.#hot.has(rec.id)) continue;
      if (now - rec.lastActivityAt < this.#o.sessionIdleTimeoutMs) continue;
      await this.passivate(rec.id).catch((err: unknown) => publishError('passivation', ErrorCodes.IO_ERROR, err, rec.id));
    }
  }

  /**
   * Writes the whole-table checkpoint now, when the backend has one: every
   * session in memory whose last event's LSN is known, in one file, encoded
   * in slices off the commit path. Runs in the background every
   * `checkpointIntervalMs`.
   */
  checkpoint(): Promise<void> {
    const checkpoint = this.#backend.checkpoint;
    if (checkpoint === undefined) return Promise.resolve(); // e.g. PostgreSQL: each node loads what it owns, on access
    this.#checkpointing ??= (async () => {
      const changed = this.#changedSinceCheckpoint;
      const entries: CheckpointInput<SessionState>[] = [];
      for (const sid of this.#hot.keys()) {
        const state = this.#hot.peek(sid);
        const last = this.#sessions.get(sid)?.lastEvent;
        if (state === undefined || last === undefined || last.seq !== state.seq) continue;
        entries.push({ sid, seq: state.seq, lsn: last.lsn, state });
      }
      const written = await checkpoint.write(entries);
      this.#changedSinceCheckpoint -= changed;
      this.#lastCheckpoint = { at: Date.now(), ...written };
    })().finally(() => {
      this.#checkpointing = undefined;
    });
    return this.#checkpointing;
  }

  /**
   * Deletes the session: a running answer ends first (its terminal event is
   * journaled and published), then the backend deletes it durably. From then
   * on it does not exist (`exists` false); the id may start a new, empty
   * session. Rejects with ARBOR_SESSION_NOT_FOUND when it has no event. The
   * file store erases its bytes within `erasureDeadlineMs` (`whenErased`).
   */
  async deleteSession(sid: string): Promise<void> {
    assertSessionId(sid);
    this.#assertOpen();
    const rec = this.#sessions.record(sid);
    const actor = this.#actor(rec);
    // A streaming answer ends first: its terminal event (stream_interrupted) before the delete.
    actor.abortStreams('the session was deleted');
    await actor.streamsSettled();
    await actor.run(
      'delete',
      async (state) => {
        if (state.seq === 0) throw new ArborError(ErrorCodes.SESSION_NOT_FOUND, `session ${sid} not found`, { sessionId: sid });
        // Out of the hot tier first, so no snapshot or checkpoint picks it up again; then wait for those running.
        this.#hot.delete(sid);
        try {
          await rec.snapshotting?.catch(() => undefined);
          await this.#checkpointing?.catch(() => undefined);
          await this.#backend.deleteSession(sid);
        } catch (err) {
          this.#hot.store(sid, state);
          throw err;
        }
        // Its listing summary goes too: an id created again must never be listed with the deleted one's.
        this.#lister.forget(sid);
        rec.lastEvent = undefined;
        rec.eventsSinceSnapshot = 0;
        rec.loadFailure = undefined;
        rec.seen = false;
        if (rec.phase !== 'stopped') rec.phase = 'pending';
        rec.handle?.[REMEMBER](initialSessionState(sid));
      },
      true,
    );
  }

  /** Resolves once the deleted session's bytes are erased from the backend's storage (at once where deleting erases them: PostgreSQL). */
  whenErased(sid?: string): Promise<void> {
    return this.#backend.erasure?.whenErased(sid) ?? Promise.resolve();
  }

  /** Snapshots an idle session and drops it from memory; the next command loads it back. */
  passivate(sid: string): Promise<boolean> {
    return this.#passivate(sid, true);
  }

  async #passivate(sid: string, snapshot: boolean): Promise<boolean> {
    const rec = this.#sessions.get(sid);
    if (rec === undefined) {
      // Never used here: nothing to drop, but a multi-node backend may hold its lease (exists() took it).
      await this.#backend.release(sid);
      return true;
    }
    const busy = (): boolean => rec.actor !== undefined && (rec.actor.mailboxDepth > 0 || this.#hot.peek(sid)?.stream.status === 'streaming');
    if (busy()) return false;
    const before = rec.phase;
    if (rec.phase === 'hot') rec.phase = 'passivating';
    try {
      if (snapshot && (rec.eventsSinceSnapshot > 0 || (await this.#backend.snapshotSeq(sid)) !== this.#hot.peek(sid)?.seq)) await this.#snapshot(sid);
    } catch (err) {
      if (rec.phase === 'passivating') rec.phase = before;
      throw err;
    }
    if (busy()) {
      if (rec.phase === 'passivating') rec.phase = before;
      return false;
    }
    const state = this.#hot.peek(sid);
    if (state !== undefined) rec.handle?.[REMEMBER](state);
    this.#hot.delete(sid);
    this.#sessions.passivated(rec, snapshot);
    // A multi-node backend hands the session back: any node may take it next.
    await this.#backend.release(sid).catch((err: unknown) => publishError('release', ErrorCodes.IO_ERROR, err, sid));
    return true;
  }

  /**
   * Another process took the session over (its lease moved, or an append was
   * fenced): drop everything this process holds of it. Its next command loads
   * it again, from the backend, as a fresh recovery.
   */
  #lost(sid: string, reason: string): void {
    const rec = this.#sessions.record(sid);
    rec.actor?.abortStreams(`this server lost the session to another: ${reason}`);
    const state = this.#hot.peek(sid);
    if (state !== undefined) rec.handle?.[REMEMBER](state);
    this.#hot.delete(sid);
    this.#sessions.lost(rec);
    this.#sessionsLost += 1;
  }

  /**
   * After the backend refused writes for good (a failed journal on a full or
   * failing disk: a retried fsync cannot be trusted), reopens it in this
   * process, as a restart would: running answers end as interrupted, every
   * session is recovered again from what is durable (on access and in the
   * background), and writes resume. Records of the failed batch that did
   * reach the disk come back like the one unacknowledged event a crash may
   * leave (a retried clientMessageId finds its original). Rejects, leaving
   * the backend failed, when the disk still fails; rejects with
   * ARBOR_INVALID_INPUT on a backend that cannot reopen (PostgreSQL).
   */
  reopen(): Promise<void> {
    const backend = this.#backend;
    if (backend.reopen === undefined) return Promise.reject(new ArborError(ErrorCodes.INVALID_INPUT, `reopen() is for the file store; this arbor runs on ${backend.kind}`, { field: 'backend' }));
    this.#assertOpen();
    this.#reopening ??= (async () => {
      this.#state = 'reopening';
      try {
        for (const actor of this.#sessions.actors()) actor.abortStreams('the journal failed while this answer was streaming');
        await Promise.all([...this.#sessions.actors()].map((a) => a.settled()));
        backend.recovery?.stop();
        await this.#recoveryPassSettled;
        await this.#snapshots.idle();
        await this.#settleBackgroundWrites();
        const reopened = await backend.reopen!();
        // Everything in memory may be behind what the backend now holds: start over from it.
        for (const sid of [...this.#hot.keys()]) {
          const state = this.#hot.peek(sid);
          if (state !== undefined) this.#sessions.get(sid)?.handle?.[REMEMBER](state);
          this.#hot.delete(sid);
        }
        this.#sessions.reopened();
        this.#snapshots.clear();
        this.#backend = reopened;
        this.#reopens += 1;
        // close() may have begun while this ran (it waits for the reopen): closing stays closing.
        if (this.#state === 'reopening') this.#state = 'open';
        this.#startRecovery();
      } catch (err) {
        // The old backend still refuses writes (or is closed): reads go on, another reopen() may succeed.
        if (this.#state === 'reopening') this.#state = 'degraded';
        throw err;
      }
    })().finally(() => {
      this.#reopening = undefined;
    });
    return this.#reopening;
  }

  /** Waits for running snapshots and the checkpoint; their failures were reported where they happened. */
  async #settleBackgroundWrites(): Promise<void> {
    const running: Promise<unknown>[] = [];
    for (const rec of this.#sessions.values()) if (rec.snapshotting !== undefined) running.push(rec.snapshotting);
    if (this.#checkpointing !== undefined) running.push(this.#checkpointing);
    await Promise.allSettled(running);
  }

  /**
   * The runtime's lifecycle (see ArborState). `degraded` also shows while the
   * backend refuses writes (a failed journal) before anyone reopened it.
   */
  get state(): ArborState {
    if (this.#state === 'open' && this.#backend.stats().state === 'failed') return 'degraded';
    return this.#state;
  }

  /** Ids (storage ids) of the sessions whose committed state is in memory now. */
  sessionsInMemory(): string[] {
    const out: string[] = [];
    for (const sid of this.#hot.keys()) if ((this.#hot.peek(sid)?.seq ?? 0) > 0) out.push(sid);
    return out;
  }

  /** Health figures: hot tier, journal writer, sessions, recovery. */
  health(): ArborHealth {
    const memory = this.#hot.memory();
    const stats = this.#backend.stats();
    const j = this.#backend.journalFigures?.();
    return {
      ok: stats.state === 'open',
      state: this.state,
      backend: this.#backend.kind,
      hot: { sessions: this.#hot.size, approxBytes: memory.approxBytes, estimated: memory.estimated },
      journal: {
        state: stats.state,
        queueDepth: stats.queueDepth,
        lastFlushAgeMs: Date.now() - stats.lastFlushAt,
        segments: j?.segments ?? 0,
        bytes: stats.journalBytes,
        syncedLsn: j?.syncedLsn ?? 0,
        ...(j?.failure === undefined ? {} : { failure: j.failure }),
        reopens: this.#reopens,
      },
      sessions: { active: this.#sessions.activeActors, stopped: this.#sessions.stopped(), crashes: this.#crashCount, lost: this.#sessionsLost, failedToLoad: this.#sessions.failedToLoad() },
      mailbox: (({ total, max }) => ({ queued: total, max }))(this.#sessions.mailboxDepth()),
      recovery: { ...this.#recoveryCounts(), pending: this.#backend.recovery?.pendingCount() ?? 0 },
      checkpoint: this.#lastCheckpoint,
      tools: { registered: this.#tools.size, mcpServers: this.#mcp.status() },
    };
  }

  /**
   * What recovery found, per session, so far (`pending` counts those the
   * background pass has not reached). On a backend without lazy recovery
   * (PostgreSQL): the sessions this process loaded (each on first access).
   */
  recoveryReport(): RecoveryReport {
    const recovery = this.#backend.recovery;
    if (recovery !== undefined) return recovery.report();
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

  /** Sessions recovered so far per status; without lazy recovery, those this process loaded. */
  #recoveryCounts(): RecoveryReport['counts'] {
    const recovery = this.#backend.recovery;
    if (recovery !== undefined) return recovery.counts();
    const counts: RecoveryReport['counts'] = { recovered: 0, 'tail-truncated': 0, damaged: 0, salvaged: 0, failed: 0 };
    for (const r of this.#loads) counts[r.status] += 1;
    return counts;
  }

  /** Resolves once every session is recovered (the background pass is done), with the report; rejects when the pass failed. */
  async whenRecovered(): Promise<RecoveryReport> {
    await this.#recoveryPass;
    return this.recoveryReport();
  }

  /** True once close() has begun. */
  get closing(): boolean {
    return this.#shuttingDown;
  }

  /** close() has begun: read from the one lifecycle field (`#closing` only memoises close()'s promise). */
  get #shuttingDown(): boolean {
    return this.#state === 'closing' || this.#state === 'closed';
  }

  /** The storage backend underneath (the file store, or PostgreSQL); what it can do beyond the interface shows in its optional capabilities. */
  get backend(): Backend {
    return this.#backend;
  }

  /**
   * Stops intake, interrupts running streams (each ends with
   * stream_interrupted), drains every mailbox, snapshots sessions with new
   * events, flushes and closes the backend. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#state = 'closing';
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.#reopening?.catch(() => undefined); // its caller has the failure
    // Sessions not recovered yet stay as they are on disk; the next start recovers them.
    this.#backend.recovery?.stop();
    await this.#recoveryPassSettled;
    const actors = [...this.#sessions.actors()];
    for (const actor of actors) actor.drain('the server shut down while this answer was streaming');
    await Promise.all(actors.map((a) => a.settled()));
    // Requests accepted while shutting down, or queued behind an aborted answer, end with a notice too.
    await Promise.all(actors.map((a) => a.interruptUnanswered('the server shut down before this answer started').catch((err: unknown) => publishError('close', ErrorCodes.IO_ERROR, err, a.id))));
    await this.#snapshots.idle();
    await this.#settleBackgroundWrites();
    for (const rec of this.#sessions.values()) {
      if (rec.eventsSinceSnapshot > 0) await this.#snapshot(rec.id).catch((err: unknown) => publishError('snapshot', ErrorCodes.IO_ERROR, err, rec.id));
    }
    await this.#mcp.close();
    // No checkpoint at close: the final snapshots cover every session, so it would add nothing.
    try {
      await this.#backend.close();
    } finally {
      this.#state = 'closed';
    }
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
   * with its code). On a backend several processes share
   * (`backend.ownership`) the rebuild is read-only (`peekSession`: no lease
   * taken) and only a session this process holds in memory is probed; it
   * rejects with ARBOR_INVALID_INPUT (`field: 'backend'`) for any other, and
   * with ARBOR_CLOSED once close() began.
   */
  async probeRecovery(sid: string): Promise<RecoveryProbe> {
    const backend = this.backend;
    // Shared with other nodes: the rebuild is read-only (no lease), and only of a session this node holds in memory.
    const shared = backend.ownership !== undefined;
    if (shared && (this.#hot.peek(sid)?.seq ?? 0) === 0) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid} is not probed: on the ${backend.kind} backend only sessions this node holds are (loading it would take its lease from its owner)`, { field: 'backend', sessionId: sid });
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
        const rebuilt = shared ? await backend.peekSession(sid) : await backend.loadSession(sid);
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

/** Tells telemetry about an error the runtime handled (only when someone listens). */
function publishError(source: string, fallbackCode: string, err: unknown, sessionId?: string): void {
  if (!errorChannel.hasSubscribers) return;
  const code = isArborError(err) ? err.code : fallbackCode;
  errorChannel.publish({ source, code, message: (err as Error)?.message ?? String(err), ...(sessionId === undefined ? {} : { sessionId }) } satisfies ErrorMessage);
}

/** Every option createArbor takes: the runtime's and the storage engine's. */
export const ARBOR_OPTION_NAMES: readonly string[] = Object.freeze([...Object.keys(DEFAULT_RUNTIME_OPTIONS), ...STORE_OPTION_NAMES]);

/**
 * Refuses, before anything is opened, an option createArbor does not know
 * (naming the closest known one and listing them all) and an `llm` that is
 * not a provider (without `stream()` every turn would end interrupted).
 * ARBOR_INVALID_OPTION with `details.option`.
 */
function checkOptionShapes(options: ArborOptions): void {
  if (typeof options !== 'object' || options === null) {
    throw new ArborError(ErrorCodes.INVALID_OPTION, `createArbor takes an object of options, got ${options === null ? 'null' : typeof options}`, { option: 'options' });
  }
  const known = new Set(ARBOR_OPTION_NAMES);
  for (const key of Object.keys(options)) {
    if (known.has(key)) continue;
    const near = closestName(key, ARBOR_OPTION_NAMES);
    throw new ArborError(
      ErrorCodes.INVALID_OPTION,
      `unknown option ${JSON.stringify(key)} of createArbor${near === undefined ? '' : `; did you mean ${JSON.stringify(near)}?`} Known options: ${ARBOR_OPTION_NAMES.join(', ')}`,
      { option: key, ...(near === undefined ? {} : { suggestion: near }), known: ARBOR_OPTION_NAMES },
    );
  }
  const llm = options.llm as unknown;
  if (llm !== undefined) {
    const stream = typeof llm === 'object' && llm !== null ? (llm as { stream?: unknown }).stream : undefined;
    if (typeof stream !== 'function') {
      const shape = llm === null ? 'null' : typeof llm !== 'object' ? typeof llm : `an object with ${Object.keys(llm).length === 0 ? 'no keys' : `keys ${Object.keys(llm).slice(0, 8).join(', ')}`}`;
      throw new ArborError(
        ErrorCodes.INVALID_OPTION,
        `option llm must be an LLM provider: an object with a stream(request) method returning an async iterable of text (and name, model), e.g. new AiSdkProvider({...}) or new MockProvider(); got ${shape}`,
        { option: 'llm' },
      );
    }
  }
  const commands = options.commands as unknown;
  if (commands !== undefined) {
    if (typeof commands !== 'object' || commands === null) throw new ArborError(ErrorCodes.INVALID_OPTION, `option commands must be an object of command handlers by name, got ${commands === null ? 'null' : typeof commands}`, { option: 'commands' });
    for (const [name, handler] of Object.entries(commands)) {
      if (typeof handler !== 'function') throw new ArborError(ErrorCodes.INVALID_OPTION, `option commands.${name} must be a function (the handler of executeCommand(${JSON.stringify(name)}, args)), got ${typeof handler}`, { option: `commands.${name}` });
    }
  }
}

/** Opens Arbor: the backend (files in `dataDir`, default ./data, or PostgreSQL), recovery, background snapshots. */
export function createArbor(options: ArborOptions = {}): Promise<Arbor> {
  return Arbor.create(options);
}
