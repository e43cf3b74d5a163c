import { ArborError, ErrorCodes } from '../core/errors.ts';
import { assertSessionId } from '../core/ids.ts';
import type { JournalRecord } from './journal/format.ts';
import { Journal, type AppendInput, type AppendResult, type JournalOpenReport } from './journal/journal.ts';
import { resolveStoreOptions, type ResolvedStoreOptions, type StoreOptions } from './options.ts';
import { posix as path } from 'node:path';
import type { BackendStats, CheckpointCapability, JournalFigures, RecoveryCapability, SessionBackend, StoredSession } from '../backend/backend.ts';
import { readRestoreMarker, type RestoreMarker } from './restore-marker.ts';
import { snapshotChannel, type SnapshotMessage } from '../telemetry/channels.ts';
import { writeTableCheckpoint, type CheckpointEntry } from './table-checkpoint.ts';
import { RecoveryCoordinator, type CheckpointUse, type RecoveredSession } from './recovery-coordinator.ts';
import { SessionReplay, type RecoveryHooks, type RecoveryStatus, type SessionRecovery } from '../backend/replay.ts';
import { SnapshotStore } from './snapshot-store.ts';
import { encodeJournalIndex, readJournalIndex, removeJournalIndex, writeJournalIndex, type JournalIndexFile } from './journal-index.ts';
import { detectLoss, recordLoss, type JournalLoss } from './journal-loss.ts';
import type { FileSystem } from '../storage/fs-port.ts';
import { DirectoryLock, type LockOwner } from '../storage/lock.ts';
import { NodeFileSystem } from '../storage/node-fs.ts';
import { Eraser, type Tombstones } from './erasure.ts';
import { checkMasterKey, KeyStore, parseMasterKey, resolveMasterKey } from './keystore.ts';
import { isSessionId } from '../core/ids.ts';
import type { ErasureCapability } from '../backend/backend.ts';
import { JournalArchive } from './journal-archive.ts';
import { errorChannel, type ErrorMessage } from '../telemetry/channels.ts';

export type { RecoveredSession } from './recovery-coordinator.ts';

export interface RecoveryReport {
  /** From opening the store until it answered (lock, listings, the journal's index scan). */
  durationMs: number;
  /** Sessions per status, among those recovered so far. */
  counts: Record<RecoveryStatus, number>;
  /** Per session, in the order they were recovered (on first access or by the background pass). */
  sessions: SessionRecovery[];
  /** Sessions not recovered yet (lazy recovery: the background pass is still running). */
  pending: number;
  /** Wall-clock ms when every session was recovered; absent while some are pending. */
  completedAt?: number;
  /** What the background pass made of the whole-table checkpoint (absent before it read it). */
  checkpoint?: CheckpointUse;
  journal: JournalOpenReport;
  snapshotTempFilesRemoved: string[];
  /** the previous owner of the data directory's lock, when it was stale */
  staleLock?: LockOwner | 'unreadable';
  /**
   * The journal ends below its durable high-water mark (kept in the journal
   * index and the checkpoint): acknowledged events were cut from the disk.
   * The sessions known to be affected get the loss notice (RESTORED.json).
   */
  loss?: JournalLoss;
}

type StoreState = 'open' | 'closing' | 'closed';

/** Knobs for tests that simulate other processes; not part of the documented surface. */
export interface StoreInternals {
  /** The pid written into the lock file (crash tests pose as a process that then dies). */
  lockPid?: number;
  /** Bytes of a segment the recovery pass reads at once (tests make frames straddle its pieces). */
  passPieceBytes?: number;
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
export class Store<S> implements SessionBackend<S, RecoveryReport> {
  readonly kind = 'file';
  readonly options: ResolvedStoreOptions;
  readonly journal: Journal;
  readonly snapshots: SnapshotStore;
  readonly #lock: DirectoryLock;
  readonly #recovery: RecoveryCoordinator<S>;
  #recovered: Map<string, RecoveredSession<S>> = new Map();
  readonly #openReport: Omit<RecoveryReport, 'counts' | 'sessions' | 'pending' | 'completedAt'>;
  #state: StoreState = 'open';
  #closing: Promise<void> | undefined;

  readonly #fs: FileSystem;
  readonly #hooks: RecoveryHooks<S>;
  /** Sessions being seeded (a fork): a second seed of the same id is refused while the first writes. */
  readonly #seeding = new Set<string>();
  /** Deletes sessions and erases their bytes (src/file/erasure.ts). */
  readonly #eraser: Eraser;
  /** Encryption at rest: the data keys (undefined when no key was given). */
  readonly #keys: KeyStore | undefined;
  /** Appends waiting for their session's new data key to be durable, until they are queued in the journal. */
  readonly #behindKeys = new Set<Promise<void>>();
  /** Writers of the table checkpoint, one at a time (the runtime's, and erasure's rewrite). */
  #checkpointChain: Promise<unknown> = Promise.resolve();
  /** What `open` was given, so that `reopen` can open the same store again. */
  #reopenWith: { options: Partial<StoreOptions>; hooks: RecoveryHooks<S>; internals: StoreInternals } | undefined;

  /** The journal archive (`journalArchiveDir`), when it is on. */
  readonly #archive: JournalArchive | undefined;

  private constructor(options: ResolvedStoreOptions, fs: FileSystem, lock: DirectoryLock, journal: Journal, snapshots: SnapshotStore, hooks: RecoveryHooks<S>, tombstones: Tombstones, keys: KeyStore | undefined, archive: JournalArchive | undefined, internals: StoreInternals = {}) {
    this.options = options;
    this.#fs = fs;
    this.#hooks = hooks;
    this.#keys = keys;
    this.#archive = archive;
    this.#eraser = Eraser.start(
      {
        fs,
        dataDir: options.dataDir,
        journal,
        snapshots,
        checkpointDir: path.join(options.dataDir, 'checkpoint'),
        stateSchemaVersion: options.stateSchemaVersion,
        maxRecordBytes: options.maxEventBytes,
        deadlineMs: options.erasureDeadlineMs,
        withCheckpoint: (op) => this.#withCheckpoint(op),
        archive,
      },
      tombstones,
    );
    this.#lock = lock;
    this.journal = journal;
    this.snapshots = snapshots;
    this.#openReport = {
      durationMs: 0,
      journal: journal.report,
      snapshotTempFilesRemoved: snapshots.removedTempFiles,
      ...(lock.staleOwner === undefined ? {} : { staleLock: lock.staleOwner }),
    };
    this.#recovery = new RecoveryCoordinator<S>({
      journal,
      snapshots,
      hooks,
      salvage: options.salvage,
      stateSchemaVersion: options.stateSchemaVersion,
      seal: (sid, state, seq) => (options.enableSnapshots ? this.snapshot(sid, state, seq) : Promise.resolve()),
      checkpoint: { fs, dir: this.checkpointDir, openState: keys === undefined ? undefined : (sid, state) => keys.openState(sid, state) },
      ...(internals.passPieceBytes === undefined ? {} : { pieceBytes: internals.passPieceBytes }),
    });
  }

  /**
   * Opens (creating when missing) the store in `options.dataDir`: locks it,
   * lists the snapshots, and opens the journal (one scan that checks every
   * record and indexes its head). With `recovery: 'eager'` (the default for
   * direct use) it then rebuilds every session before resolving (`recovered`);
   * with `'lazy'` (the runtime's) it resolves at once, and sessions are
   * rebuilt by `loadSession` on first access and by `recoverAll` in the
   * background. Salvage always recovers eagerly.
   */
  static async open<S>(options: Partial<StoreOptions>, hooks: RecoveryHooks<S>, internals: StoreInternals = {}): Promise<Store<S>> {
    const started = performance.now();
    // Without the option, the hooks say which state version their reducer produces.
    const o = resolveStoreOptions({ ...options, stateSchemaVersion: options.stateSchemaVersion ?? hooks.stateSchemaVersion });
    const fs: FileSystem = o.fs ?? new NodeFileSystem();
    // The persisted journal index is read (I/O on the thread pool) while the key is checked, the lock taken (a
    // stale lock after a crash is a few fsyncs) and the snapshots and tombstones listed. Reading it before the lock
    // is held is safe: it is only used after, and only once checked against the segments the lock protects (a
    // process that held the lock meanwhile can only have made it stale, and a stale index is refused or followed
    // by a scan of what it does not cover).
    const checkpointDir = path.join(o.dataDir, 'checkpoint');
    const indexRead: Promise<JournalIndexFile | { problem: string }> = o.useJournalIndex === false ? Promise.resolve({ problem: 'turned off' }) : readJournalIndex(fs, checkpointDir);
    // (it reports problems as values; should it ever reject, that surfaces where it is awaited, not as an unhandled rejection before)
    indexRead.catch(() => undefined);
    // The key is checked before anything is written (the lock file included): a wrong or missing one refuses here.
    const master = await resolveMasterKey(fs, o);
    const keyFile = await checkMasterKey(fs, o.dataDir, master);
    const lock = await DirectoryLock.acquire({ fs, dir: o.dataDir, ...(internals.lockPid === undefined ? {} : { pid: internals.lockPid }) });
    let store: Store<S> | undefined;
    let journal: Journal | undefined;
    let archive: JournalArchive | undefined;
    try {
      // The journal archive (point-in-time restore): opened before the journal, which hands it every segment it seals or deletes.
      archive =
        o.journalArchiveDir === undefined || !o.enableJournal
          ? undefined
          : await JournalArchive.open({
              fs,
              dir: o.journalArchiveDir,
              retentionDays: o.journalArchiveRetentionDays,
              maxRecordBytes: o.maxEventBytes,
              onDamaged: (name, err) => publishArchiveError(`the archived ${name} is damaged and left out`, err),
            });
      let keys = master !== undefined && keyFile !== undefined ? await KeyStore.open(fs, o.dataDir, master, keyFile, 0) : undefined;
      const snapshots = await SnapshotStore.open({
        fs,
        dir: o.snapshotDir,
        maxSnapshotsPerSession: o.maxSnapshotsPerSession,
        ...(master === undefined ? {} : { sealState: (sid: string, state: unknown) => keys!.sealState(sid, state), openState: (sid: string, state: unknown) => keys!.openState(sid, state) }),
      });
      // Deleted sessions not erased yet: the journal skips their records, and snapshots a crash left of them go now.
      const tombstones = await Eraser.open({ fs, dataDir: o.dataDir });
      for (const [sid, t] of tombstones.entries()) await snapshots.removeSession(sid, t.lsn);
      for (const [sid, lsn] of keys?.shredded() ?? []) await snapshots.removeSession(sid, lsn);
      // The persisted index (an accelerator: the journal checks it against its files, and scans in full when it does not hold).
      // Not taken while deleted sessions await erasure or a session's key is destroyed: the index holds their records
      // without the LSNs the `erased` filter below needs, so a full scan filters them instead.
      let index = await indexRead;
      if ('image' in index) {
        const image = index.image;
        if (tombstones.size > 0) index = { problem: `deleted sessions await erasure (${[...tombstones.entries()].map(([sid]) => sid).slice(0, 5).join(', ')})` };
        else if ((keys?.shredded().length ?? 0) > 0) index = { problem: 'sessions whose data keys were destroyed are not erased yet' };
        else if (keys !== undefined && image.sessions.some((e) => e.locs.length > 0 && !keys!.has(e.sid))) index = { problem: 'a session in the index has no data key (records of it may be unreadable)' };
      }
      // Records whose data key was destroyed (a delete cut short, or a restored backup): erased like a tombstone's.
      const unreadable = new Map<string, number>();
      journal = await Journal.open({
        ...('image' in index ? { index: index.image } : {}),
        erased: (sid, lsn) => {
          if (tombstones.isErased(sid, lsn)) return true;
          if (keys === undefined || !keys.isUnreadable(sid, lsn)) return false;
          unreadable.set(sid, Math.max(lsn, unreadable.get(sid) ?? 0));
          return true;
        },
        sealDataJson: master === undefined ? undefined : (sid, seq, json) => keys!.sealDataJson(sid, seq, json),
        openData: master === undefined ? undefined : (sid, seq, data) => keys!.openData(sid, seq, data),
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
        writes: o.enableJournal,
        ...(archive === undefined
          ? {}
          : {
              onSegmentSealed: (name: string) => store?.archiveSoon(name),
              beforeSegmentDelete: async (name: string) => {
                await archive!.ensure(o.journalDir, name);
              },
            }),
      });
      // Coverage from file names: the records a session's newest snapshot covers stop pinning
      // their segments. Recovery holds segment deletion until it has checked those snapshots.
      for (const sid of snapshots.sessions()) {
        const newest = snapshots.seqs(sid).at(-1) ?? 0;
        journal.noteSnapshot(sid, newest, [], newest);
      }
      // A session named in a damaged region refuses writes from the start, before anyone loads it.
      for (const d of journal.report.damage) {
        for (const { sid, seq } of d.sessions ?? []) {
          if ((seq === undefined || seq > (snapshots.seqs(sid).at(-1) ?? 0)) && journal.lastSeq(sid) > 0 && !o.salvage) {
            journal.quarantine(sid, `the journal is damaged at ${d.segment} offset ${d.offset}, in a record of this session; reopen with salvage to accept the loss`);
          }
        }
      }
      // A new encrypted data directory: its key store starts here (older records, if any, stay as written).
      if (master !== undefined && keys === undefined) keys = await KeyStore.open(fs, o.dataDir, master, undefined, journal.nextLsn);
      for (const [sid, lsn] of unreadable) if (!tombstones.isErased(sid, lsn)) await tombstones.add(sid, lsn);
      // A journal that ends below the high-water mark an index or checkpoint of its own recorded lost acknowledged events.
      const loss = await detectLoss({ fs, dataDir: o.dataDir, checkpointDir, journal, index });
      if (loss !== undefined) await recordLoss({ fs, dataDir: o.dataDir, checkpointDir, journal, loss });
      if (journal.report.index === undefined && 'problem' in index && index.problem !== 'no index' && index.problem !== 'turned off') {
        journal.report.index = { used: false, identity: 'unknown', indexedRecords: 0, problem: index.problem };
      }
      const created = new Store<S>(o, fs, lock, journal, snapshots, hooks, tombstones, keys, archive, internals);
      store = created;
      // Segments sealed before this open (a crash may have cut their copy short) are archived in the background.
      for (const { name } of journal.sealedSegments()) created.archiveSoon(name);
      created.#startArchiveRetention();
      if (loss !== undefined) created.#openReport.loss = loss;
      created.#reopenWith = { options, hooks, internals };
      created.#openReport.durationMs = performance.now() - started;
      if (o.recovery === 'eager' || o.salvage) {
        await created.#recovery.runPass((sid, r) => created.#recovered.set(sid, r));
        created.#openReport.durationMs = performance.now() - started;
      }
      return created;
    } catch (err) {
      // The open failed: that error is the one to report. Cleaning up is best effort (a lock left
      // behind names this dead process and is taken over by the next open).
      archive?.stop();
      await journal?.close().catch(() => undefined);
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  /** Appends one event to the journal; see `Journal.append` for when it resolves and what it rejects with. */
  append(input: AppendInput): Promise<AppendResult> {
    if (this.#state !== 'open') return Promise.reject(new ArborError(ErrorCodes.CLOSED, 'store is closed'));
    // Encrypted: a session's first append waits until its data key is durable (appends behind it keep their order).
    const creating = this.#keys !== undefined && isSessionId(input?.sid) ? this.#keys.ensure(input.sid) : undefined;
    if (creating !== undefined) {
      // Queued in the journal once the key is durable (wrapped: not awaiting the ack); a close waits for that step.
      const queued = creating.then(() => ({ ack: this.journal.append(input) }));
      const step = queued.then(
        () => undefined,
        () => undefined,
      );
      this.#behindKeys.add(step);
      void step.then(() => this.#behindKeys.delete(step));
      return queued.then((q) => q.ack);
    }
    return this.journal.append(input);
  }

  /** Whether the data directory is encrypted at rest (a key was given). */
  get encrypted(): boolean {
    return this.#keys !== undefined;
  }

  /**
   * Rewraps every session's data key with `newKey` (32 bytes, base64) and
   * writes the key store durably; no journal, snapshot or checkpoint byte is
   * rewritten. From then on only `newKey` opens the data directory.
   */
  async rotateMasterKey(newKey: string, source = 'rotateMasterKey'): Promise<{ keys: number }> {
    if (this.#keys === undefined) throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `data directory ${this.options.dataDir} is not encrypted: there is no key to rotate`, { source });
    return { keys: await this.#keys.rotate(parseMasterKey(newKey, source)) };
  }

  /** The session's journal records with seq ≥ `fromSeq` that no snapshot has released yet. */
  read(sid: string, fromSeq = 1): Promise<JournalRecord[]> {
    assertSessionId(sid);
    return this.journal.readSession(sid, fromSeq);
  }

  /**
   * The session rebuilt from its newest valid snapshot and the journal records
   * after it; undefined when the store has never seen it. The first load
   * after open is the session's recovery (it joins the report); later loads
   * (a session dropped from memory) throw ARBOR_CORRUPTION naming the session
   * and seq when its history has a hole.
   */
  async loadSession(sid: string): Promise<RecoveredSession<S> | undefined> {
    assertSessionId(sid);
    if (this.#recovery.isPending(sid) || this.#recovery.isLoading(sid)) {
      const first = await this.#recovery.recoverOne(sid);
      if (first !== undefined) return first;
    }
    return this.#recovery.rebuild(sid);
  }

  /**
   * Recovers every session not recovered yet, in one sequential pass over the
   * snapshots and the journal as it was at open, yielding to the event loop
   * between slices; `onSession` is called for each. Joins a running pass.
   */
  recoverAll(onSession?: (sid: string, r: RecoveredSession<S>) => void): Promise<void> {
    return this.#recovery.runPass(onSession);
  }

  /** Where the whole-table checkpoint lives: `<dataDir>/checkpoint`. */
  get checkpointDir(): string {
    return path.join(this.options.dataDir, 'checkpoint');
  }

  /**
   * Writes the whole-table checkpoint (see writeTableCheckpoint): an
   * accelerator for the next start's background pass, never needed for
   * correctness. Each entry must be a committed state and the LSN of its
   * last event.
   */
  async writeCheckpoint(entries: Iterable<CheckpointEntry<S>>): Promise<{ bytes: number; entries: number }> {
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    const keys = this.#keys;
    const snapshots = this.snapshots;
    const sealed = (function* () {
      for (const e of entries) {
        // Tied to the newest snapshot when that is at the entry's seq (see table-checkpoint.ts).
        const snapshotLsn = e.snapshotLsn ?? snapshots.newestLsnAt(e.sid, e.seq);
        const tied = snapshotLsn === undefined ? e : { ...e, snapshotLsn };
        // (a session written before encryption was turned on, and untouched since, has no key: it stays as its journal has it)
        yield keys !== undefined && keys.has(e.sid) ? { ...tied, state: keys.sealState(e.sid, e.state) as S } : tied;
      }
    })();
    const highWater = this.journal.syncedLsn;
    const written = await this.#withCheckpoint(() =>
      writeTableCheckpoint({ fs: this.#fs, dir: this.checkpointDir, stateSchemaVersion: this.options.stateSchemaVersion, entries: sealed, highWater, highWaterSegment: this.#segmentIdentity() }),
    );
    await this.writeJournalIndex();
    return written;
  }

  /** [first LSN, salt] of the oldest segment: what ties a high-water mark to this journal. */
  #segmentIdentity(): { id: number; salt: number } | undefined {
    return this.journal.segmentIdentity();
  }

  /**
   * Writes the journal index (see journal-index.ts) as of the last settled
   * record, with the synced LSN as its high-water mark; when the journal
   * cannot be indexed now (damage, a quarantined session, writes off), removes
   * any older index instead. Written with every checkpoint and at close.
   */
  async writeJournalIndex(sync = true): Promise<{ bytes: number } | { problem: string }> {
    if (this.options.useJournalIndex === false) return { problem: 'turned off' };
    // One at a time with the checkpoint's writers: erasure removes the index after it rewrites segments.
    return this.#withCheckpoint(async () => {
      const image = this.#recovery.passDamage.length > 0 ? 'the recovery pass found damage' : await this.journal.indexImage();
      const bytes = typeof image === 'string' ? undefined : encodeJournalIndex(image, this.journal.syncedLsn);
      if (bytes === undefined) {
        await removeJournalIndex(this.#fs, this.checkpointDir);
        return { problem: typeof image === 'string' ? image : 'a figure does not fit the index format' };
      }
      await writeJournalIndex(this.#fs, this.checkpointDir, bytes, sync);
      return { bytes: bytes.length };
    });
  }

  #withCheckpoint<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#checkpointChain.then(op);
    this.#checkpointChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Deletes the session: its tombstone is durable, its journal index and
   * snapshots are gone, when this resolves; its records' bytes are erased
   * from the segments and the checkpoint within `erasureDeadlineMs`
   * (`erasure.whenErased(sid)`). The id may be used again, for a new session.
   */
  async deleteSession(sid: string): Promise<void> {
    assertSessionId(sid);
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    // Not recovered yet: recovered first, so that no later recovery brings it back.
    if (this.#recovery.isPending(sid) || this.#recovery.isLoading(sid)) await this.loadSession(sid);
    this.#recovered.delete(sid);
    const keys = this.#keys;
    await this.#eraser.delete(sid, keys === undefined ? undefined : (lsn) => keys.destroy(sid, lsn));
  }

  /** Erasure of deleted sessions (see src/file/erasure.ts). */
  readonly erasure: ErasureCapability & { run(): Promise<unknown> } = {
    pending: () => this.#eraser.pending(),
    whenErased: (sid) => this.#eraser.whenErased(sid),
    run: () => this.#eraser.run(),
  };

  /** What the background pass made of the checkpoint (undefined before it read it). */
  get checkpointUse(): CheckpointUse | undefined {
    return this.#recovery.checkpointUse;
  }

  /** Stops the background pass at its next slice; sessions not reached stay pending until the next open. */
  stopRecovery(): void {
    this.#recovery.stop();
  }

  /** Whether the session has data this process has not recovered yet. */
  isPendingRecovery(sid: string): boolean {
    return this.#recovery.isPending(sid);
  }

  /** Sessions not recovered yet. */
  get pendingRecoveries(): number {
    return this.#recovery.pendingCount;
  }

  /** Ids of every session with durable data. */
  async sessionIds(): Promise<string[]> {
    return [...new Set([...this.journal.sessionIds(), ...this.snapshots.sessions()])];
  }

  /** Sessions rebuilt by an eager open, by id. The caller may take them and then `dropRecovered()` to free memory. */
  get recovered(): ReadonlyMap<string, RecoveredSession<S>> {
    return this.#recovered;
  }

  dropRecovered(): void {
    this.#recovered = new Map();
  }

  /** Sessions recovered so far, per status (what health checks read, without copying every report). */
  recoveryCounts(): Record<RecoveryStatus, number> {
    return { ...this.#recovery.counts };
  }

  recoveryReport(): RecoveryReport {
    const completedAt = this.#recovery.completedAt;
    return {
      ...this.#openReport,
      counts: this.recoveryCounts(),
      sessions: [...this.#recovery.sessions],
      pending: this.#recovery.pendingCount,
      ...(completedAt === undefined ? {} : { completedAt }),
      ...(this.#recovery.checkpointUse === undefined ? {} : { checkpoint: { ...this.#recovery.checkpointUse } }),
    };
  }

  /**
   * Writes a durable snapshot of `state`, which must be the session's state
   * after event `seq`; then releases the journal records it covers and deletes
   * the segments nothing pins any more. Resolves after all of that is durable.
   */
  async snapshot(sid: string, state: S, seq: number): Promise<{ file: string; bytes: number; deletedSegments: string[] }> {
    assertSessionId(sid);
    if (!this.options.enableSnapshots) throw new ArborError(ErrorCodes.INVALID_INPUT, `snapshots are turned off (enableSnapshots: false); session ${sid} was not snapshotted`, { field: 'enableSnapshots', sessionId: sid });
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > this.journal.lastSeq(sid)) {
      throw new RangeError(`snapshot of session ${sid}: seq ${seq} is not between 0 and the session's last seq ${this.journal.lastSeq(sid)}`);
    }
    const started = performance.now();
    await this.#keys?.ensure(sid);
    const written = await this.snapshots.write({
      sid,
      seq,
      lsn: this.journal.syncedLsn,
      ts: Date.now(),
      stateSchemaVersion: this.options.stateSchemaVersion,
      state,
      dedupe: this.journal.dedupeEntries(sid, seq),
    });
    if (snapshotChannel.hasSubscribers) snapshotChannel.publish({ sessionId: sid, seq, bytes: written.bytes, durationMs: performance.now() - started } satisfies SnapshotMessage);
    // Only now, with the snapshot durable, may the records it covers stop pinning their segments.
    this.journal.noteSnapshot(sid, seq);
    if (this.journal.quarantineReason(sid) !== undefined && this.options.salvage) this.journal.unquarantine(sid);
    const deletedSegments = await this.journal.deleteReleasedSegments();
    return { ...written, deletedSegments };
  }

  /** Seq of the session's newest snapshot file, 0 when none. */
  async snapshotSeq(sid: string): Promise<number> {
    return this.snapshots.seqs(sid).at(-1) ?? 0;
  }

  /** The sessions pinning the oldest journal segment: snapshotting them lets it be deleted. */
  sessionsToSnapshot(): string[] {
    return this.journal.sessionsPinningOldest();
  }

  /** Nothing to give up: the data directory's lock makes this process the only owner of every session. */
  async release(_sid: string): Promise<void> {}

  /** Never called: one process owns the whole data directory. */
  onSessionLost(_listener: (sid: string, reason: string) => void): void {}

  /** Whether the session has a journal record or a snapshot file. */
  async exists(sid: string): Promise<boolean> {
    assertSessionId(sid);
    return this.journal.lastSeq(sid) > 0 || this.snapshots.seqs(sid).length > 0;
  }

  /** Every session with a journal record or a snapshot file, with its last seq (from the in-memory indexes: no I/O). */
  async listSessions(): Promise<StoredSession[]> {
    const out: StoredSession[] = [];
    for (const sid of await this.sessionIds()) out.push({ sid, seq: Math.max(this.journal.lastSeq(sid), this.snapshots.seqs(sid).at(-1) ?? 0) });
    return out;
  }

  /**
   * The session rebuilt read-only: its newest valid snapshot at or below
   * `atSeq`, then the journal records after it up to `atSeq`. Changes no
   * index, takes no part in recovery (a session still pending stays pending).
   */
  async peekSession(sid: string, atSeq?: number): Promise<RecoveredSession<S> | undefined> {
    assertSessionId(sid);
    const newest = Math.max(this.journal.lastSeq(sid), this.snapshots.seqs(sid).at(-1) ?? 0);
    if (newest === 0) return undefined;
    const upTo = atSeq ?? Number.MAX_SAFE_INTEGER;
    const { snapshot, damaged } = await this.snapshots.loadNewest(sid, upTo);
    const replay = new SessionReplay(this.#hooks, sid, { snapshot, stateSchemaVersion: this.options.stateSchemaVersion, damagedSnapshots: damaged });
    if (!replay.failed) {
      for (const record of await this.journal.readSession(sid, replay.report.seq + 1)) {
        if (record.seq > upTo) break;
        replay.apply(record);
      }
    }
    if (atSeq !== undefined && replay.report.seq !== atSeq) {
      const records = await this.journal.readSession(sid, 1);
      const oldestSeq = Math.min(this.snapshots.seqs(sid)[0] ?? Number.MAX_SAFE_INTEGER, (records[0]?.seq ?? Number.MAX_SAFE_INTEGER) - 1);
      throw unreachableSeq(sid, atSeq, oldestSeq);
    }
    const report = replay.report;
    if (report.status === 'recovered' && this.journal.quarantineReason(sid) !== undefined) report.status = 'damaged';
    return { state: replay.state, seq: report.seq, status: report.status, report };
  }

  /** Writes `state` as the snapshot of a new session at `seq`; the journal then numbers its next event `seq + 1`. */
  async seedSession(sid: string, state: S, seq: number): Promise<void> {
    assertSessionId(sid);
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    if (!this.options.enableSnapshots) throw new ArborError(ErrorCodes.INVALID_INPUT, `snapshots are turned off (enableSnapshots: false): session ${sid} cannot be seeded from a state`, { field: 'enableSnapshots', sessionId: sid });
    if (!Number.isSafeInteger(seq) || seq < 0) throw new ArborError(ErrorCodes.INVALID_INPUT, `seed of session ${sid}: seq ${seq} is not a non-negative integer`, { field: 'seq', sessionId: sid });
    if (this.#seeding.has(sid) || (await this.exists(sid))) throw new ArborError(ErrorCodes.SESSION_EXISTS, `session ${sid} already exists`, { sessionId: sid });
    this.#seeding.add(sid);
    try {
      // Encrypted: the new session's data key is durable before its first snapshot is sealed with it.
      await this.#keys?.ensure(sid);
      await this.snapshots.write({ sid, seq, lsn: this.journal.syncedLsn, ts: Date.now(), stateSchemaVersion: this.options.stateSchemaVersion, state, dedupe: [] });
      this.journal.noteSnapshot(sid, seq);
    } finally {
      this.#seeding.delete(sid);
    }
  }

  /** Lazy recovery, as the runtime drives it (see SessionBackend.recovery). */
  readonly recovery: RecoveryCapability<S, RecoveryReport> = {
    takeRecovered: () => {
      const taken = [...this.#recovered];
      this.dropRecovered();
      return taken;
    },
    recoverAll: (onSession) => this.recoverAll(onSession),
    stop: () => this.stopRecovery(),
    isPending: (sid) => this.isPendingRecovery(sid),
    pendingCount: () => this.pendingRecoveries,
    counts: () => this.recoveryCounts(),
    report: () => this.recoveryReport(),
  };

  /** The whole-table checkpoint; each entry gets the session's dedupe window from the journal. */
  readonly checkpoint: CheckpointCapability<S> = {
    write: (entries) => {
      const journal = this.journal;
      return this.writeCheckpoint(
        (function* () {
          for (const e of entries) yield { ...e, dedupe: journal.dedupeEntries(e.sid, e.seq) };
        })(),
      );
    },
  };

  /** Which halves of the storage are on (`enableJournal`, `enableSnapshots`). */
  get persistence(): { journal: boolean; snapshots: boolean } {
    return { journal: this.options.enableJournal, snapshots: this.options.enableSnapshots };
  }

  /**
   * Closes this store (whatever state its journal is in) and opens the same
   * data directory again, as a restart would: the new store recovers lazily.
   */
  async reopen(): Promise<Store<S>> {
    const again = this.#reopenWith;
    if (again === undefined) throw new ArborError(ErrorCodes.CLOSED, 'store is closed');
    await this.close().catch(() => undefined);
    return Store.open<S>({ ...again.options, recovery: 'lazy' }, again.hooks, again.internals);
  }

  /** The restore marker `arbor restore` left in the data directory, if any. */
  restoreMarker(): Promise<RestoreMarker | undefined> {
    return readRestoreMarker(this.#fs, this.options.dataDir);
  }

  /** Segments, synced LSN, and why the journal failed (with the errno underneath). */
  journalFigures(): JournalFigures {
    const j = this.journal;
    const failure = j.failure;
    return {
      segments: j.segmentNames().length,
      syncedLsn: j.syncedLsn,
      ...(failure === undefined ? {} : { failure: { code: failure.code, errno: errnoOf(failure), message: failure.message } }),
    };
  }

  stats(): BackendStats {
    const j = this.journal;
    return { state: j.state, queueDepth: j.queueDepth, lastFlushAt: j.lastFlushAt, journalBytes: j.sizeBytes() };
  }

  /**
   * Copies the sealed segment into the archive in the background (serialised
   * with segment deletions and erasure rewrites). A failure is published on
   * `arbor:error` (source `archive`); the segment is copied again before the
   * journal deletes it.
   */
  archiveSoon(name: string): void {
    const archive = this.#archive;
    if (archive === undefined || archive.has(name)) return;
    void this.journal
      .exclusiveSegments(async () => {
        if (this.journal.state !== 'open' || !this.journal.segmentNames().includes(name) || this.journal.segmentNames().at(-1) === name) return;
        await archive.ensure(this.journal.dir, name);
      })
      .catch((err: unknown) => publishArchiveError(`archiving ${name} failed (it is retried before the journal deletes it)`, err));
  }

  /** The journal archive (`journalArchiveDir`), when it is on: its segments, and retention run now. */
  readonly archive = {
    /** whether the archive is on */
    enabled: (): boolean => this.#archive !== undefined,
    /** the archived segments' metas, oldest first */
    segments: () => this.#archive?.segments() ?? [],
    /** deleted sessions recorded in the archive */
    deletions: () => this.#archive?.deletions() ?? [],
    /** resolves when every archive copy queued so far is done */
    settled: (): Promise<void> => this.journal.exclusiveSegments(async () => undefined),
    /** one retention pass now, as the background pass does it (`now`: the clock to judge ages by) */
    prune: (now?: number): Promise<{ removed: string[] }> => {
      const archive = this.#archive;
      if (archive === undefined) return Promise.resolve({ removed: [] });
      return this.journal.exclusiveSegments(() => archive.prune(now, (name) => this.journal.segmentNames().includes(name)));
    },
  };

  #startArchiveRetention(): void {
    const archive = this.#archive;
    if (archive === undefined) return;
    const interval = Math.min(3_600_000, this.options.journalArchiveRetentionDays * 24 * 360_000);
    archive.startRetention(interval, (name) => this.journal.segmentNames().includes(name), (err) => publishArchiveError('archive retention failed', err), (op) => this.journal.exclusiveSegments(op));
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
    this.#recovery.stop();
    try {
      this.#archive?.stop();
      await this.#eraser.close();
      // Appends made before close whose session's key was still being written go into the journal first.
      await Promise.all([...this.#behindKeys]);
      // A clean close leaves an index of everything: the next open reads it instead of scanning.
      if (this.journal.state === 'open' && this.options.enableJournal) {
        try {
          await this.journal.flush();
          // Not synced: closing must not wait for it, and a torn index is refused by its checksums.
          await this.writeJournalIndex(false);
        } catch {
          // Only an accelerator: the close goes on, and the next open scans (close reports the journal's own failure).
        }
      }
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

/** A point of a session's history that is no longer held (see SessionBackend.peekSession). */
function unreachableSeq(sid: string, atSeq: number, oldestSeq: number): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, `session ${sid}: its state at seq ${atSeq} is no longer held (the oldest reachable seq is ${oldestSeq}: earlier events were compacted into snapshots)`, { field: 'atSeq', sessionId: sid, atSeq, oldestSeq });
}

function publishArchiveError(what: string, err: unknown): void {
  if (errorChannel.hasSubscribers) errorChannel.publish({ source: 'archive', code: (err as ArborError)?.code ?? ErrorCodes.IO_ERROR, message: `${what}: ${(err as Error)?.message ?? String(err)}` } satisfies ErrorMessage);
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

/** Opens the storage engine; see `Store.open`. */
export function openStore<S>(options: Partial<StoreOptions>, hooks: RecoveryHooks<S>, internals?: StoreInternals): Promise<Store<S>> {
  return Store.open(options, hooks, internals);
}
