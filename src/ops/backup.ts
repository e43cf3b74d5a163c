import { createHash, randomUUID } from 'node:crypto';
import { rmdir } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { posix as path } from 'node:path';
import { SEGMENT_FILE_PATTERN } from '../file/journal/format.ts';
import { scanSegment } from '../file/journal/segment-scanner.ts';
import { DEFAULT_STORE_OPTIONS } from '../file/options.ts';
import { decodeSnapshotHeader } from '../backend/snapshot-codec.ts';
import { ensureDir, hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { exists, listDir, readIfPresent, resolveLayout, type LayoutOptions, type ProgressFn } from './layout.ts';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { RESTORE_MARKER_FILE, restoreNoticeText, writeRestoreMarker, type RestoreMarker } from '../file/restore-marker.ts';
import { SNAPSHOT_FILE, verifyDataDir, type VerifyReport } from './verify.ts';
import { ERASURE_DIR, TOMBSTONE_FILE } from '../file/erasure.ts';
import { erasedUpTo, KEYS_DIR, KEYSTORE_FILE, readKeyStoreFile } from '../file/keystore.ts';

/** The one file of `<dataDir>/erasure/` a backup carries: deletions whose erasure was not complete when it was taken. */
export const TOMBSTONE_PATH = `${ERASURE_DIR}/${TOMBSTONE_FILE}`;

/**
 * Online backup and restore. docs/backup.md states the guarantees and the
 * manifest format; this is the argument for them.
 *
 * The source may be in use by a server (which holds the lock; the backup does
 * not take it). What the server does meanwhile:
 *  (1) it appends to the newest segment only; a sealed segment never changes,
 *      and a segment is sealed once a newer one exists;
 *  (2) it deletes segments oldest first, each only after every record in it is
 *      covered by a durable snapshot; the newest segment is never deleted;
 *  (3) snapshots appear whole (temp file, rename) and are deleted only by
 *      retention, which keeps the newest ones of each session.
 *
 * T0 is the moment the backup starts. Every event acknowledged before T0 is
 * either in a segment listed at T0 (within the bytes written by then), or was
 * released by a snapshot durable before it.
 *
 * Journal pass: list the segments after T0 and copy them oldest first. If one
 * vanished (2), every older one is gone too and covered by snapshots: the
 * copies made so far are dropped, so the copied journal is a contiguous
 * suffix of the log. Sealed segments are copied whole (1); the newest one is
 * copied as far as it was written when read (at least as far as at T0), and a
 * torn frame at its end (a write in progress) is cut off: it was never
 * acknowledged before T0.
 *
 * Snapshot pass, after the journal pass: list and copy every snapshot. A
 * record missing from the copied journal was released by a snapshot before
 * the deletion we saw, so before this listing; by (3) that snapshot, or a
 * newer one of the same session, is listed. If the newest listed snapshot of
 * a session vanished before it was copied, a newer one exists: list again and
 * copy what is new, until the newest of every session was copied. A snapshot
 * newer than the copied journal is fine: recovery starts from it.
 *
 * Then the manifest (every file's path, size and sha256, and T0) is written
 * last, durably: a destination without MANIFEST.json is not a backup.
 */

export const MANIFEST_FILE = 'MANIFEST.json';
export const MANIFEST_FORMAT = 'arbor-backup';
export const MANIFEST_VERSION = 1;

export interface ManifestFile {
  /** `journals/<segment>` or `snapshots/<snapshot>` */
  path: string;
  bytes: number;
  sha256: string;
}

export interface BackupManifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  backupId: string;
  /** T0: every event acknowledged before this time is in the backup */
  startedAt: string;
  startedAtMs: number;
  finishedAt: string;
  files: ManifestFile[];
  journal: { segments: number; firstLsn?: number; lastLsn?: number; trimmedTornTail?: { path: string; offset: number; bytes: number } };
  totals: { files: number; bytes: number };
  /**
   * The source was encrypted at rest: the backup holds ciphertext and NOT the
   * key store (docs/encryption.md); a restore takes the live key store, so a
   * session deleted since (its key destroyed) stays unreadable.
   */
  encrypted?: { masterKeyId: string };
}

export interface BackupResult {
  dest: string;
  manifest: BackupManifest;
  /** how often the journal or snapshot listing had to be taken again because files vanished under the copy */
  relists: { journal: number; snapshots: number };
  /** segments copied and then dropped because a later one was deleted meanwhile (all covered by snapshots) */
  droppedSegments: string[];
  /** snapshots that were pruned by the server before they could be copied */
  vanishedSnapshots: string[];
  warnings: string[];
  durationMs: number;
  bytesPerSec: number;
}

export interface BackupOptions extends LayoutOptions {
  dest: string;
  /** the destination's filesystem (default: the source's) */
  destFs?: FileSystem;
  maxEventBytes?: number;
  /** listings retried before giving up when files keep vanishing (default 50) */
  maxRelists?: number;
  onProgress?: ProgressFn;
  /** test hook: called after each file is copied (lets a test interleave server work deterministically) */
  afterCopy?: (relativePath: string) => Promise<void> | void;
}

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * Refuses a restore target whose data, journal or snapshot directory (the latter two when given
 * apart) exists and is not empty; returns the ones that do not exist yet, which a failed restore
 * removes again.
 */
export async function emptyTargets(fs: FileSystem, layout: { dataDir: string; journalDir: string; snapshotDir: string }, options: { journalDir?: string | undefined; snapshotDir?: string | undefined }): Promise<string[]> {
  const { dataDir, journalDir, snapshotDir } = layout;
  await assertEmptyTarget(fs, dataDir, 'data directory', 'dataDir');
  if (options.journalDir !== undefined) await assertEmptyTarget(fs, journalDir, 'journal directory', 'journalDir');
  if (options.snapshotDir !== undefined) await assertEmptyTarget(fs, snapshotDir, 'snapshot directory', 'snapshotDir');
  const createdDirs: string[] = [];
  for (const d of [dataDir, journalDir, snapshotDir]) if (!(await exists(fs, d))) createdDirs.push(d);
  return createdDirs;
}

/** Refuses a destination that exists and is not an empty directory. */
export async function assertEmptyTarget(fs: FileSystem, dir: string, what: string, option: string): Promise<void> {
  let entries: string[];
  try {
    const st = await fs.stat(dir);
    if (!st.isDirectory) throw new ArborError(ErrorCodes.OPS_FAILED, `${what} ${dir} exists and is not a directory`, { option, [option]: dir });
    entries = await fs.readdir(dir);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  if (entries.length > 0) {
    throw new ArborError(ErrorCodes.OPS_FAILED, `${what} ${dir} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}); it must be empty or not exist`, { option, [option]: dir });
  }
}

export async function writeDurably(fs: FileSystem, file: string, data: Uint8Array): Promise<void> {
  const handle = await fs.open(file, 'w+', FILE_MODE);
  try {
    await writeFully(handle, data, 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Copies a data directory's journal and snapshots into `dest` (new or empty) while a server may be running on it. */
export async function backupDataDir(options: BackupOptions): Promise<BackupResult> {
  const startedAtMs = Date.now();
  const t0 = performance.now();
  const { fs, journalDir, snapshotDir, dataDir } = resolveLayout(options);
  const dfs = options.destFs ?? fs;
  const dest = options.dest;
  const maxRelists = options.maxRelists ?? 50;
  const maxRecordBytes = options.maxEventBytes ?? DEFAULT_STORE_OPTIONS.maxEventBytes;
  if (!(await exists(fs, journalDir)) && !(await exists(fs, snapshotDir))) {
    throw new ArborError(ErrorCodes.USAGE, `--data-dir ${dataDir}: no journals/ or snapshots/ directory there; nothing to back up`, { option: 'dataDir', dataDir });
  }
  if (dfs === fs) {
    const inside = (child: string, parent: string): boolean => {
      const rel = relative(resolve(parent), resolve(child));
      return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
    };
    for (const d of [journalDir, snapshotDir]) {
      if (inside(dest, d) || inside(d, dest)) throw new ArborError(ErrorCodes.USAGE, `backup destination ${dest} overlaps ${d}: choose a directory outside the data directory's journal and snapshot directories`, { option: 'dest', dest });
    }
  }
  await assertEmptyTarget(dfs, dest, 'backup destination', 'dest');
  await ensureDir(dfs, dest, DIR_MODE);
  const destJournals = path.join(dest, 'journals');
  const destSnapshots = path.join(dest, 'snapshots');
  await ensureDir(dfs, destJournals, DIR_MODE);
  await ensureDir(dfs, destSnapshots, DIR_MODE);

  const warnings: string[] = [];
  let bytesDone = 0;
  let bytesTotal = 0;
  const progress = (n: number): void => {
    bytesDone += n;
    options.onProgress?.(bytesDone, Math.max(bytesTotal, bytesDone));
  };
  const estimate = async (dir: string, names: string[]): Promise<void> => {
    for (const n of names) {
      try {
        bytesTotal += (await fs.stat(path.join(dir, n))).size;
      } catch {
        // vanished: counted when it is not copied
      }
    }
  };

  // ---- journal pass ----
  let journalFiles: (ManifestFile & { name: string })[] = [];
  const droppedSegments: string[] = [];
  let trimmed: BackupManifest['journal']['trimmedTornTail'];
  let journalRelists = 0;
  let lastLsn: number | undefined;
  for (;;) {
    const names = (await listDir(fs, journalDir)).filter((n) => SEGMENT_FILE_PATTERN.test(n));
    if (journalRelists === 0) await estimate(journalDir, names);
    journalFiles = [];
    trimmed = undefined;
    lastLsn = undefined;
    for (let i = 0; i < names.length; i += 1) {
      const name = names[i]!;
      let bytes = await readIfPresent(fs, path.join(journalDir, name));
      if (bytes === undefined) {
        // Deleted: so is every older segment, all covered by snapshots. Keep the copy a contiguous suffix of the log.
        for (const f of journalFiles) {
          await dfs.unlink(path.join(destJournals, f.name));
          droppedSegments.push(f.name);
        }
        journalFiles = [];
        continue;
      }
      if (i === names.length - 1) {
        // The newest segment may be mid-append: cut a torn frame off (never acknowledged, so never needed).
        let scan = scanSegment(bytes, { isLast: true, maxRecordBytes }, () => undefined);
        // Bad bytes in the file being appended to: read it again before believing they are damage.
        for (let again = 0; again < 2 && scan.damage.length > 0; again += 1) {
          const reread = await readIfPresent(fs, path.join(journalDir, name));
          if (reread === undefined) break;
          bytes = reread;
          scan = scanSegment(bytes, { isLast: true, maxRecordBytes }, () => undefined);
        }
        if (scan.torn !== undefined) {
          trimmed = { path: `journals/${name}`, offset: scan.torn.offset, bytes: scan.torn.bytes };
          bytes = bytes.subarray(0, scan.torn.offset);
        }
        for (const d of scan.damage) warnings.push(`source journals/${name} offset ${d.offset}: ${d.reason} (copied as it is; run arbor verify)`);
        lastLsn = scan.lastLsn;
      }
      await writeDurably(dfs, path.join(destJournals, name), bytes);
      journalFiles.push({ name, path: `journals/${name}`, bytes: bytes.length, sha256: sha256(bytes) });
      progress(bytes.length);
      await options.afterCopy?.(`journals/${name}`);
    }
    if (names.length === 0 || journalFiles.length > 0) break;
    // Every listed segment was deleted under us (the log moved on): list again.
    journalRelists += 1;
    if (journalRelists > maxRelists) throw new ArborError(ErrorCodes.OPS_FAILED, `backup of ${journalDir}: every listed segment was deleted before it could be copied, ${maxRelists} times in a row`, { journalDir });
  }
  await dfs.syncDir(destJournals);

  // ---- snapshot pass ----
  const snapFiles = new Map<string, ManifestFile>();
  const vanished = new Set<string>();
  let snapshotRelists = 0;
  /** per session, the highest seq copied */
  const copiedSeq = new Map<string, number>();
  for (;;) {
    const names = (await listDir(fs, snapshotDir)).filter((n) => SNAPSHOT_FILE.test(n));
    if (snapshotRelists === 0) await estimate(snapshotDir, names);
    const newest = new Map<string, { name: string; seq: number }>();
    for (const n of names) {
      const m = SNAPSHOT_FILE.exec(n)!;
      const seq = Number(m[2]);
      if (seq > (newest.get(m[1]!)?.seq ?? -1)) newest.set(m[1]!, { name: n, seq });
    }
    // The newest of each session first (the ones the guarantee needs), then the older ones (fallbacks).
    const newestNames = new Set([...newest.values()].map((x) => x.name));
    const order = [...names.filter((n) => newestNames.has(n)), ...names.filter((n) => !newestNames.has(n))];
    for (const name of order) {
      if (snapFiles.has(name) || vanished.has(name)) continue;
      const bytes = await readIfPresent(fs, path.join(snapshotDir, name));
      if (bytes === undefined) {
        vanished.add(name);
        continue;
      }
      const header = decodeSnapshotHeader(bytes);
      if (typeof header === 'string') warnings.push(`source snapshots/${name}: ${header} (copied as it is; run arbor verify)`);
      await writeDurably(dfs, path.join(destSnapshots, name), bytes);
      snapFiles.set(name, { path: `snapshots/${name}`, bytes: bytes.length, sha256: sha256(bytes) });
      const m = SNAPSHOT_FILE.exec(name)!;
      copiedSeq.set(m[1]!, Math.max(copiedSeq.get(m[1]!) ?? -1, Number(m[2])));
      progress(bytes.length);
      await options.afterCopy?.(`snapshots/${name}`);
    }
    // Stable once every session has a copied snapshot at least as new as the newest in this listing.
    const missing = [...newest].filter(([sid, x]) => (copiedSeq.get(sid) ?? -1) < x.seq).map(([, x]) => x.name);
    if (missing.length === 0) break;
    snapshotRelists += 1;
    if (snapshotRelists > maxRelists) {
      throw new ArborError(ErrorCodes.OPS_FAILED, `backup of ${snapshotDir}: the newest snapshots of ${missing.length} sessions kept being replaced before they could be copied (${missing.slice(0, 3).join(', ')})`, { snapshotDir });
    }
  }
  await dfs.syncDir(destSnapshots);

  // ---- deletions not erased yet: their tombstones come along, so the restored store skips those records too ----
  const extra: ManifestFile[] = [];
  const tombstones = await readIfPresent(fs, path.join(dataDir, TOMBSTONE_PATH));
  if (tombstones !== undefined) {
    await ensureDir(dfs, path.join(dest, ERASURE_DIR), DIR_MODE);
    await writeDurably(dfs, path.join(dest, TOMBSTONE_PATH), tombstones);
    await dfs.syncDir(path.join(dest, ERASURE_DIR));
    extra.push({ path: TOMBSTONE_PATH, bytes: tombstones.length, sha256: sha256(tombstones) });
  }
  const keyStore = await readKeyStoreFile(fs, dataDir);

  // ---- manifest, last ----
  const files: ManifestFile[] = [...journalFiles.map(({ path: p, bytes, sha256: h }) => ({ path: p, bytes, sha256: h })), ...[...snapFiles.values()].sort((a, b) => (a.path < b.path ? -1 : 1)), ...extra];
  const totalBytes = files.reduce((s, f) => s + f.bytes, 0);
  const firstName = journalFiles[0]?.name;
  const manifest: BackupManifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    backupId: randomUUID(),
    startedAt: new Date(startedAtMs).toISOString(),
    startedAtMs,
    finishedAt: new Date().toISOString(),
    files,
    journal: {
      segments: journalFiles.length,
      ...(firstName === undefined ? {} : { firstLsn: Number(SEGMENT_FILE_PATTERN.exec(firstName)![1]) }),
      ...(lastLsn === undefined ? {} : { lastLsn }),
      ...(trimmed === undefined ? {} : { trimmedTornTail: trimmed }),
    },
    totals: { files: files.length, bytes: totalBytes },
    ...(keyStore === undefined ? {} : { encrypted: { masterKeyId: keyStore.masterKeyId } }),
  };
  const manifestPath = path.join(dest, MANIFEST_FILE);
  await writeDurably(dfs, `${manifestPath}.tmp`, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
  await dfs.rename(`${manifestPath}.tmp`, manifestPath);
  await dfs.syncDir(dest);
  const durationMs = performance.now() - t0;
  return {
    dest,
    manifest,
    relists: { journal: journalRelists, snapshots: snapshotRelists },
    droppedSegments,
    vanishedSnapshots: [...vanished],
    warnings,
    durationMs,
    bytesPerSec: durationMs > 0 ? (totalBytes / durationMs) * 1000 : 0,
  };
}

/** Reads and checks a backup's manifest; throws ARBOR_OPS_FAILED when it is missing, ARBOR_CORRUPTION naming the file and field when it is bad. */
export async function readManifest(fs: FileSystem, src: string): Promise<BackupManifest> {
  const file = path.join(src, MANIFEST_FILE);
  let text: string;
  try {
    text = Buffer.from(await fs.readFile(file)).toString('utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT')) {
      throw new ArborError(ErrorCodes.OPS_FAILED, `${src} holds no ${MANIFEST_FILE}: not a complete Arbor backup (a backup writes its manifest last)`, { src, file });
    }
    throw err;
  }
  const bad = (field: string, why: string): ArborError => new ArborError(ErrorCodes.CORRUPTION, `backup manifest ${file}: ${field} ${why}`, { file, field });
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw bad('content', 'is not JSON');
  }
  if (typeof m !== 'object' || m === null) throw bad('content', 'is not an object');
  if (m.format !== MANIFEST_FORMAT) throw bad('format', `must be "${MANIFEST_FORMAT}"`);
  if (m.version !== MANIFEST_VERSION) throw bad('version', `${JSON.stringify(m.version)} is not supported`);
  if (typeof m.backupId !== 'string' || m.backupId.length === 0) throw bad('backupId', 'must be a non-empty string');
  if (typeof m.startedAt !== 'string' || Number.isNaN(Date.parse(m.startedAt))) throw bad('startedAt', 'must be an ISO time');
  if (typeof m.finishedAt !== 'string' || Number.isNaN(Date.parse(m.finishedAt))) throw bad('finishedAt', 'must be an ISO time');
  if (typeof m.startedAtMs !== 'number' || !Number.isSafeInteger(m.startedAtMs)) throw bad('startedAtMs', 'must be an integer');
  if (!Array.isArray(m.files)) throw bad('files', 'must be an array');
  const seen = new Set<string>();
  m.files.forEach((f: unknown, i: number) => {
    const e = f as Partial<ManifestFile> | null;
    if (typeof e !== 'object' || e === null || typeof e.path !== 'string') throw bad(`files[${i}].path`, 'must be a string');
    // Only the two directories and their own file names: a manifest can never name a path elsewhere.
    const [dir, name, ...rest] = e.path.split('/');
    const okName = e.path === TOMBSTONE_PATH || (rest.length === 0 && name !== undefined && ((dir === 'journals' && SEGMENT_FILE_PATTERN.test(name)) || (dir === 'snapshots' && SNAPSHOT_FILE.test(name))));
    if (!okName) throw bad(`files[${i}].path`, `${JSON.stringify(e.path)} is not journals/<segment>.wal or snapshots/<snapshot>.snap`);
    if (seen.has(e.path)) throw bad(`files[${i}].path`, `${e.path} is listed twice`);
    seen.add(e.path);
    if (typeof e.bytes !== 'number' || !Number.isSafeInteger(e.bytes) || e.bytes < 0) throw bad(`files[${i}].bytes`, 'must be a non-negative integer');
    if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) throw bad(`files[${i}].sha256`, 'must be 64 hex digits');
  });
  return m as unknown as BackupManifest;
}

export interface RestoreOptions extends LayoutOptions {
  src: string;
  /** the backup's filesystem (default: the target's) */
  srcFs?: FileSystem;
  maxEventBytes?: number;
  onProgress?: ProgressFn;
  /**
   * An encrypted backup: the key store to restore with (`<live dataDir>/keys/keystore.json`,
   * or a copy of it). Sessions deleted since the backup have no key in it: they are erased.
   */
  keyStore?: string;
}

export interface RestoreResult {
  dataDir: string;
  backupId: string;
  backupStartedAt: string;
  files: number;
  bytes: number;
  sessions: number;
  marker: string;
  /** Sessions in the backup whose data key was destroyed (deleted since): unreadable, reported as erased. */
  erased: string[];
  verify: VerifyReport;
  durationMs: number;
  bytesPerSec: number;
}

/**
 * A backup's manifest, and the live key store's bytes when the backup is encrypted (it holds no
 * keys of its own): refused with ARBOR_USAGE naming --key-store when they are needed and missing
 * or unreadable. What `arbor restore` and `arbor restore --to` read first.
 */
export async function readBackupHead(sfs: FileSystem, src: string, keyStore: string | undefined): Promise<{ manifest: BackupManifest; keyStoreBytes: Uint8Array | undefined }> {
  const manifest = await readManifest(sfs, src);
  if (manifest.encrypted !== undefined && keyStore === undefined) {
    throw new ArborError(ErrorCodes.USAGE, `backup ${src} is encrypted (master key id ${manifest.encrypted.masterKeyId}) and holds no keys: pass the live key store (--key-store <dataDir>/${KEYS_DIR}/${KEYSTORE_FILE})`, { option: 'keyStore' });
  }
  let keyStoreBytes: Uint8Array | undefined;
  if (keyStore !== undefined) {
    try {
      keyStoreBytes = await sfs.readFile(keyStore);
    } catch (err) {
      throw new ArborError(ErrorCodes.USAGE, `--key-store ${keyStore}: ${(err as Error).message}`, { option: 'keyStore' }, { cause: err });
    }
  }
  return { manifest, keyStoreBytes };
}

/** One file of a backup, checked against its manifest entry (size and sha256): ARBOR_CORRUPTION naming the file otherwise. */
export async function readBackupFile(sfs: FileSystem, src: string, f: ManifestFile): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await sfs.readFile(path.join(src, f.path));
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ArborError(ErrorCodes.CORRUPTION, `backup file ${f.path} listed in the manifest is missing from ${src}`, { file: f.path });
    throw err;
  }
  if (bytes.length !== f.bytes) throw new ArborError(ErrorCodes.CORRUPTION, `backup file ${f.path} is ${bytes.length} bytes, the manifest says ${f.bytes}`, { file: f.path });
  const hash = sha256(bytes);
  if (hash !== f.sha256) throw new ArborError(ErrorCodes.CORRUPTION, `backup file ${f.path}: sha256 ${hash} does not match the manifest's ${f.sha256}`, { file: f.path });
  return bytes;
}

/**
 * Restores a backup into an empty (or missing) data directory: checks the
 * manifest and every file's size and sha256 while copying, syncs everything,
 * verifies the result like `arbor verify`, then writes the restore marker
 * (RESTORED.json) so the runtime can tell each restored session's user about
 * the gap. If the manifest or a file does not check out, the files written so
 * far are removed again and it throws. Damage that verify finds in files that
 * match the manifest was in the source when it was backed up: the restore is
 * kept and `verify.ok` is false (the CLI exits 1 and lists it).
 */
export async function restoreBackup(options: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const layout = resolveLayout(options);
  const { fs, dataDir, journalDir, snapshotDir } = layout;
  const sfs = options.srcFs ?? fs;
  const { manifest, keyStoreBytes } = await readBackupHead(sfs, options.src, options.keyStore);
  const createdDirs = await emptyTargets(fs, layout, options);
  const written: string[] = [];
  const total = manifest.files.reduce((s, f) => s + f.bytes, 0);
  let done = 0;
  try {
    await ensureDir(fs, dataDir, DIR_MODE);
    await ensureDir(fs, journalDir, DIR_MODE);
    await ensureDir(fs, snapshotDir, DIR_MODE);
    for (const f of manifest.files) {
      const bytes = await readBackupFile(sfs, options.src, f);
      const [dir, name] = f.path.split('/') as [string, string];
      if (dir === ERASURE_DIR) await ensureDir(fs, path.join(dataDir, ERASURE_DIR), DIR_MODE);
      const to = dir === ERASURE_DIR ? path.join(dataDir, f.path) : path.join(dir === 'journals' ? journalDir : snapshotDir, name);
      written.push(to);
      await writeDurably(fs, to, bytes);
      done += bytes.length;
      options.onProgress?.(done, total);
    }
    await fs.syncDir(journalDir);
    await fs.syncDir(snapshotDir);
    let erasedKeys = new Map<string, number>();
    if (keyStoreBytes !== undefined) {
      await ensureDir(fs, path.join(dataDir, KEYS_DIR), DIR_MODE);
      const to = path.join(dataDir, KEYS_DIR, KEYSTORE_FILE);
      written.push(to);
      await writeDurably(fs, to, keyStoreBytes);
      await fs.syncDir(path.join(dataDir, KEYS_DIR));
      const ks = await readKeyStoreFile(fs, dataDir);
      erasedKeys = new Map(Object.entries(ks?.keys ?? {}).flatMap(([sid, e]) => (erasedUpTo(e) === undefined ? [] : [[sid, erasedUpTo(e)!] as [string, number]])));
    }
    const verify = await verifyDataDir({ ...layout, ...(options.maxEventBytes === undefined ? {} : { maxEventBytes: options.maxEventBytes }) });
    // Damage found here was in the backup's source (every file matched its sha256): the restore is
    // kept (the runtime quarantines the sessions it touches) and the caller reports verify.damage.
    const restoredAt = new Date().toISOString();
    const marker: RestoreMarker = {
      format: 'arbor-restore-marker',
      version: 1,
      backupId: manifest.backupId,
      backupStartedAt: manifest.startedAt,
      backupStartedAtMs: manifest.startedAtMs,
      backupFinishedAt: manifest.finishedAt,
      restoredAt,
      sessions: verify.sessions.filter((s) => !erasedKeys.has(s.id)).map((s) => ({ id: s.id, lastSeq: s.lastSeq })),
      notice: restoreNoticeText(manifest.startedAt),
    };
    await writeRestoreMarker(fs, dataDir, marker);
    const durationMs = performance.now() - t0;
    return {
      dataDir,
      backupId: manifest.backupId,
      backupStartedAt: manifest.startedAt,
      files: manifest.files.length,
      bytes: total,
      sessions: verify.sessions.length,
      marker: RESTORE_MARKER_FILE,
      erased: verify.sessions.filter((s) => erasedKeys.has(s.id)).map((s) => s.id),
      verify,
      durationMs,
      bytesPerSec: durationMs > 0 ? (total / durationMs) * 1000 : 0,
    };
  } catch (err) {
    // Leave the target as it was found: empty.
    for (const file of written) await fs.unlink(file).catch(() => undefined);
    await fs.syncDir(journalDir).catch(() => undefined);
    await fs.syncDir(snapshotDir).catch(() => undefined);
    // The port has no rmdir; on the real disk, remove the directories this restore created.
    if (fs.realPaths === true) for (const d of createdDirs.reverse()) await rmdir(d).catch(() => undefined);
    throw err;
  }
}
