import type { JournalRecord } from '../core/record.ts';

/** A snapshot file that failed its checks and was skipped. */
export interface DamagedSnapshot {
  file: string;
  reason: string;
}

/** The caller's pure reducer: the next state from a state and one journaled event. */
export type Reducer<S> = (state: S, event: JournalRecord) => S;

/** Rewrites an event of an older schema version into the current one (called before the reducer). */
export type EventUpcaster = (event: JournalRecord) => JournalRecord;

/** Rewrites a snapshot state written under an older state schema version. */
export type StateUpcaster<S> = (state: unknown, fromVersion: number) => S;

/** A state being built in place by one replay (see {@link DraftReducer}). */
export interface ReplayDraft<S> {
  /** Applies one event as the reducer would; throws what it would, and then the draft is as it was before the call. */
  apply(event: JournalRecord): void;
  /** The state so far, as folding the reducer gives it (frozen as the reducer's); the draft may go on applying. */
  seal(): S;
}

/**
 * The reducer in a form a replay can run in place, when no one sees the states
 * in between: linear in the number of events where folding a reducer that
 * copies its history at every event is quadratic.
 */
export interface DraftReducer<S> {
  /** The reducer this draft is equivalent to: it is used only while it is the hooks' own `reducer`. */
  reducer: Reducer<S>;
  /** A draft starting from `state`, which it never changes. */
  begin: (state: S) => ReplayDraft<S>;
}

export interface RecoveryHooks<S> {
  reducer: Reducer<S>;
  /**
   * Optional: the same reducer as a draft, which replay uses instead of
   * folding `reducer` (Arbor's own hooks have one). Ignored unless
   * `draft.reducer` is `reducer`, so hooks copied with another reducer fold that one.
   */
  draft?: DraftReducer<S>;
  /** The state of a session before its first event. */
  initialState: (sid: string) => S;
  upcastEvent?: EventUpcaster;
  upcastState?: StateUpcaster<S>;
  /**
   * The state schema version the reducer produces: snapshots are written with
   * it, and older ones go through `upcastState`. A backend's own
   * `stateSchemaVersion` option, when given, wins; without either it is 1.
   */
  stateSchemaVersion?: number;
}

/**
 * How one session came back:
 * - `recovered`: snapshot + every record after it, no gap;
 * - `tail-truncated`: as recovered, and the torn record at the end of the log was this session's
 *   (it was never acknowledged);
 * - `damaged`: a gap in its seqs (a corrupt region of the log) — state is everything before the
 *   gap; the session is quarantined (readable, refuses writes) until salvaged;
 * - `salvaged`: was damaged, recovered past its gap by the operator's `salvage` option, snapshot taken;
 * - `failed`: the reducer or an upcaster threw; state is the last good one; quarantined.
 */
export type RecoveryStatus = 'recovered' | 'tail-truncated' | 'damaged' | 'salvaged' | 'failed';

export interface SessionRecovery {
  sid: string;
  status: RecoveryStatus;
  /** seq of the last event applied */
  seq: number;
  /** seq of the snapshot it started from, 0 when none */
  snapshotSeq: number;
  /** seq of the whole-table checkpoint entry it started from instead, when it did */
  checkpointSeq?: number;
  /** LSN of the last event applied, when recovery saw it */
  lastLsn?: number;
  /** journal records applied on top of the snapshot */
  replayed: number;
  damagedSnapshots: DamagedSnapshot[];
  /** first and last missing seq of the first gap, for `damaged` and `salvaged` */
  missing?: [number, number];
  /** records after a gap that were not applied */
  skipped?: number;
  error?: string;
}

/**
 * The state of a snapshot written under state schema version `from`, as
 * version `to`: as is when they match, through `hooks.upcastState` when older.
 * Throws when it is newer than `to` (a downgrade) or older with no upcaster:
 * recovery reports that session as `failed` and the others are untouched.
 */
export function upcastSnapshotState<S>(state: unknown, from: number, to: number, hooks: RecoveryHooks<S>, sid: string): S {
  if (from === to) return state as S;
  if (from > to) throw new Error(`snapshot of session ${sid} has state schema version ${from}, newer than this build's ${to}`);
  if (hooks.upcastState === undefined) throw new Error(`snapshot of session ${sid} has state schema version ${from} and no upcastState hook is configured (current ${to})`);
  return hooks.upcastState(state, from);
}

/** Where a session's replay starts: its newest valid snapshot (state as stored, not yet upcast), or nothing. */
export interface ReplayStart {
  snapshot?: { state: unknown; seq: number; stateSchemaVersion: number } | undefined;
  /** the state schema version of this build (what the snapshot's state is upcast to) */
  stateSchemaVersion: number;
  damagedSnapshots?: DamagedSnapshot[];
  /** the operator's salvage option: apply the records after a gap instead of stopping there */
  salvage?: boolean;
}

/**
 * The one replay of one session, shared by every backend and every way of
 * recovering (lazy, the background pass, a rebuild, PostgreSQL): feed it the
 * session's records in seq order (`apply`); it checks for gaps, upcasts and
 * reduces, and never throws — the outcome is its `report`'s status:
 * a gap makes it `damaged` (or `salvaged`, applying on past the gap), a
 * throwing upcaster or reducer makes it `failed` at that seq, with the last
 * good state kept.
 */
export class SessionReplay<S> {
  readonly report: SessionRecovery;
  /** what the reducer, an upcaster or the snapshot's upcast threw, when `failed` */
  cause: unknown;
  readonly #hooks: RecoveryHooks<S>;
  readonly #salvage: boolean;
  /** the state as last handed out (or started from) */
  #state: S;
  /** the hooks' draft form of their reducer, when they have one for it */
  readonly #drafts: DraftReducer<S> | undefined;
  /** the draft records are applied to, once the first one comes (drafts only) */
  #draft: ReplayDraft<S> | undefined;
  /** whether the draft holds records `#state` does not */
  #unsealed = false;

  constructor(hooks: RecoveryHooks<S>, sid: string, start: ReplayStart) {
    this.#hooks = hooks;
    this.#salvage = start.salvage === true;
    const seq = start.snapshot?.seq ?? 0;
    this.report = { sid, status: 'recovered', seq, snapshotSeq: seq, replayed: 0, damagedSnapshots: start.damagedSnapshots ?? [] };
    this.#drafts = hooks.draft !== undefined && hooks.draft.reducer === hooks.reducer ? hooks.draft : undefined;
    this.#state = hooks.initialState(sid);
    if (start.snapshot !== undefined) {
      try {
        this.#state = upcastSnapshotState(start.snapshot.state, start.snapshot.stateSchemaVersion, start.stateSchemaVersion, hooks, sid);
      } catch (err) {
        // Nothing after the snapshot can be applied to a state that could not be read.
        this.fail(err, (err as Error)?.message ?? String(err));
      }
    }
  }

  /**
   * The session's state after the records applied so far (the last good one
   * after a failure), as folding the reducer over them gives it.
   */
  get state(): S {
    if (this.#unsealed) {
      this.#state = this.#draft!.seal();
      this.#unsealed = false;
    }
    return this.#state;
  }

  /** Whether the replay stopped for good (a throw); further records are ignored. */
  get failed(): boolean {
    return this.report.status === 'failed';
  }

  /** Marks the session `failed`: recovery of it could not go on. */
  fail(cause: unknown, error: string): void {
    this.report.status = 'failed';
    this.report.error = error;
    this.cause = cause;
  }

  /** The session's next record in seq order (records at or below the current seq are ignored: covered by the snapshot, or duplicates). */
  apply(record: JournalRecord): void {
    const r = this.report;
    if (record.seq <= r.seq) return;
    if (r.status === 'failed') return;
    if (record.seq !== r.seq + 1) {
      if (r.status !== 'damaged' && r.status !== 'salvaged') {
        r.missing = [r.seq + 1, record.seq - 1];
        r.status = this.#salvage ? 'salvaged' : 'damaged';
      }
      if (!this.#salvage) {
        r.skipped = (r.skipped ?? 0) + 1;
        return;
      }
    } else if (r.status === 'damaged') {
      r.skipped = (r.skipped ?? 0) + 1;
      return;
    }
    try {
      const event = this.#hooks.upcastEvent === undefined ? record : this.#hooks.upcastEvent(record);
      if (this.#drafts === undefined) this.#state = this.#hooks.reducer(this.#state, event);
      else {
        // In place: a throw leaves the draft at the last good state.
        this.#draft ??= this.#drafts.begin(this.#state);
        this.#draft.apply(event);
        this.#unsealed = true;
      }
      r.seq = record.seq;
      r.lastLsn = record.lsn;
      r.replayed += 1;
    } catch (err) {
      this.fail(err, `reducer threw at seq ${record.seq} (${record.type}): ${(err as Error)?.message ?? String(err)}`);
    }
  }

  /** Marks the session when a damaged region of the log holds one of its records (one its snapshot covers costs nothing). */
  noteDamage(seq: number | undefined, where: string): void {
    if (seq !== undefined && seq <= this.report.snapshotSeq) return;
    if (this.report.status === 'recovered' || this.report.status === 'tail-truncated') {
      this.report.status = this.#salvage ? 'salvaged' : 'damaged';
      this.report.error = `the journal is damaged at ${where}, in a record of this session`;
    }
  }

  /** Marks the session whose record was the torn tail, if it recovered otherwise cleanly. */
  noteTornTail(): void {
    if (this.report.status === 'recovered') this.report.status = 'tail-truncated';
  }
}

/**
 * Rebuilds sessions from snapshots and a single pass over the journal, one
 * {@link SessionReplay} per session. Feed it snapshots first (`startFrom`),
 * then every journal record in log order (`apply`); it never throws for one
 * bad session — each gets a status.
 */
export class RecoveryBuilder<S> {
  readonly #hooks: RecoveryHooks<S>;
  readonly #salvage: boolean;
  readonly #entries = new Map<string, SessionReplay<S>>();

  constructor(hooks: RecoveryHooks<S>, salvage: boolean) {
    this.#hooks = hooks;
    this.#salvage = salvage;
  }

  /** Starts `sid` from a snapshot state taken at `seq` (already upcast). */
  startFrom(sid: string, state: S, seq: number, damagedSnapshots: DamagedSnapshot[]): void {
    // Already upcast: the same version on both sides leaves the state as it is.
    this.#entries.set(sid, new SessionReplay(this.#hooks, sid, { stateSchemaVersion: 0, salvage: this.#salvage, damagedSnapshots, snapshot: { state, seq, stateSchemaVersion: 0 } }));
  }

  /** Starts `sid` from its newest valid snapshot as stored: its state is upcast here (a failure marks the session `failed`). */
  startFromSnapshot(sid: string, start: Omit<ReplayStart, 'salvage'>): void {
    this.#entries.set(sid, new SessionReplay(this.#hooks, sid, { ...start, salvage: this.#salvage }));
  }

  /** Records that every snapshot of `sid` was damaged: it starts from the initial state. */
  noteDamagedSnapshots(sid: string, damaged: DamagedSnapshot[]): void {
    this.#entry(sid).report.damagedSnapshots.push(...damaged);
  }

  /** Marks a session whose recovery could not start at all. */
  fail(sid: string, error: string): void {
    this.#entry(sid).fail(undefined, error);
  }

  #entry(sid: string): SessionReplay<S> {
    let e = this.#entries.get(sid);
    if (e === undefined) {
      e = new SessionReplay(this.#hooks, sid, { stateSchemaVersion: 0, salvage: this.#salvage });
      this.#entries.set(sid, e);
    }
    return e;
  }

  /** One journal record, in log order. */
  apply(record: JournalRecord): void {
    this.#entry(record.sid).apply(record);
  }

  /** Records that `sid` started from a whole-table checkpoint entry (proven by the journal) instead of a snapshot. */
  noteCheckpoint(sid: string, seq: number, lsn: number): void {
    const r = this.#entries.get(sid)?.report;
    if (r === undefined) return;
    r.checkpointSeq = seq;
    if (r.seq === seq) r.lastLsn = lsn;
  }

  /** Marks a session named in a damaged region of the log: it may have lost an event there. */
  noteDamage(sid: string, seq: number | undefined, where: string): void {
    // Only sessions known from elsewhere: a legible id may itself be damaged bytes (the region's report keeps it).
    this.#entries.get(sid)?.noteDamage(seq, where);
  }

  /** Marks the session whose record was the torn tail, if it recovered otherwise cleanly. */
  noteTornTail(sid: string): void {
    this.#entries.get(sid)?.noteTornTail();
  }

  sessions(): Map<string, { state: S; report: SessionRecovery }> {
    return this.#entries as Map<string, { state: S; report: SessionRecovery }>;
  }
}
