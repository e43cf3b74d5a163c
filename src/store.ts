import { ArborError, ErrorCodes } from './errors.ts';
import { assertSessionId } from './ids.ts';
import type { JournalRecord } from './journal/format.ts';
import { Journal, type AppendInput, type AppendResult, type DedupeEntry, type JournalOpenReport } from './journal/journal.ts';
import { resolveStoreOptions, type ResolvedStoreOptions, type StoreOptions } from './options.ts';
import { RecoveryBuilder, type RecoveryHooks, type RecoveryStatus, type SessionRecovery } from './recovery/recovery.ts';
import { SnapshotStore } from './snapshot/snapshot-store.ts';
import type { FileSystem } from './storage/fs-port.ts';
import { DirectoryLock, type LockOwner } from './storage/lock.ts';
import { NodeFileSystem } from './storage/node-fs.ts';

/** A session as recovery rebuilt it. */
export interface RecoveredSession<S> {
  state: S;
  seq: number;
  status: RecoveryStatus;
}

export interface RecoveryReport {
  durationMs: number;
  /** sessions per status */
  counts: Record<RecoveryStatus, number>;
  sessions: SessionRecovery[];
  journal: JournalOpenReport;
  snapshotTempFilesRemoved: string[];
  /** the previous owner of the data directory's lock, when it was stale */
  staleLock?: LockOwner | 'unreadable';
}

type StoreState = 'open' | 'closing' | 'closed';

/** Knobs for tests that simulate other processes; not part of the documented surface. */
export interface StoreInternals {
  /** The pid written into the lock file (crash tests pose as a process that then dies). */
  lockPid?: number;
}

/**
 * The storage engine: lock, journal (warm tier), snapshots (cold tier) and
 * recovery, composed. `openStore` locks the data directory, loads each
 * session's newest valid snapshot, replays the journal over them in one
 * sequential pass, and returns a store that accepts appends.
 *
 * Durability is the journal's (see `Journal.append`); snapshots only ever
 * release journal records after they are durable themselves.
 */
export class Store<S> {
  readonly options: ResolvedStoreOptions;
  readonly journal: Journal;
  readonly snapshots: SnapshotStore;
  readonly #lock: DirectoryLock;
  readonly #hooks: RecoveryHooks<S>;
  #recovered: Map<string, RecoveredSession<S>>;
  readonly #report: RecoveryReport;
  #state: StoreState = 'open';
  #closing: Promise<void> | undefined;

  private constructor(
    options: ResolvedStoreOptions,
    lock: DirectoryLock,
    journal: Journal,
    snapshots: SnapshotStore,
    recovered: Map<string, RecoveredSession<S>>,
    report: RecoveryReport,
    hooks: RecoveryHooks<S>,
  ) {
    this.options = options;
    this.#hooks = hooks;
    this.#lock = lock;
    this.journal = journal;
    this.snapshots = snapshots;
    this.#recovered = recovered;
    this.#report = report;
  }

  /** Opens (creating when missing) the store in `options.dataDir` and recovers every session. */
  static async open<S>(options: Partial<StoreOptions>, hooks: RecoveryHooks<S>, internals: StoreInternals = {}): Promise<Store<S>> {
    const started = performance.now();
    const o = resolveStoreOptions(options);
    const fs: FileSystem = o.fs ?? new NodeFileSystem();
    const lock = await DirectoryLock.acquire({ fs, dir: o.dataDir, ...(internals.lockPid === undefined ? {} : { pid: internals.lockPid }) });
    let journal: Journal | undefined;
    try {
      const snapshots = await SnapshotStore.open({ fs, dir: o.snapshotDir, maxSnapshotsPerSession: o.maxSnapshotsPerSession });
      const builder = new RecoveryBuilder(hooks, o.salvage);
      const fromSnapshot = new Map<string, { seq: number; dedupe: DedupeEntry[] }>();
      for (const sid of snapshots.sessions()) {
        const { snapshot, damaged } = await snapshots.loadNewest(sid);
        if (snapshot === undefined) {
          builder.noteDamagedSnapshots(sid, damaged);
          continue;
        }
        fromSnapshot.set(sid, { seq: snapshot.seq, dedupe: snapshot.dedupe });
        let state: S;
        try {
          state = upcastSnapshotState(snapshot.state, snapshot.stateSchemaVersion, o.stateSchemaVersion, hooks, sid);
        } catch (err) {
          builder.startFrom(sid, hooks.initialState(sid), snapshot.seq, damaged);
          builder.fail(sid, (err as Error).message);
          continue;
        }
        builder.startFrom(sid, state, snapshot.seq, damaged);
      }
      journal = await Journal.open({
        fs,
        dir: o.journalDir,
        durability: o.durability,
        batchSize: o.journalBatchSize,
        flushIntervalMs: o.journalFlushIntervalMs,
        maxSegmentBytes: Math.max(4096, Math.floor(o.journalMaxSizeMb * 1024 * 1024)),
        maxBatchRecords: o.journalMaxBatchRecords,
        maxBatchBytes: o.journalMaxBatchBytes,
        maxQueueRecords: o.journalMaxQueueRecords,
        maxQueueBytes: o.journalMaxQueueBytes,
        maxRecordBytes: o.maxEventBytes,
        dedupeWindow: o.dedupeWindow,
        onRecord: (record) => builder.apply(record),
      });
      for (const torn of journal.report.tornTails) if (torn.sessionId !== undefined) builder.noteTornTail(torn.sessionId);
      for (const d of journal.report.damage) for (const { sid, seq } of d.sessions ?? []) builder.noteDamage(sid, seq, `${d.segment} offset ${d.offset}`);
      for (const sid of snapshots.sessions()) {
        const snap = fromSnapshot.get(sid);
        const newestOnDisk = snapshots.seqs(sid).at(-1) ?? 0;
        journal.noteSnapshot(sid, snap?.seq ?? 0, snap?.dedupe ?? [], newestOnDisk);
      }
      const recovered = new Map<string, RecoveredSession<S>>();
      const toSalvage: string[] = [];
      for (const [sid, { state, report }] of builder.sessions()) {
        // Events the log or a snapshot file says existed but recovery could not apply (e.g. released
        // records behind a damaged newest snapshot) are a gap too.
        const expectedSeq = journal.lastSeq(sid);
        if (report.seq < expectedSeq && (report.status === 'recovered' || report.status === 'tail-truncated')) {
          report.missing = [report.seq + 1, expectedSeq];
          report.status = o.salvage ? 'salvaged' : 'damaged';
        }
        if (report.status === 'damaged') {
          const what = report.missing === undefined ? (report.error ?? 'its history is damaged') : `events ${report.missing[0]}..${report.missing[1]} are missing or damaged`;
          journal.quarantine(sid, `${what}; reopen with salvage to accept the loss`);
        }
        if (report.status === 'failed') journal.quarantine(sid, report.error ?? 'recovery failed');
        if (report.status === 'salvaged') toSalvage.push(sid);
        recovered.set(sid, { state, seq: report.seq, status: report.status });
      }
      const sessions = [...builder.sessions().values()].map((e) => e.report);
      const counts: Record<RecoveryStatus, number> = { recovered: 0, 'tail-truncated': 0, damaged: 0, salvaged: 0, failed: 0 };
      for (const r of sessions) counts[r.status] += 1;
      const report: RecoveryReport = {
        durationMs: 0,
        counts,
        sessions,
        journal: journal.report,
        snapshotTempFilesRemoved: snapshots.removedTempFiles,
        ...(lock.staleOwner === undefined ? {} : { staleLock: lock.staleOwner }),
      };
      const store = new Store<S>(o, lock, journal, snapshots, recovered, report, hooks);
      // Salvage: a snapshot at the session's last seq seals the gap, so later opens no longer see it.
      for (const sid of toSalvage) {
        const r = recovered.get(sid)!;
        await store.snapshot(sid, r.state, journal.lastSeq(sid));
      }
      report.durationMs = performance.now() - started;
      return store;
    } catch (err) {
      await journal?.close().catch(() => undefined);
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  /** Appends one event to the journal; see `Journal.append` for when it resolves and what it rejects with. */
  append(input: AppendInput): Promise<AppendResult> {
    if (this.#state !== 'open') return Promise.reject(new ArborError(ErrorCodes.CLOSED, 'store is closed'));
    return this.journal.append(input);
  }

  /** The session's journal records with seq ≥ `fromSeq` that no snapshot has released yet. */
  read(sid: string, fromSeq = 1): Promise<JournalRecord[]> {
    assertSessionId(sid);
    return this.journal.readSession(sid, fromSeq);
  }

  /**
   * Rebuilds one session now, from its newest valid snapshot and the journal
   * records after it: for a session that was dropped from memory. Undefined
   * when the store has never seen the session. Throws (with the session and
   * seq) when the history cannot be rebuilt; `recoveryReport()` tells why at open.
   */
  async loadSession(sid: string): Promise<RecoveredSession<S> | undefined> {
    assertSessionId(sid);
    const lastSeq = this.journal.lastSeq(sid);
    if (lastSeq === 0 && this.snapshots.seqs(sid).length === 0) return undefined;
    const { snapshot } = await this.snapshots.loadNewest(sid);
    let state = snapshot === undefined ? this.#hooks.initialState(sid) : upcastSnapshotState<S>(snapshot.state, snapshot.stateSchemaVersion, this.options.stateSchemaVersion, this.#hooks, sid);
    let seq = snapshot?.seq ?? 0;
    for (const record of await this.journal.readSession(sid, seq + 1)) {
      if (record.seq !== seq + 1) {
        throw new ArborError(ErrorCodes.CORRUPTION, `session ${sid}: event ${seq + 1} is missing (next is ${record.seq})`, { sessionId: sid, seq: seq + 1 });
      }
      state = this.#hooks.reducer(state, this.#hooks.upcastEvent === undefined ? record : this.#hooks.upcastEvent(record));
      seq = record.seq;
    }
    const status = this.journal.quarantineReason(sid) === undefined ? 'recovered' : 'damaged';
    return { state, seq, status };
  }

  /** Sessions rebuilt at open, by id. The caller may take them and then `dropRecovered()` to free memory. */
  get recovered(): ReadonlyMap<string, RecoveredSession<S>> {
    return this.#recovered;
  }

  dropRecovered(): void {
    this.#recovered = new Map();
  }

  recoveryReport(): RecoveryReport {
    return this.#report;
  }

  /**
   * Writes a durable snapshot of `state`, which must be the session's state
   * after event `seq`; then releases the journal records it covers and deletes
   * the segments nothing pins any more. Resolves after all of that is durable.
   */
  async snapshot(sid: string, state: S, seq: number): Promise<{ file: string; bytes: number; deletedSegments: string[] }> {
    assertSessionId(sid);
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > this.journal.lastSeq(sid)) {
      throw new RangeError(`snapshot of session ${sid}: seq ${seq} is not between 0 and the session's last seq ${this.journal.lastSeq(sid)}`);
    }
    const written = await this.snapshots.write({
      sid,
      seq,
      lsn: this.journal.syncedLsn,
      ts: Date.now(),
      stateSchemaVersion: this.options.stateSchemaVersion,
      state,
      dedupe: this.journal.dedupeEntries(sid, seq),
    });
    // Only now, with the snapshot durable, may the records it covers stop pinning their segments.
    this.journal.noteSnapshot(sid, seq);
    if (this.journal.quarantineReason(sid) !== undefined && this.options.salvage) this.journal.unquarantine(sid);
    const deletedSegments = await this.journal.deleteReleasedSegments();
    return { ...written, deletedSegments };
  }

  /** Deletes journal segments that snapshots fully cover. */
  compact(): Promise<string[]> {
    return this.journal.deleteReleasedSegments();
  }

  /** Flushes and syncs the journal, closes files and releases the lock. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#state = 'closing';
    try {
      await this.journal.close();
    } finally {
      await this.#lock.release();
      this.#state = 'closed';
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function upcastSnapshotState<S>(state: unknown, from: number, to: number, hooks: RecoveryHooks<S>, sid: string): S {
  if (from === to) return state as S;
  if (from > to) throw new Error(`snapshot of session ${sid} has state schema version ${from}, newer than this build's ${to}`);
  if (hooks.upcastState === undefined) throw new Error(`snapshot of session ${sid} has state schema version ${from} and no upcastState hook is configured (current ${to})`);
  return hooks.upcastState(state, from);
}

/** Opens the storage engine; see `Store.open`. */
export function openStore<S>(options: Partial<StoreOptions>, hooks: RecoveryHooks<S>, internals?: StoreInternals): Promise<Store<S>> {
  return Store.open(options, hooks, internals);
}
