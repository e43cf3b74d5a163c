import { randomInt } from 'node:crypto';
import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { isSessionId } from '../core/ids.ts';
import { ensureDir, hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { errorChannel, erasureChannel, type ErasureMessage, type ErrorMessage } from '../telemetry/channels.ts';
import { SEGMENT_HEADER_BYTES, decodeHead, encodeSegmentHeader, frameCrc, type SegmentHeader } from './journal/format.ts';
import { scanSegment } from './journal/segment-scanner.ts';
import type { Journal } from './journal/journal.ts';
import type { SnapshotStore } from './snapshot-store.ts';
import { readTableCheckpoint, writeTableCheckpoint, CHECKPOINT_FILE } from './table-checkpoint.ts';
import { removeJournalIndex } from './journal-index.ts';

/**
 * Deleting a session, and erasing it from the data directory.
 *
 * `delete` makes a tombstone durable (`<dataDir>/erasure/tombstones.json`:
 * the session and the LSN up to which its records are dead) before it
 * resolves, forgets the session in the journal's index and unlinks its
 * snapshots. From then on the id names nothing: a new session may take it,
 * and its records (LSNs above the tombstone's) are unaffected.
 *
 * The bytes of the dead records are still in the journal's segments until an
 * erasure pass (started at once, retried until it succeeds, bounded by
 * `erasureDeadlineMs`) rewrites each segment that holds any: the kept frames
 * are copied into `<segment>.tmp` under a new header (flag ERASED_GAPS, the
 * LSN span the segment covers, a new salt, so every checksum is new), synced,
 * renamed over the segment and the directory synced. A crash at any step
 * leaves either the old segment or the new one (the journal removes `.tmp`
 * files at open), and the tombstone makes the next start skip the dead
 * records and run the pass again. The table checkpoint is rewritten without
 * the dead sessions' entries. Only then is the tombstone dropped.
 */
export const ERASURE_DIR = 'erasure';
export const TOMBSTONE_FILE = 'tombstones.json';
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

export interface Tombstone {
  /** every record of the session with an LSN up to this one is dead */
  lsn: number;
  /** wall-clock ms of the delete */
  at: number;
}

/** Writes `bytes` to `file` atomically and durably: temp file, fdatasync, rename, directory sync. */
export async function writeFileDurably(fs: FileSystem, file: string, bytes: Uint8Array): Promise<void> {
  const temp = `${file}.tmp`;
  const handle = await fs.open(temp, 'w+', FILE_MODE);
  try {
    await writeFully(handle, bytes, 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(temp, file);
  await fs.syncDir(path.dirname(file));
}

/** The durable set of deleted sessions whose erasure is not complete. */
export class Tombstones {
  readonly #fs: FileSystem;
  readonly #file: string;
  readonly #map = new Map<string, Tombstone>();
  #writing: Promise<unknown> = Promise.resolve();

  private constructor(fs: FileSystem, dir: string) {
    this.#fs = fs;
    this.#file = path.join(dir, TOMBSTONE_FILE);
  }

  /** Reads `<dir>/tombstones.json` (none: empty); refuses a file that does not parse, naming it. */
  static async open(fs: FileSystem, dir: string): Promise<Tombstones> {
    const t = new Tombstones(fs, dir);
    let text: string;
    try {
      text = Buffer.from(await fs.readFile(t.#file)).toString('utf8');
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return t;
      throw err;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new ArborError(ErrorCodes.CORRUPTION, `${t.#file} is not JSON: the deleted sessions it names cannot be erased`, { file: t.#file });
    }
    const sessions = (value as { sessions?: unknown })?.sessions;
    if (typeof sessions !== 'object' || sessions === null) throw new ArborError(ErrorCodes.CORRUPTION, `${t.#file} has no "sessions" object`, { file: t.#file });
    for (const [sid, entry] of Object.entries(sessions)) {
      const { lsn, at } = (entry ?? {}) as Partial<Tombstone>;
      if (!isSessionId(sid) || !Number.isSafeInteger(lsn) || typeof at !== 'number') throw new ArborError(ErrorCodes.CORRUPTION, `${t.#file}: the entry of ${JSON.stringify(sid)} is malformed`, { file: t.#file });
      t.#map.set(sid, { lsn: lsn!, at });
    }
    return t;
  }

  get size(): number {
    return this.#map.size;
  }

  get(sid: string): Tombstone | undefined {
    return this.#map.get(sid);
  }

  entries(): [string, Tombstone][] {
    return [...this.#map];
  }

  /** Whether the record (`sid`, `lsn`) belongs to a deleted session. */
  isErased(sid: string, lsn: number): boolean {
    const t = this.#map.get(sid);
    return t !== undefined && lsn <= t.lsn;
  }

  /** Adds (or moves up) the session's tombstone; resolves once it is durable. */
  add(sid: string, lsn: number): Promise<void> {
    const before = this.#map.get(sid);
    this.#map.set(sid, { lsn: Math.max(lsn, before?.lsn ?? 0), at: Date.now() });
    return this.#persist();
  }

  /** Drops tombstones whose erasure is complete (those not deleted again meanwhile: same LSN). */
  remove(done: ReadonlyMap<string, Tombstone>): Promise<void> {
    let changed = false;
    for (const [sid, t] of done) {
      if (this.#map.get(sid)?.lsn === t.lsn) {
        this.#map.delete(sid);
        changed = true;
      }
    }
    return changed ? this.#persist() : Promise.resolve();
  }

  #persist(): Promise<void> {
    const run = this.#writing.then(async () => {
      const body = JSON.stringify({ version: 1, sessions: Object.fromEntries(this.#map) });
      await ensureDir(this.#fs, path.dirname(this.#file), DIR_MODE);
      await writeFileDurably(this.#fs, this.#file, Buffer.from(body, 'utf8'));
    });
    this.#writing = run.catch(() => undefined);
    return run;
  }
}

/** What rewriting one segment did. */
export interface SegmentRewrite {
  header: SegmentHeader;
  size: number;
  /** old offset → new offset of every kept frame */
  moved: Map<number, number>;
  erased: number;
}

/**
 * Rewrites the sealed segment `name` without the records `isErased` names
 * (temp → fdatasync → rename → directory sync). Undefined when it holds none.
 * Refuses (ARBOR_CORRUPTION) a segment with damaged regions: they may hold a
 * deleted session's bytes, and dropping them would hide the damage.
 */
export async function rewriteSegment(fs: FileSystem, dir: string, name: string, maxRecordBytes: number, isErased: (sid: string, lsn: number) => boolean): Promise<SegmentRewrite | undefined> {
  const file = path.join(dir, name);
  const bytes = await fs.readFile(file);
  const keep: [offset: number, frameBytes: number][] = [];
  let erased = 0;
  const scan = scanSegment(bytes, { isLast: false, maxRecordBytes }, (head, offset, frameBytes) => {
    if (isErased(head.sid, head.lsn)) erased += 1;
    else keep.push([offset, frameBytes]);
  }, decodeHead);
  if (scan.header === undefined || scan.damage.length > 0) {
    const where = scan.damage[0];
    throw new ArborError(ErrorCodes.CORRUPTION, `cannot erase from ${name}: it is damaged${where === undefined ? '' : ` at offset ${where.offset} (${where.reason})`}; run arbor verify`, { segment: name, ...(where === undefined ? {} : { offset: where.offset }) });
  }
  if (erased === 0) return undefined;
  const firstLsn = scan.header.firstLsn;
  const { bytes: headerBytes, header } = encodeSegmentHeader(firstLsn, randomInt(0, 2 ** 32 - 1), { lsnSpan: Math.max(0, scan.lastLsn - firstLsn + 1) });
  let total = SEGMENT_HEADER_BYTES;
  for (const [, n] of keep) total += n;
  const out = Buffer.alloc(total);
  headerBytes.copy(out, 0);
  const moved = new Map<number, number>();
  let at = SEGMENT_HEADER_BYTES;
  const src = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  for (const [offset, n] of keep) {
    src.copy(out, at, offset, offset + n);
    // The same length and payload, checksummed under the new header's seed.
    out.writeUInt32LE(frameCrc(header.seed, out.subarray(at, at + n)), at);
    moved.set(offset, at);
    at += n;
  }
  await writeFileDurably(fs, file, out);
  return { header, size: total, moved, erased };
}

/** What erasure needs of the journal archive (src/file/journal-archive.ts), when there is one. */
export interface ErasureArchive {
  /** Records the deletion durably in the archive (no restore from it brings the session back). */
  recordDeletion(sid: string, lsn: number): Promise<void>;
  /** Rewrites the archived segments holding records of `sids` without the records `isErased` names. */
  erase(sids: ReadonlySet<string>, isErased: (sid: string, lsn: number) => boolean): Promise<{ segments: string[]; records: number }>;
}

export interface EraserOptions {
  fs: FileSystem;
  dataDir: string;
  journal: Journal;
  snapshots: SnapshotStore;
  checkpointDir: string;
  stateSchemaVersion: number;
  maxRecordBytes: number;
  /** Every deleted session is erased within this many ms (passes start at once and retry until then). */
  deadlineMs: number;
  /** Runs `op` while no one else writes the table checkpoint. */
  withCheckpoint: <T>(op: () => Promise<T>) => Promise<T>;
  /** The journal archive (`journalArchiveDir`): erased there too. */
  archive?: ErasureArchive | undefined;
}

/** What one erasure pass did. */
export interface ErasureReport {
  /** sessions whose erasure completed in this pass */
  sessions: string[];
  segmentsRewritten: string[];
  /** archived segments (journalArchiveDir) rewritten */
  archiveSegmentsRewritten?: string[];
  recordsErased: number;
  checkpointRewritten: boolean;
  durationMs: number;
}

/** Deletes sessions and erases them from the data directory (see the module comment). */
export class Eraser {
  readonly #o: EraserOptions;
  readonly tombstones: Tombstones;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<ErasureReport> | undefined;
  #again = false;
  #closed = false;
  #waiters: { sid: string | undefined; resolve: () => void }[] = [];
  #lastFailure: unknown;

  private constructor(o: EraserOptions, tombstones: Tombstones) {
    this.#o = o;
    this.tombstones = tombstones;
  }

  /** Reads the tombstones (before the journal opens: it skips their records) and removes what a crash left of deleted sessions' snapshots. */
  static async open(o: { fs: FileSystem; dataDir: string }): Promise<Tombstones> {
    return Tombstones.open(o.fs, path.join(o.dataDir, ERASURE_DIR));
  }

  static start(o: EraserOptions, tombstones: Tombstones): Eraser {
    const e = new Eraser(o, tombstones);
    if (tombstones.size > 0) e.schedule(0);
    return e;
  }

  /** Sessions deleted and not yet erased. */
  pending(): string[] {
    return this.tombstones.entries().map(([sid]) => sid);
  }

  /**
   * Deletes `sid`: forgets it in the journal (after a flush), makes its
   * tombstone durable, unlinks its snapshots, and starts an erasure pass.
   * Resolves when the delete is durable (not when the erasure is complete:
   * see `whenErased`).
   */
  async delete(sid: string, beforeTombstone?: (lsn: number) => Promise<void>): Promise<void> {
    const lsn = await this.#o.journal.forget(sid);
    // (encryption: the session's data key is destroyed first, so every copy is unreadable from here on)
    await beforeTombstone?.(lsn);
    await this.tombstones.add(sid, lsn);
    await this.#o.archive?.recordDeletion(sid, lsn);
    await this.#o.snapshots.removeSession(sid);
    this.schedule(0);
  }

  /** Resolves when `sid` (or, without it, every deleted session) is erased. */
  whenErased(sid?: string): Promise<void> {
    if (sid === undefined ? this.tombstones.size === 0 : this.tombstones.get(sid) === undefined) return Promise.resolve();
    // Someone waits for the pass: its timer keeps the process alive from now on (see schedule).
    this.#timer?.ref();
    return new Promise((resolve) => this.#waiters.push({ sid, resolve }));
  }

  /** Runs a pass after `delayMs` (joins one already scheduled sooner). */
  schedule(delayMs: number): void {
    if (this.#closed) return;
    if (this.#running !== undefined) {
      this.#again = true;
      return;
    }
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.run().catch(() => undefined);
    }, delayMs);
    // Unreferenced unless a caller awaits whenErased: a pending erasure alone does not hold the process open,
    // but an awaited one must not be dropped by an event loop that sees nothing else to do (a retry after
    // recovery held the segments, or after a failure).
    if (this.#waiters.length === 0) this.#timer.unref();
  }

  /** One erasure pass now (joins a running one). Rejects with the failure, which is also published; the next pass is scheduled. */
  run(): Promise<ErasureReport> {
    this.#running ??= this.#pass().finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        this.schedule(0);
      }
    });
    return this.#running;
  }

  async #pass(): Promise<ErasureReport> {
    const started = performance.now();
    const report: ErasureReport = { sessions: [], segmentsRewritten: [], recordsErased: 0, checkpointRewritten: false, durationMs: 0 };
    const targets = new Map(this.tombstones.entries());
    if (targets.size === 0) return report;
    const { journal, fs } = this.#o;
    const isErased = (sid: string, lsn: number): boolean => {
      const t = targets.get(sid);
      return t !== undefined && lsn <= t.lsn;
    };
    try {
      // 1. Snapshots a crash left behind (the delete unlinks them; a crash may have cut it short).
      for (const sid of targets.keys()) await this.#o.snapshots.removeSession(sid, this.tombstones.get(sid)!.lsn);
      // 2. The journal: the active segment is sealed so that it can be rewritten too.
      await journal.sealActive();
      const rewritten = new Set<number>();
      const complete = await journal.exclusiveSegments(async (held) => {
        // Recovery still replays the segments as they were at open: wait for it.
        if (held) return false;
        for (const { name, id } of journal.sealedSegments()) {
          const r = await rewriteSegment(fs, journal.dir, name, this.#o.maxRecordBytes, isErased);
          if (r === undefined) continue;
          journal.adoptRewrite(id, r.header, r.size, r.moved);
          rewritten.add(id);
          report.segmentsRewritten.push(name);
          report.recordsErased += r.erased;
        }
        // The archive's copies (made before any of the rewrites above, or of a segment the journal has deleted since).
        const archive = this.#o.archive;
        if (archive !== undefined) {
          for (const [sid, t] of targets) await archive.recordDeletion(sid, t.lsn);
          const a = await archive.erase(new Set(targets.keys()), isErased);
          report.archiveSegmentsRewritten = a.segments;
          report.recordsErased += a.records;
        }
        return true;
      });
      if (!complete) {
        this.schedule(Math.min(1000, this.#o.deadlineMs / 10));
        return report;
      }
      // The persisted journal index names the old segments (sizes, salts, offsets): it goes, so that no open
      // adopts it (open would refuse it anyway, since the sizes and salts differ); the next checkpoint or a
      // clean close writes a fresh one from the journal's rewritten view.
      if (report.segmentsRewritten.length > 0) await this.#o.withCheckpoint(() => removeJournalIndex(fs, this.#o.checkpointDir));
      // Segments now holding nothing live go as usual (the oldest first).
      await journal.deleteReleasedSegments();
      // 3. The table checkpoint, without the dead sessions' entries.
      report.checkpointRewritten = await this.#o.withCheckpoint(() => this.#eraseFromCheckpoint(isErased, rewritten));
      // 4. Done: the tombstones go.
      await this.tombstones.remove(targets);
      report.sessions = [...targets.keys()].filter((sid) => this.tombstones.get(sid) === undefined);
      report.durationMs = performance.now() - started;
      this.#lastFailure = undefined;
      if (erasureChannel.hasSubscribers) erasureChannel.publish({ sessionIds: report.sessions, segmentsRewritten: report.segmentsRewritten.length, recordsErased: report.recordsErased, durationMs: report.durationMs } satisfies ErasureMessage);
      this.#notify();
      return report;
    } catch (err) {
      this.#lastFailure = err;
      if (errorChannel.hasSubscribers) errorChannel.publish({ source: 'erasure', code: (err as ArborError)?.code ?? ErrorCodes.IO_ERROR, message: `erasing deleted sessions failed (retried): ${(err as Error)?.message ?? String(err)}` } satisfies ErrorMessage);
      this.schedule(Math.min(5000, Math.max(50, this.#o.deadlineMs / 10)));
      throw err;
    }
  }

  async #eraseFromCheckpoint(isErased: (sid: string, lsn: number) => boolean, rewritten: ReadonlySet<number>): Promise<boolean> {
    const { fs, checkpointDir } = this.#o;
    const read = await readTableCheckpoint<unknown>(fs, checkpointDir);
    if ('problem' in read) {
      if (read.problem === 'no checkpoint') return false;
      // Unusable anyway (recovery would ignore it): it goes, with whatever it held.
      await fs.unlink(path.join(checkpointDir, CHECKPOINT_FILE)).catch((err: unknown) => {
        if (!hasCode(err, 'ENOENT')) throw err;
      });
      await fs.syncDir(checkpointDir);
      return true;
    }
    const kept = read.entries.filter((e) => !isErased(e.sid, e.lsn));
    if (kept.length === read.entries.length) return false;
    // The high-water mark is kept, tied to its segment's salt as it is now (a rewrite draws a new one; a segment
    // deleted since drops the mark): a rewritten segment still covers its LSN span, so the mark never reads as loss.
    const hw = read.highWater;
    const now = hw === undefined ? undefined : this.#o.journal.segmentSalt(hw.segment);
    const salt = hw !== undefined && (now === hw.salt || rewritten.has(hw.segment)) ? now : undefined;
    await writeTableCheckpoint({
      fs,
      dir: checkpointDir,
      stateSchemaVersion: read.stateSchemaVersion,
      entries: kept,
      ...(hw === undefined || salt === undefined ? {} : { highWater: hw.lsn, highWaterSegment: { id: hw.segment, salt } }),
    });
    return true;
  }

  #notify(): void {
    const still = this.#waiters;
    this.#waiters = [];
    for (const w of still) {
      if (w.sid === undefined ? this.tombstones.size === 0 : this.tombstones.get(w.sid) === undefined) w.resolve();
      else this.#waiters.push(w);
    }
  }

  /** The failure of the last pass, when it failed. */
  get lastFailure(): unknown {
    return this.#lastFailure;
  }

  /** Stops scheduling passes and waits for a running one. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
  }
}
