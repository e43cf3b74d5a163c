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

export interface RecoveryHooks<S> {
  reducer: Reducer<S>;
  /** The state of a session before its first event. */
  initialState: (sid: string) => S;
  upcastEvent?: EventUpcaster;
  upcastState?: StateUpcaster<S>;
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

interface Entry<S> {
  state: S;
  report: SessionRecovery;
}

/**
 * Rebuilds sessions from snapshots and a single pass over the journal. Feed it
 * snapshots first (`startFrom`), then every journal record in log order
 * (`apply`); it never throws for one bad session — each gets a status.
 */
export class RecoveryBuilder<S> {
  readonly #hooks: RecoveryHooks<S>;
  readonly #salvage: boolean;
  readonly #entries = new Map<string, Entry<S>>();

  constructor(hooks: RecoveryHooks<S>, salvage: boolean) {
    this.#hooks = hooks;
    this.#salvage = salvage;
  }

  /** Starts `sid` from a snapshot state taken at `seq` (already upcast). */
  startFrom(sid: string, state: S, seq: number, damagedSnapshots: DamagedSnapshot[]): void {
    this.#entries.set(sid, { state, report: { sid, status: 'recovered', seq, snapshotSeq: seq, replayed: 0, damagedSnapshots } });
  }

  /** Records that every snapshot of `sid` was damaged: it starts from the initial state. */
  noteDamagedSnapshots(sid: string, damaged: DamagedSnapshot[]): void {
    this.#entry(sid).report.damagedSnapshots.push(...damaged);
  }

  /** Marks a session whose recovery could not start at all (e.g. its snapshot's state failed to upcast). */
  fail(sid: string, error: string): void {
    const e = this.#entry(sid);
    e.report.status = 'failed';
    e.report.error = error;
  }

  #entry(sid: string): Entry<S> {
    let e = this.#entries.get(sid);
    if (e === undefined) {
      e = { state: this.#hooks.initialState(sid), report: { sid, status: 'recovered', seq: 0, snapshotSeq: 0, replayed: 0, damagedSnapshots: [] } };
      this.#entries.set(sid, e);
    }
    return e;
  }

  /** One journal record, in log order. */
  apply(record: JournalRecord): void {
    const e = this.#entry(record.sid);
    const r = e.report;
    if (record.seq <= r.seq) return; // covered by the snapshot (or a duplicate): nothing to do
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
      e.state = this.#hooks.reducer(e.state, event);
      r.seq = record.seq;
      r.lastLsn = record.lsn;
      r.replayed += 1;
    } catch (err) {
      r.status = 'failed';
      r.error = `reducer threw at seq ${record.seq} (${record.type}): ${(err as Error)?.message ?? String(err)}`;
    }
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
    const e = this.#entries.get(sid);
    if (e === undefined) return;
    // A damaged record that a snapshot already covers costs nothing.
    if (seq !== undefined && seq <= e.report.snapshotSeq) return;
    if (e.report.status === 'recovered' || e.report.status === 'tail-truncated') {
      e.report.status = this.#salvage ? 'salvaged' : 'damaged';
      e.report.error = `the journal is damaged at ${where}, in a record of this session`;
    }
  }

  /** Marks the session whose record was the torn tail, if it recovered otherwise cleanly. */
  noteTornTail(sid: string): void {
    const e = this.#entries.get(sid);
    if (e !== undefined && e.report.status === 'recovered') e.report.status = 'tail-truncated';
  }

  sessions(): Map<string, { state: S; report: SessionRecovery }> {
    return this.#entries;
  }
}
