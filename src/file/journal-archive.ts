import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { ensureDir, hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { SEGMENT_FILE_PATTERN, decodeHead, type RecordHead } from './journal/format.ts';
import { scanSegment } from './journal/segment-scanner.ts';
import { Tombstones, rewriteSegment, type Tombstone } from './erasure.ts';

/**
 * The journal archive (`journalArchiveDir`, docs/pitr.md): every sealed
 * segment is copied here, whole and synced, before the journal may delete it,
 * so that a backup plus the archive can be replayed up to any point in time
 * (`arbor restore <backup> --to <time | lsn>`, src/ops/pitr.ts).
 *
 * Layout (one flat directory):
 *   <first-lsn>.wal        a byte copy of the sealed segment (or its erasure rewrite)
 *   <first-lsn>.meta.json  what restore and retention need without reading the segment:
 *                          its LSN and time range and the sessions it holds records of
 *   tombstones.json        sessions deleted while the archive was on, each with the
 *                          LSN up to which its records are dead (they stay erased in
 *                          every restore, whatever its --to point)
 *
 * Copy protocol: `<name>.tmp` written and fdatasynced, `<name>.meta.json.tmp`
 * too, both renamed, then one directory sync; only after that does the
 * journal unlink its segment. A crash leaves either no copy (the live
 * segment is still there and is copied again) or a whole one; `.tmp` files
 * are removed at open, and a segment whose meta file is missing gets one.
 *
 * Erasure reaches the archive: the erasure pass rewrites every archived
 * segment whose meta lists a deleted session (the same rewrite as the live
 * journal's: kept frames under a new header with the ERASED_GAPS flag), and
 * the deletion is recorded in `tombstones.json` before the delete resolves.
 */
export const ARCHIVE_META_SUFFIX = '.meta.json';
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const DAY_MS = 24 * 3_600_000;

/** What `<first-lsn>.meta.json` holds. */
export interface ArchivedSegmentMeta {
  format: 'arbor-archive-segment';
  version: 1;
  segment: string;
  firstLsn: number;
  /** the last LSN the segment covers (an erasure rewrite may cover LSNs it no longer holds) */
  lastLsn: number;
  records: number;
  /** `ts` of its first and last records (absent when it holds none) */
  firstTs?: number;
  lastTs?: number;
  bytes: number;
  /** every session with a record in it */
  sessions: string[];
  /** wall-clock ms of the copy */
  archivedAt: number;
}

export interface JournalArchiveOptions {
  fs: FileSystem;
  dir: string;
  /** archived segments whose newest record is older than this many days are removed by `prune` */
  retentionDays: number;
  maxRecordBytes: number;
  /** wall clock (injectable for tests) */
  now?: () => number;
  /** an archived segment without a meta file that does not scan clean (told at open, then left out) */
  onDamaged?: (segment: string, err: unknown) => void;
}

/** Reads a segment's heads into its meta (no payload is parsed). Throws ARBOR_CORRUPTION when it does not scan clean. */
export function describeSegment(name: string, bytes: Uint8Array, maxRecordBytes: number, archivedAt: number): ArchivedSegmentMeta {
  const sessions = new Set<string>();
  let firstTs: number | undefined;
  let lastTs: number | undefined;
  const scan = scanSegment<RecordHead>(bytes, { isLast: false, maxRecordBytes }, (head) => {
    sessions.add(head.sid);
    firstTs ??= head.ts;
    lastTs = head.ts;
  }, decodeHead);
  if (scan.header === undefined || scan.damage.length > 0) {
    const d = scan.damage[0];
    throw new ArborError(ErrorCodes.CORRUPTION, `segment ${name} does not scan clean${d === undefined ? '' : ` at offset ${d.offset} (${d.reason})`}`, { segment: name, ...(d === undefined ? {} : { offset: d.offset }) });
  }
  return {
    format: 'arbor-archive-segment',
    version: 1,
    segment: name,
    firstLsn: scan.header.firstLsn,
    lastLsn: scan.lastLsn,
    records: scan.records,
    ...(firstTs === undefined ? {} : { firstTs, lastTs: lastTs! }),
    bytes: bytes.length,
    sessions: [...sessions].sort(),
    archivedAt,
  };
}

async function writeSynced(fs: FileSystem, file: string, bytes: Uint8Array): Promise<void> {
  const handle = await fs.open(file, 'w+', FILE_MODE);
  try {
    await writeFully(handle, bytes, 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

function metaName(segment: string): string {
  return `${segment.slice(0, -'.wal'.length)}${ARCHIVE_META_SUFFIX}`;
}

/** Parses a meta file; undefined when it is not one (it is then rebuilt from the segment). */
function parseMeta(bytes: Uint8Array, segment: string): ArchivedSegmentMeta | undefined {
  try {
    const m = JSON.parse(Buffer.from(bytes).toString('utf8')) as ArchivedSegmentMeta;
    if (m?.format !== 'arbor-archive-segment' || m.segment !== segment || !Number.isSafeInteger(m.firstLsn) || !Number.isSafeInteger(m.lastLsn) || !Array.isArray(m.sessions)) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/** Reads the archive's segments and metas (read-only: for restore and tools). */
export async function readArchive(fs: FileSystem, dir: string, maxRecordBytes: number): Promise<{ metas: ArchivedSegmentMeta[]; deletions: [string, Tombstone][] }> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ArborError(ErrorCodes.USAGE, `journal archive ${dir}: no such directory`, { option: 'archiveDir', archiveDir: dir });
    throw err;
  }
  const metas: ArchivedSegmentMeta[] = [];
  const set = new Set(names);
  for (const name of names.filter((n) => SEGMENT_FILE_PATTERN.test(n)).sort()) {
    const mName = metaName(name);
    let meta = set.has(mName) ? parseMeta(await fs.readFile(path.join(dir, mName)), name) : undefined;
    meta ??= describeSegment(name, await fs.readFile(path.join(dir, name)), maxRecordBytes, 0);
    metas.push(meta);
  }
  const deletions = (await Tombstones.open(fs, dir)).entries();
  return { metas, deletions };
}

/** The archive of one journal (see the module comment). */
export class JournalArchive {
  readonly #o: Required<Omit<JournalArchiveOptions, 'onDamaged'>>;
  /** archived segments by name, oldest first when sorted */
  readonly #metas = new Map<string, ArchivedSegmentMeta>();
  readonly #deletions: Tombstones;
  #timer: NodeJS.Timeout | undefined;

  private constructor(o: Required<Omit<JournalArchiveOptions, 'onDamaged'>>, deletions: Tombstones) {
    this.#o = o;
    this.#deletions = deletions;
  }

  /** Opens (creating) the archive directory: removes temp files left by a crash, reads every meta (rebuilding missing ones). */
  static async open(options: JournalArchiveOptions): Promise<JournalArchive> {
    const o = { now: Date.now, ...options };
    const { fs, dir } = o;
    await ensureDir(fs, dir, DIR_MODE);
    const names = await fs.readdir(dir);
    let removed = false;
    for (const name of names) {
      if (name.endsWith('.tmp')) {
        await fs.unlink(path.join(dir, name));
        removed = true;
      }
    }
    if (removed) await fs.syncDir(dir);
    const archive = new JournalArchive(o, await Tombstones.open(fs, dir));
    const set = new Set(names);
    let rebuilt = false;
    for (const name of names.filter((n) => SEGMENT_FILE_PATTERN.test(n)).sort()) {
      const mName = metaName(name);
      let meta = set.has(mName) ? parseMeta(await fs.readFile(path.join(dir, mName)), name) : undefined;
      if (meta === undefined) {
        try {
          meta = describeSegment(name, await fs.readFile(path.join(dir, name)), o.maxRecordBytes, o.now());
        } catch (err) {
          // A damaged copy does not stop the store: it is not counted as archived (the journal copies the
          // segment again while it still holds it), and a restore through it refuses, naming the file.
          options.onDamaged?.(name, err);
          continue;
        }
        await writeSynced(fs, path.join(dir, mName), Buffer.from(JSON.stringify(meta)));
        rebuilt = true;
      }
      archive.#metas.set(name, meta);
    }
    if (rebuilt) await fs.syncDir(dir);
    return archive;
  }

  get dir(): string {
    return this.#o.dir;
  }

  /** Whether the segment is archived (whole and synced). */
  has(name: string): boolean {
    return this.#metas.has(name);
  }

  /** Archived segments' metas, oldest first. */
  segments(): ArchivedSegmentMeta[] {
    return [...this.#metas.keys()].sort().map((n) => this.#metas.get(n)!);
  }

  /** Deleted sessions recorded in the archive. */
  deletions(): [string, Tombstone][] {
    return this.#deletions.entries();
  }

  /**
   * Copies the sealed segment `name` of `journalDir` into the archive, durably,
   * unless it is there already. Resolves once the copy and the archive's
   * directory entry are synced: only then may the journal delete its segment.
   */
  async ensure(journalDir: string, name: string): Promise<boolean> {
    if (this.#metas.has(name)) return false;
    const { fs, dir } = this.#o;
    const bytes = await fs.readFile(path.join(journalDir, name));
    const meta = describeSegment(name, bytes, this.#o.maxRecordBytes, this.#o.now());
    const seg = path.join(dir, name);
    const mFile = path.join(dir, metaName(name));
    await writeSynced(fs, `${seg}.tmp`, bytes);
    await writeSynced(fs, `${mFile}.tmp`, Buffer.from(JSON.stringify(meta)));
    await fs.rename(`${seg}.tmp`, seg);
    await fs.rename(`${mFile}.tmp`, mFile);
    await fs.syncDir(dir);
    this.#metas.set(name, meta);
    return true;
  }

  /** Records a deleted session (durably) so that no restore from this archive brings it back. */
  async recordDeletion(sid: string, lsn: number): Promise<void> {
    if ((this.#deletions.get(sid)?.lsn ?? -1) >= lsn) return;
    await this.#deletions.add(sid, lsn);
  }

  /**
   * Rewrites every archived segment holding a record `isErased` names (the
   * sessions of `sids`), without those records; returns the segments rewritten
   * and the records erased.
   */
  async erase(sids: ReadonlySet<string>, isErased: (sid: string, lsn: number) => boolean): Promise<{ segments: string[]; records: number }> {
    const { fs, dir } = this.#o;
    const out = { segments: [] as string[], records: 0 };
    for (const meta of this.segments()) {
      if (!meta.sessions.some((s) => sids.has(s))) continue;
      const r = await rewriteSegment(fs, dir, meta.segment, this.#o.maxRecordBytes, isErased);
      if (r === undefined) continue;
      out.segments.push(meta.segment);
      out.records += r.erased;
      const next = describeSegment(meta.segment, await fs.readFile(path.join(dir, meta.segment)), this.#o.maxRecordBytes, meta.archivedAt);
      const mFile = path.join(dir, metaName(meta.segment));
      await writeSynced(fs, `${mFile}.tmp`, Buffer.from(JSON.stringify(next)));
      await fs.rename(`${mFile}.tmp`, mFile);
      await fs.syncDir(dir);
      this.#metas.set(meta.segment, next);
    }
    return out;
  }

  /**
   * Retention: removes archived segments whose newest record (or, without
   * records, whose copy) is older than `journalArchiveRetentionDays` at
   * `now`, oldest first, stopping at the first one that is kept (so the
   * archive stays a contiguous run of the log). `keep` spares segments (the
   * journal still holds them: they would only be copied again). Deletion
   * records older than the cut whose LSN lies before the oldest kept segment
   * go too: no restore through this archive can start before it.
   */
  async prune(now = this.#o.now(), keep: (name: string) => boolean = () => false): Promise<{ removed: string[] }> {
    const { fs, dir } = this.#o;
    const cutoff = now - this.#o.retentionDays * DAY_MS;
    const removed: string[] = [];
    for (const meta of this.segments()) {
      const age = meta.lastTs ?? meta.archivedAt;
      if (age >= cutoff || keep(meta.segment)) break;
      // The meta first: a crash between the two leaves a segment whose meta is rebuilt at open, never a meta without its segment.
      await fs.unlink(path.join(dir, metaName(meta.segment))).catch((err: unknown) => {
        if (!hasCode(err, 'ENOENT')) throw err;
      });
      await fs.unlink(path.join(dir, meta.segment));
      this.#metas.delete(meta.segment);
      removed.push(meta.segment);
    }
    if (removed.length > 0) await fs.syncDir(dir);
    const oldest = this.segments()[0]?.firstLsn ?? Number.POSITIVE_INFINITY;
    const stale = new Map(this.#deletions.entries().filter(([, t]) => t.at < cutoff && t.lsn < oldest));
    if (stale.size > 0) await this.#deletions.remove(stale);
    return { removed };
  }

  /** Runs `prune` every `intervalMs` in the background (unreferenced timer); failures go to `onError`. */
  startRetention(intervalMs: number, keep: (name: string) => boolean, onError: (err: unknown) => void, run: <T>(op: () => Promise<T>) => Promise<T>): void {
    if (this.#timer !== undefined) return;
    const tick = (): void => {
      void run(() => this.prune(this.#o.now(), keep)).catch(onError);
    };
    this.#timer = setInterval(tick, intervalMs);
    this.#timer.unref();
    tick();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
