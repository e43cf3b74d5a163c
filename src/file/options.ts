import { posix as path } from 'node:path';
import type { Durability } from './journal/journal.ts';
import type { FileSystem } from '../storage/fs-port.ts';
import { boolean, positiveInteger } from '../core/validate.ts';

/** Options of the storage engine. Every field has a default in DEFAULT_STORE_OPTIONS. */
export interface StoreOptions {
  /** Root of everything on disk (default `./data`). Holds the lock file. */
  dataDir: string;
  /** Journal segments (default `<dataDir>/journals`). */
  journalDir: string | undefined;
  /** Snapshots (default `<dataDir>/snapshots`). */
  snapshotDir: string | undefined;
  /** When an append is acknowledged: `fsync` (default), `write` or `buffered`. See the README. */
  durability: Durability;
  /** `buffered` only: write as soon as this many events are queued. */
  journalBatchSize: number;
  /** `write`: fdatasync at this interval. `buffered`: write and fdatasync at this interval. */
  journalFlushIntervalMs: number;
  /** Rotate to a new segment when the current one would grow past this many MiB (fractions allowed). */
  journalMaxSizeMb: number;
  /** Cap on events in one group-commit batch (one write, one sync). */
  journalMaxBatchRecords: number;
  /** Cap on bytes in one group-commit batch. */
  journalMaxBatchBytes: number;
  /** Events waiting for the writer before appends are refused with ARBOR_QUEUE_FULL. */
  journalMaxQueueRecords: number;
  /** Bytes waiting for the writer before appends are refused with ARBOR_QUEUE_FULL. */
  journalMaxQueueBytes: number;
  /** Largest single event, encoded. */
  maxEventBytes: number;
  /** Snapshots kept per session. */
  maxSnapshotsPerSession: number;
  /** Recent clientMessageIds remembered per session for deduplication (also across restarts). */
  dedupeWindow: number;
  /** Version of the state schema written into snapshots; older snapshots go through `upcastState`. */
  stateSchemaVersion: number;
  /** Operator option: recover damaged sessions past their gaps and snapshot them, lifting quarantine. */
  salvage: boolean;
  /**
   * `eager`: open rebuilds every session before it resolves. `lazy`: open
   * resolves after the journal's index scan; sessions are rebuilt on first
   * access and by a background pass (the runtime's default).
   */
  recovery: 'eager' | 'lazy';
  /**
   * `false` turns the journal off: events are acknowledged without being
   * written, and only snapshots keep state, so a crash loses every event
   * since the session's last snapshot (a clean close loses nothing).
   */
  enableJournal: boolean;
  /**
   * Read the persisted journal index at open (and write it with each
   * checkpoint and at close), so that open scans only the journal's tail.
   * An accelerator: false gives the same recovered state, after a full scan.
   */
  useJournalIndex: boolean;
  /**
   * `false` turns snapshots off: recovery replays each session's whole
   * history, and the journal is never compacted (it grows without bound).
   */
  enableSnapshots: boolean;
  /**
   * A deleted session's bytes are erased from the data directory (journal
   * segments rewritten, table checkpoint) within this many ms (docs/erasure.md).
   */
  erasureDeadlineMs: number;
  /**
   * Encryption at rest (docs/encryption.md): the master key, 32 bytes in
   * base64 (or `encryptionKeyFile`, a file holding it). Every session gets its
   * own data key, wrapped by this one, in `<dataDir>/keys/keystore.json`.
   */
  encryptionKey: string | undefined;
  encryptionKeyFile: string | undefined;
  /**
   * Point-in-time restore (docs/pitr.md): every sealed journal segment is
   * copied into this directory and synced before the journal may delete it.
   * Off (undefined) by default.
   */
  journalArchiveDir: string | undefined;
  /** Archived segments whose newest record is older than this many days are removed (a background pass). */
  journalArchiveRetentionDays: number;
  /** How errors name where `encryptionKey` came from (the server: `env ARBOR_ENCRYPTION_KEY`); default `option encryptionKey`. */
  encryptionKeySource: string | undefined;
  /** Filesystem port (default: the real one). Tests pass the in-memory one. */
  fs: FileSystem | undefined;
}

export const DEFAULT_STORE_OPTIONS: Readonly<StoreOptions> = Object.freeze({
  dataDir: './data',
  journalDir: undefined,
  snapshotDir: undefined,
  durability: 'fsync',
  journalBatchSize: 10,
  journalFlushIntervalMs: 1000,
  journalMaxSizeMb: 100,
  journalMaxBatchRecords: 10_000,
  journalMaxBatchBytes: 8 * 1024 * 1024,
  journalMaxQueueRecords: 100_000,
  journalMaxQueueBytes: 64 * 1024 * 1024,
  maxEventBytes: 1024 * 1024,
  maxSnapshotsPerSession: 5,
  dedupeWindow: 1000,
  stateSchemaVersion: 1,
  salvage: false,
  recovery: 'eager',
  enableJournal: true,
  useJournalIndex: true,
  enableSnapshots: true,
  erasureDeadlineMs: 30_000,
  encryptionKey: undefined,
  encryptionKeyFile: undefined,
  encryptionKeySource: undefined,
  journalArchiveDir: undefined,
  journalArchiveRetentionDays: 7,
  fs: undefined,
});

export type ResolvedStoreOptions = Readonly<StoreOptions & { journalDir: string; snapshotDir: string }>;

const DURABILITIES: readonly Durability[] = ['fsync', 'write', 'buffered'];

/** Merges `options` over the defaults, validates every field (naming it on error) and freezes the result. */
export function resolveStoreOptions(options: Partial<StoreOptions> = {}): ResolvedStoreOptions {
  for (const key of Object.keys(options)) {
    if (!(key in DEFAULT_STORE_OPTIONS)) throw new TypeError(`unknown option ${key}; known options: ${Object.keys(DEFAULT_STORE_OPTIONS).join(', ')}`);
  }
  const merged = { ...DEFAULT_STORE_OPTIONS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as StoreOptions;
  if (typeof merged.dataDir !== 'string' || merged.dataDir.length === 0) throw new TypeError(`option dataDir must be a non-empty path, got ${JSON.stringify(merged.dataDir)}`);
  for (const key of ['journalDir', 'snapshotDir', 'journalArchiveDir'] as const) {
    const v = merged[key];
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw new TypeError(`option ${key} must be a non-empty path, got ${JSON.stringify(v)}`);
  }
  if (!DURABILITIES.includes(merged.durability)) {
    throw new RangeError(`option durability must be one of ${DURABILITIES.join(', ')}, got ${JSON.stringify(merged.durability)}`);
  }
  positiveInteger('journalBatchSize', merged.journalBatchSize);
  positiveInteger('journalFlushIntervalMs', merged.journalFlushIntervalMs, 3_600_000);
  if (typeof merged.journalMaxSizeMb !== 'number' || !(merged.journalMaxSizeMb > 0) || merged.journalMaxSizeMb > 1024 * 1024) {
    throw new RangeError(`option journalMaxSizeMb must be a number above 0 (MiB), got ${JSON.stringify(merged.journalMaxSizeMb)}`);
  }
  positiveInteger('journalMaxBatchRecords', merged.journalMaxBatchRecords);
  positiveInteger('journalMaxBatchBytes', merged.journalMaxBatchBytes);
  positiveInteger('journalMaxQueueRecords', merged.journalMaxQueueRecords);
  positiveInteger('journalMaxQueueBytes', merged.journalMaxQueueBytes);
  positiveInteger('maxEventBytes', merged.maxEventBytes, 256 * 1024 * 1024);
  positiveInteger('maxSnapshotsPerSession', merged.maxSnapshotsPerSession, 1000);
  positiveInteger('dedupeWindow', merged.dedupeWindow);
  positiveInteger('erasureDeadlineMs', merged.erasureDeadlineMs, 60_000);
  positiveInteger('journalArchiveRetentionDays', merged.journalArchiveRetentionDays, 36_500);
  positiveInteger('stateSchemaVersion', merged.stateSchemaVersion, 2 ** 32 - 1);
  for (const key of ['salvage', 'enableJournal', 'enableSnapshots', 'useJournalIndex'] as const) boolean(key, merged[key]);
  if (!merged.enableJournal && !merged.enableSnapshots) {
    throw new RangeError('options enableJournal and enableSnapshots cannot both be false: nothing would be kept on disk (use the in-memory filesystem for a store that keeps nothing)');
  }
  if (merged.recovery !== 'eager' && merged.recovery !== 'lazy') throw new RangeError(`option recovery must be 'eager' or 'lazy', got ${JSON.stringify(merged.recovery)}`);
  const dataDir = merged.dataDir;
  if (merged.journalArchiveDir !== undefined) {
    const archive = path.resolve(merged.journalArchiveDir);
    for (const [key, dir] of [['dataDir', dataDir], ['journalDir', merged.journalDir ?? path.join(dataDir, 'journals')], ['snapshotDir', merged.snapshotDir ?? path.join(dataDir, 'snapshots')]] as const) {
      if (path.resolve(dir) === archive) throw new RangeError(`option journalArchiveDir must be a directory of its own, not the ${key} (${JSON.stringify(dir)})`);
    }
  }
  return Object.freeze({
    ...merged,
    journalDir: merged.journalDir ?? path.join(dataDir, 'journals'),
    snapshotDir: merged.snapshotDir ?? path.join(dataDir, 'snapshots'),
  });
}
