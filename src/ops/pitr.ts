import { randomInt } from 'node:crypto';
import { rmdir } from 'node:fs/promises';
import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { decodeSnapshotHeader } from '../backend/snapshot-codec.ts';
import { ensureDir, type FileSystem } from '../storage/fs-port.ts';
import { SEGMENT_FILE_PATTERN, SEGMENT_HEADER_BYTES, decodeHead, encodeSegmentHeader, frameCrc, segmentFileName, type RecordHead } from '../file/journal/format.ts';
import { scanSegment } from '../file/journal/segment-scanner.ts';
import { readArchive } from '../file/journal-archive.ts';
import { Tombstones, ERASURE_DIR } from '../file/erasure.ts';
import { erasedUpTo, KEYS_DIR, KEYSTORE_FILE, readKeyStoreFile } from '../file/keystore.ts';
import { RESTORE_MARKER_FILE, writeRestoreMarker, type RestoreMarker } from '../file/restore-marker.ts';
import { DEFAULT_STORE_OPTIONS } from '../file/options.ts';
import { emptyTargets, readBackupFile, readBackupHead, TOMBSTONE_PATH, writeDurably, type BackupManifest, type ManifestFile } from './backup.ts';
import { exists, listDir, resolveLayout, type LayoutOptions } from './layout.ts';
import { SNAPSHOT_FILE, verifyDataDir, type VerifyReport } from './verify.ts';

/**
 * Point-in-time restore (docs/pitr.md): a backup, plus the journal archive's
 * segments (and, when given, the live journal's) replayed up to a point —
 * an ISO time or an LSN — into an empty data directory.
 *
 * 1. The backup's point P is the newest LSN it holds (its journal's last
 *    record, or the newest snapshot's LSN). A `--to` before it is refused:
 *    the backup already holds events after it.
 * 2. The chain: the backup's segments, then the archive's (preferred for a
 *    segment both hold: the backup's newest segment is a partial copy), then
 *    the live journal's, each starting where the one before ends. A segment
 *    missing in between is refused, by name (ARBOR_ARCHIVE_GAP); a point
 *    beyond the chain's end is refused with the covered range
 *    (ARBOR_RESTORE_POINT). Nothing is written before these checks pass.
 * 3. A time resolves to the last record of the log prefix whose records are
 *    all at or before it (records carry the wall-clock `ts` of their append).
 * 4. Every segment up to the point is written: records after the point are
 *    cut off, and records of deleted sessions (the archive's tombstones, the
 *    backup's, and with encryption the key store's destroyed keys) are
 *    dropped, whether the delete came before or after the point: erasure is a
 *    promise about every copy Arbor keeps, and a point-in-time restore does
 *    not take it back. A segment that lost records gets a new header (flag
 *    ERASED_GAPS with the LSN span it covers, a new salt).
 * 5. The backup's snapshots (minus deleted sessions') are copied, the key
 *    store when given; everything is synced and verified.
 * 6. The restore marker (RESTORED.json) gives the loss notice to every
 *    session that had events after the point. When the live journal was read
 *    to its end, that set is exact; without it (the archive alone) events
 *    after the archive's last segment cannot be ruled out, so every restored
 *    session gets the notice.
 */

export interface PointInTimeRestoreOptions extends LayoutOptions {
  /** the backup (written by `arbor backup`) */
  src: string;
  /** the point: an ISO 8601 time (`2026-12-04T10:15:00Z`) or an LSN (digits) */
  to: string;
  /** the journal archive (`journalArchiveDir`) */
  archiveDir: string;
  /** the live journal directory, read-only: the segments not archived yet (the newest, still being written) */
  liveJournalDir?: string | undefined;
  /** the backup's, archive's and live journal's filesystem (default: the target's) */
  srcFs?: FileSystem;
  /** an encrypted backup: the live key store (as for `restoreBackup`) */
  keyStore?: string | undefined;
  maxEventBytes?: number;
}

export interface PointInTimeRestoreResult {
  dataDir: string;
  backupId: string;
  backupStartedAt: string;
  /** the point restored to: its LSN, and the time of its newest restored record */
  point: { requested: string; lsn: number; at: string };
  /** what the backup and the segments found could restore to: LSNs and times */
  covered: { from: { lsn: number; at: string }; to: { lsn: number; at: string } };
  /** the segments written, with where each came from */
  segments: { name: string; source: 'backup' | 'archive' | 'live'; records: number }[];
  sessions: number;
  /** sessions with events after the point (not restored) */
  cutOff: string[];
  /** sessions that get the loss notice */
  noticed: string[];
  /** true when the live journal was read to its end: `noticed` is then exactly `cutOff` */
  exact: boolean;
  /** sessions recorded as deleted (the archive's tombstones, the backup's, destroyed data keys): none of their records up to the delete is restored */
  erased: string[];
  /** of those, the ones whose records were in what this restore read, and were left out here */
  erasedHere: string[];
  marker: string;
  verify: VerifyReport;
  durationMs: number;
}

type Source = 'backup' | 'archive' | 'live';

interface Candidate {
  name: string;
  firstLsn: number;
  source: Source;
  file: string;
  /** a backup file: checked against its manifest entry on every read */
  manifest?: ManifestFile;
  /** the newest backup segment (copied while it was written: possibly partial) or the live journal's newest (torn tail allowed) */
  isNewest: boolean;
}

interface Head {
  lsn: number;
  sid: string;
  ts: number;
  offset: number;
  frameBytes: number;
}

interface Link {
  cand: Candidate;
  heads: Head[];
  /** the last LSN the segment covers */
  lastLsn: number;
}

const FILE_MODE_DIR = 0o700;

function pointError(to: string, why: string, covered: PointInTimeRestoreResult['covered']): ArborError {
  return new ArborError(ErrorCodes.RESTORE_POINT, `--to ${to} ${why}; this backup and archive cover LSN ${covered.from.lsn} (${covered.from.at}) to LSN ${covered.to.lsn} (${covered.to.at})`, { option: 'to', to, covered });
}

/** Restores `src` and the archive up to `to` into an empty data directory (see the module comment). */
export async function restoreToPoint(options: PointInTimeRestoreOptions): Promise<PointInTimeRestoreResult> {
  const t0 = performance.now();
  const layout = resolveLayout(options);
  const { fs, dataDir, journalDir, snapshotDir } = layout;
  const sfs = options.srcFs ?? fs;
  const maxRecordBytes = options.maxEventBytes ?? DEFAULT_STORE_OPTIONS.maxEventBytes;
  const to = String(options.to).trim();
  const asLsn = /^\d+$/.test(to) ? Number(to) : undefined;
  const asTime = asLsn === undefined && /^\d{4}-\d{2}-\d{2}T/.test(to) ? Date.parse(to) : undefined;
  if ((asLsn === undefined || !Number.isSafeInteger(asLsn)) && (asTime === undefined || Number.isNaN(asTime))) {
    throw new ArborError(ErrorCodes.USAGE, `--to ${JSON.stringify(to)} is neither an ISO 8601 time (2026-12-04T10:15:00Z) nor an LSN (digits)`, { option: 'to', to });
  }
  const { manifest, keyStoreBytes } = await readBackupHead(sfs, options.src, options.keyStore);
  const readBackup = (f: ManifestFile): Promise<Uint8Array> => readBackupFile(sfs, options.src, f);
  const read = (c: Candidate): Promise<Uint8Array> => (c.manifest !== undefined ? readBackup(c.manifest) : sfs.readFile(c.file));

  // ---- deleted sessions: they stay erased, whatever the point ----
  const archive = await readArchive(sfs, options.archiveDir, maxRecordBytes);
  const erasedMap = new Map<string, number>();
  const addErased = (sid: string, lsn: number): void => {
    erasedMap.set(sid, Math.max(lsn, erasedMap.get(sid) ?? 0));
  };
  for (const [sid, t] of archive.deletions) addErased(sid, t.lsn);
  const tombFile = manifest.files.find((f) => f.path === TOMBSTONE_PATH);
  if (tombFile !== undefined) {
    await readBackup(tombFile);
    for (const [sid, t] of (await Tombstones.open(sfs, path.join(options.src, ERASURE_DIR))).entries()) addErased(sid, t.lsn);
  }
  if (keyStoreBytes !== undefined) {
    try {
      const ks = JSON.parse(Buffer.from(keyStoreBytes).toString('utf8')) as { keys?: Record<string, Parameters<typeof erasedUpTo>[0]> };
      for (const [sid, e] of Object.entries(ks.keys ?? {})) {
        const upTo = erasedUpTo(e);
        if (upTo !== undefined) addErased(sid, upTo);
      }
    } catch {
      throw new ArborError(ErrorCodes.USAGE, `--key-store ${options.keyStore} is not a key store (not JSON)`, { option: 'keyStore' });
    }
  }
  const isErased = (sid: string, lsn: number): boolean => {
    const upTo = erasedMap.get(sid);
    return upTo !== undefined && lsn <= upTo;
  };

  // ---- the backup's point ----
  const backupSegments = manifest.files.filter((f) => f.path.startsWith('journals/')).sort((a, b) => a.path.localeCompare(b.path));
  const backupSnapshots = manifest.files.filter((f) => f.path.startsWith('snapshots/'));
  let backupPoint = manifest.journal.lastLsn ?? 0;
  for (const f of backupSnapshots) {
    const meta = decodeSnapshotHeader(await readBackup(f));
    if (typeof meta === 'string') throw new ArborError(ErrorCodes.CORRUPTION, `backup file ${f.path}: ${meta}`, { file: f.path });
    backupPoint = Math.max(backupPoint, meta.lsn);
  }

  // ---- the candidates, by first LSN: the archive's copy first, then the live journal's, then the backup's ----
  const byFirst = new Map<number, Candidate>();
  const offer = (c: Candidate): void => {
    if (!byFirst.has(c.firstLsn)) byFirst.set(c.firstLsn, c);
  };
  for (const m of archive.metas) offer({ name: m.segment, firstLsn: m.firstLsn, source: 'archive', file: path.join(options.archiveDir, m.segment), isNewest: false });
  const liveNames = options.liveJournalDir === undefined ? [] : (await listDir(sfs, options.liveJournalDir)).filter((n) => SEGMENT_FILE_PATTERN.test(n));
  if (options.liveJournalDir !== undefined && !(await exists(sfs, options.liveJournalDir))) {
    throw new ArborError(ErrorCodes.USAGE, `--live-journal ${options.liveJournalDir}: no such directory`, { option: 'liveJournalDir' });
  }
  liveNames.forEach((n, i) => offer({ name: n, firstLsn: Number(n.slice(0, 20)), source: 'live', file: path.join(options.liveJournalDir!, n), isNewest: i === liveNames.length - 1 }));
  backupSegments.forEach((f, i) => {
    const name = f.path.slice('journals/'.length);
    offer({ name, firstLsn: Number(name.slice(0, 20)), source: 'backup', file: path.join(options.src, f.path), manifest: f, isNewest: i === backupSegments.length - 1 });
  });

  // ---- the chain: from the backup's first segment, each segment starting where the previous one ended ----
  const chain: Link[] = [];
  const startLsn = backupSegments.length > 0 ? Number(backupSegments[0]!.path.slice('journals/'.length, 'journals/'.length + 20)) : backupPoint + 1;
  let next = startLsn;
  let gap: { segment: string; why: string } | undefined;
  for (;;) {
    const cand = byFirst.get(next);
    if (cand === undefined) {
      const later = [...byFirst.keys()].filter((k) => k > next).sort((a, b) => a - b)[0];
      if (later !== undefined) {
        const prev = chain.at(-1);
        gap =
          prev !== undefined && prev.cand.source === 'backup' && prev.cand.isNewest
            ? { segment: prev.cand.name, why: `the backup holds ${prev.cand.name} only up to LSN ${prev.lastLsn} (it was being written), and the archive has no complete copy of it` }
            : { segment: segmentFileName(next), why: `no segment starting at LSN ${next} is in the archive${options.liveJournalDir === undefined ? '' : ' or the live journal'} (the next one found starts at LSN ${later})` };
      }
      break;
    }
    const bytes = await read(cand);
    const heads: Head[] = [];
    const scan = scanSegment<RecordHead>(bytes, { isLast: cand.source === 'live' && cand.isNewest, maxRecordBytes }, (h, offset, frameBytes) => heads.push({ lsn: h.lsn, sid: h.sid, ts: h.ts, offset, frameBytes }), decodeHead);
    if (scan.header === undefined || scan.damage.length > 0) {
      const d = scan.damage[0];
      throw new ArborError(ErrorCodes.CORRUPTION, `${cand.source} segment ${cand.file} is damaged${d === undefined ? '' : ` at offset ${d.offset} (${d.reason})`}; run arbor verify on it`, { file: cand.file, ...(d === undefined ? {} : { offset: d.offset }) });
    }
    chain.push({ cand, heads, lastLsn: scan.lastLsn });
    // A segment without records (the live journal's, just started) ends the chain.
    if (scan.lastLsn < cand.firstLsn) break;
    next = scan.lastLsn + 1;
  }

  // ---- the covered range, and the point ----
  const after = chain.flatMap((l) => l.heads).filter((h) => h.lsn > backupPoint);
  const upto = chain.flatMap((l) => l.heads).filter((h) => h.lsn <= backupPoint);
  const fromMs = Math.max(manifest.startedAtMs, ...upto.map((h) => h.ts));
  const chainEnd = Math.max(backupPoint, chain.at(-1)?.lastLsn ?? 0);
  const readToLiveEnd = gap === undefined && chain.at(-1)?.cand.source === 'live' && chain.at(-1)!.cand.isNewest;
  const lastTs = Math.max(fromMs, ...after.map((h) => h.ts));
  const iso = (ms: number): string => new Date(ms).toISOString();
  const covered = { from: { lsn: backupPoint, at: iso(fromMs) }, to: { lsn: chainEnd, at: iso(lastTs) } };
  let pointLsn: number;
  if (asLsn !== undefined) {
    if (asLsn < backupPoint) throw pointError(to, `is before the backup's own point (LSN ${backupPoint}: the backup already holds events after it)`, covered);
    if (asLsn > chainEnd) {
      if (gap !== undefined) throw new ArborError(ErrorCodes.ARCHIVE_GAP, `cannot restore to LSN ${asLsn}: ${gap.why}; missing segment ${gap.segment}`, { option: 'to', to, segment: gap.segment, covered });
      throw pointError(to, 'is beyond what the archive covers', covered);
    }
    pointLsn = asLsn;
  } else {
    const ms = asTime!;
    if (ms < fromMs) throw pointError(to, `is before the backup's own point (${iso(fromMs)}: the backup already holds events up to then)`, covered);
    if (ms > lastTs && !readToLiveEnd) {
      if (gap !== undefined) throw new ArborError(ErrorCodes.ARCHIVE_GAP, `cannot restore to ${to}: ${gap.why}; missing segment ${gap.segment}`, { option: 'to', to, segment: gap.segment, covered });
      throw pointError(to, `is beyond what the archive covers${options.liveJournalDir === undefined ? ' (give the live journal with --live-journal to restore past its last archived segment)' : ''}`, covered);
    }
    pointLsn = backupPoint;
    for (const h of after) {
      if (h.ts > ms) break;
      pointLsn = h.lsn;
    }
  }
  const pointAt = Math.max(fromMs, ...after.filter((h) => h.lsn <= pointLsn).map((h) => h.ts));

  // ---- writing: nothing was written before this point ----
  const createdDirs = await emptyTargets(fs, layout, options);
  const written: string[] = [];
  const erasedSeen = new Set<string>();
  try {
    await ensureDir(fs, dataDir, FILE_MODE_DIR);
    await ensureDir(fs, journalDir, FILE_MODE_DIR);
    await ensureDir(fs, snapshotDir, FILE_MODE_DIR);
    const segments: PointInTimeRestoreResult['segments'] = [];
    for (const link of chain) {
      if (link.cand.firstLsn > pointLsn) break;
      const keep = link.heads.filter((h) => {
        if (h.lsn > pointLsn) return false;
        if (isErased(h.sid, h.lsn)) {
          erasedSeen.add(h.sid);
          return false;
        }
        return true;
      });
      const covers = Math.min(link.lastLsn, pointLsn);
      const inSegment = link.heads.filter((h) => h.lsn <= pointLsn).length;
      const bytes = await read(link.cand);
      const lastKept = keep.at(-1);
      let out: Uint8Array;
      if (keep.length === inSegment && (lastKept?.lsn ?? link.cand.firstLsn - 1) === covers) {
        // Whole frames up to the point, none dropped: the bytes as they are (cut after the last kept frame).
        out = bytes.subarray(0, lastKept === undefined ? SEGMENT_HEADER_BYTES : lastKept.offset + lastKept.frameBytes);
      } else {
        const { bytes: header, header: h } = encodeSegmentHeader(link.cand.firstLsn, randomInt(0, 2 ** 32 - 1), { lsnSpan: covers - link.cand.firstLsn + 1 });
        const buf = Buffer.alloc(SEGMENT_HEADER_BYTES + keep.reduce((s, k) => s + k.frameBytes, 0));
        header.copy(buf, 0);
        const src = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
        let at = SEGMENT_HEADER_BYTES;
        for (const k of keep) {
          src.copy(buf, at, k.offset, k.offset + k.frameBytes);
          buf.writeUInt32LE(frameCrc(h.seed, buf.subarray(at, at + k.frameBytes)), at);
          at += k.frameBytes;
        }
        out = buf;
      }
      const file = path.join(journalDir, link.cand.name);
      written.push(file);
      await writeDurably(fs, file, out);
      segments.push({ name: link.cand.name, source: link.cand.source, records: keep.length });
    }
    if (segments.length === 0) {
      // No record to replay: an empty segment still fixes where the restored journal's LSNs continue.
      const file = path.join(journalDir, segmentFileName(pointLsn + 1));
      written.push(file);
      await writeDurably(fs, file, encodeSegmentHeader(pointLsn + 1, randomInt(0, 2 ** 32 - 1)).bytes);
    }
    await fs.syncDir(journalDir);
    for (const f of backupSnapshots) {
      const bytes = await readBackup(f);
      const meta = decodeSnapshotHeader(bytes);
      const name = f.path.slice('snapshots/'.length);
      const sid = SNAPSHOT_FILE.exec(name)?.[1];
      if (typeof meta !== 'string' && sid !== undefined && isErased(sid, meta.lsn)) {
        erasedSeen.add(sid);
        continue;
      }
      const file = path.join(snapshotDir, name);
      written.push(file);
      await writeDurably(fs, file, bytes);
    }
    await fs.syncDir(snapshotDir);
    if (keyStoreBytes !== undefined) {
      await ensureDir(fs, path.join(dataDir, KEYS_DIR), FILE_MODE_DIR);
      const file = path.join(dataDir, KEYS_DIR, KEYSTORE_FILE);
      written.push(file);
      await writeDurably(fs, file, keyStoreBytes);
      await fs.syncDir(path.join(dataDir, KEYS_DIR));
      await readKeyStoreFile(fs, dataDir);
    }
    await fs.syncDir(dataDir);
    const verify = await verifyDataDir({ ...layout, maxEventBytes: maxRecordBytes });
    const restored = verify.sessions;
    const cutOff = [...new Set(after.filter((h) => h.lsn > pointLsn && !isErased(h.sid, h.lsn)).map((h) => h.sid))].sort();
    const exact = readToLiveEnd === true;
    const noticedSet = new Set(exact ? cutOff : restored.map((s) => s.id));
    const noticed = restored.filter((s) => noticedSet.has(s.id));
    const at = iso(pointAt);
    const marker: RestoreMarker & { pointInTime: { backupId: string; lsn: number; at: string; requested: string } } = {
      format: 'arbor-restore-marker',
      version: 1,
      backupId: `pitr-${manifest.backupId}-${pointLsn}`,
      backupStartedAt: at,
      backupStartedAtMs: pointAt,
      backupFinishedAt: manifest.finishedAt,
      restoredAt: new Date().toISOString(),
      sessions: noticed.map((s) => ({ id: s.id, lastSeq: s.lastSeq })),
      notice: pitrNoticeText(at, pointLsn),
      pointInTime: { backupId: manifest.backupId, lsn: pointLsn, at, requested: to },
    };
    await writeRestoreMarker(fs, dataDir, marker);
    return {
      dataDir,
      backupId: manifest.backupId,
      backupStartedAt: manifest.startedAt,
      point: { requested: to, lsn: pointLsn, at },
      covered,
      segments,
      sessions: verify.sessions.length,
      cutOff,
      noticed: noticed.map((s) => s.id),
      exact,
      erased: [...erasedMap.keys()].sort(),
      erasedHere: [...erasedSeen].sort(),
      marker: RESTORE_MARKER_FILE,
      verify,
      durationMs: performance.now() - t0,
    };
  } catch (err) {
    for (const file of written) await fs.unlink(file).catch(() => undefined);
    await fs.syncDir(journalDir).catch(() => undefined);
    await fs.syncDir(snapshotDir).catch(() => undefined);
    if (fs.realPaths === true) for (const d of [path.join(dataDir, KEYS_DIR), ...createdDirs.reverse()]) await rmdir(d).catch(() => undefined);
    throw err;
  }
}

/** The loss notice of a point-in-time restore. */
export function pitrNoticeText(at: string, lsn: number): string {
  return `⚠️ This conversation was restored to its state at ${at} (a point-in-time restore, log position ${lsn}). Anything sent after that point is not in it.`;
}

export type { BackupManifest };
