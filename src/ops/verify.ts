import { posix as path } from 'node:path';
import { crc32 } from 'node:zlib';
import { SEGMENT_FILE_PATTERN, SEGMENT_HEADER_BYTES, type JournalRecord } from '../file/journal/format.ts';
import { scanSegment } from '../file/journal/segment-scanner.ts';
import { decodeSnapshot, SNAPSHOT_MAGIC } from '../backend/snapshot-codec.ts';
import { erasedRecords, keysForOps, type KeyOptions } from './keys.ts';
import { isSealed, KeyStore } from '../file/keystore.ts';
import { DEFAULT_STORE_OPTIONS } from '../file/options.ts';
import { isSessionId } from '../core/ids.ts';
import { INDEX_FILE, readJournalIndex } from '../file/journal-index.ts';
import { CHECKPOINT_FILE, readCheckpointHighWater } from '../file/table-checkpoint.ts';
import { listDir, readIfPresent, resolveLayout, type LayoutOptions, type ProgressFn } from './layout.ts';

/** One problem found by verify: what, and where (file, byte offset, session, seq). */
export interface VerifyDamage {
  /** `segment`, `snapshot`, `session` (a gap only visible across files) or `loss` (the journal ends below its durable high-water mark) */
  kind: 'segment' | 'snapshot' | 'session' | 'loss';
  /** path relative to the data directory's journal or snapshot directory, e.g. `journals/00000000000000000001.wal` */
  file?: string;
  offset?: number;
  length?: number;
  session?: string;
  /** a single seq, or an inclusive range of missing seqs */
  seq?: number | [number, number];
  /** inclusive range of journal LSNs lost */
  lostLsns?: [number, number];
  /** sessions still legible in the damaged bytes (they may have lost an event there) */
  sessions?: { sid: string; seq?: number }[];
  reason: string;
}

export interface VerifiedSegment {
  file: string;
  bytes: number;
  records: number;
  firstLsn: number;
  /** LSN of the last valid record (firstLsn - 1 when none) */
  lastLsn: number;
  status: 'ok' | 'damaged' | 'torn-tail' | 'vanished';
  /** the incomplete write at the end of the newest segment: normal after a crash, or while a server is writing */
  tornTail?: { offset: number; bytes: number; session?: string };
}

export interface VerifiedSnapshot {
  file: string;
  session: string;
  seq: number;
  bytes: number;
  ts?: number;
  status: 'ok' | 'damaged' | 'vanished';
  reason?: string;
}

export interface VerifiedSession {
  id: string;
  /** seqs of this session's records in the journal (those not yet released), or undefined when none */
  journal?: { first: number; last: number; records: number };
  /** seq of the newest snapshot that decodes */
  newestSnapshotSeq?: number;
  snapshots: number;
  /** the last seq the data directory holds for the session */
  lastSeq: number;
}

export interface VerifyReport {
  ok: boolean;
  journalDir: string;
  snapshotDir: string;
  segments: VerifiedSegment[];
  snapshots: VerifiedSnapshot[];
  sessions: VerifiedSession[];
  damage: VerifyDamage[];
  /** things that are not damage: a torn tail, temp files of writes in progress, files deleted by a live server during the check */
  notes: string[];
  /** `none`: not encrypted; `no-key`: encrypted, payloads not opened (no key given); `checked`: every payload opened with the key */
  encryption: 'none' | 'no-key' | 'checked';
  totals: { segments: number; records: number; snapshots: number; sessions: number; bytes: number };
  durationMs: number;
}

export interface VerifyOptions extends LayoutOptions, KeyOptions {
  /** largest record payload accepted (the store's maxEventBytes; default 1 MiB) */
  maxEventBytes?: number;
  onProgress?: ProgressFn;
}

/** Fixed part of a snapshot header (see docs/snapshot-format.md). */
const SNAPSHOT_FIXED_HEADER = 48;
/** `<sid>.<seq, 20 digits>.snap`, as the snapshot store names them. */
export const SNAPSHOT_FILE = /^([A-Za-z0-9_-]{1,128})\.(\d{20})\.snap$/;

interface SessionTrack {
  first: number;
  last: number;
  records: number;
}

/**
 * Checks every journal segment and snapshot of a data directory without
 * changing anything: no lock, no truncation, no temp-file removal, so it runs
 * beside a live server.
 *
 * Journal: every frame's checksum and payload (through the same scanner as
 * recovery), segment headers, LSN continuity within and between segments, and
 * each session's seq continuity. Snapshots: whole-file checksum, header, the
 * file name's session and seq, and a full decode of the body. Sessions: the
 * journal's first record of each session must follow a snapshot (or be seq 1).
 *
 * A live server may delete released segments and pruned snapshots during the
 * check: segments are read first and snapshots listed after, so a segment that
 * vanished is covered by a snapshot listed later. Records of segments before a
 * vanished one are dropped from the continuity check (they were deleted too).
 * A torn write at the end of the newest segment is reported as a note.
 */
export async function verifyDataDir(options: VerifyOptions): Promise<VerifyReport> {
  const started = performance.now();
  const { fs, journalDir, snapshotDir, dataDir } = resolveLayout(options);
  // Deleted sessions awaiting erasure are not checked (the store skips them too); encrypted payloads are
  // authenticated with the key when it is given. A wrong key is refused.
  const isErased = await erasedRecords(fs, dataDir);
  const keys = await keysForOps(fs, dataDir, options, false);
  const maxRecordBytes = options.maxEventBytes ?? DEFAULT_STORE_OPTIONS.maxEventBytes;
  const damage: VerifyDamage[] = [];
  const notes: string[] = [];
  const segments: VerifiedSegment[] = [];
  const snapshotsOut: VerifiedSnapshot[] = [];

  // The durable high-water marks, read before the segments: a live server only raises them after the
  // records below them are on disk, so a mark read first never exceeds what the segments read next hold.
  const checkpointDir = path.join(resolveLayout(options).dataDir, 'checkpoint');
  const indexRead = await readJournalIndex(fs, checkpointDir);
  const ckHigh = await readCheckpointHighWater(fs, checkpointDir);
  const salts = new Map<number, number>();

  const journalNames = await listDir(fs, journalDir);
  const segmentNames = journalNames.filter((n) => SEGMENT_FILE_PATTERN.test(n));
  for (const n of journalNames) {
    if (n.endsWith('.tmp')) notes.push(`journals/${n}: a temporary file (a segment being created, or left by a crash; removed at the next open)`);
    else if (!SEGMENT_FILE_PATTERN.test(n)) notes.push(`journals/${n}: not a journal file; ignored`);
  }
  let snapshotNames = await listDir(fs, snapshotDir);
  const sizes = new Map<string, number>();
  let total = 0;
  for (const n of segmentNames) {
    const size = await statSize(fs, path.join(journalDir, n));
    sizes.set(`j/${n}`, size);
    total += size;
  }
  for (const n of snapshotNames) {
    if (!SNAPSHOT_FILE.test(n)) continue;
    const size = await statSize(fs, path.join(snapshotDir, n));
    sizes.set(`s/${n}`, size);
    total += size;
  }
  let done = 0;
  const progress = (bytes: number): void => {
    done += bytes;
    options.onProgress?.(done, total);
  };

  // ---- journal ----
  let sessions = new Map<string, SessionTrack>();
  let prevLastLsn: number | undefined;
  let records = 0;
  let lastLsnSeen = 0;
  for (let i = 0; i < segmentNames.length; i += 1) {
    const name = segmentNames[i]!;
    const file = `journals/${name}`;
    const id = Number(SEGMENT_FILE_PATTERN.exec(name)![1]);
    const bytes = await readIfPresent(fs, path.join(journalDir, name));
    if (bytes === undefined) {
      // Deleted by a live server: its records (and those of every older segment) are covered by snapshots.
      segments.push({ file, bytes: 0, records: 0, firstLsn: id, lastLsn: id - 1, status: 'vanished' });
      notes.push(`${file}: deleted during the check (released by snapshots); older segments are left out of the seq checks`);
      sessions = new Map();
      prevLastLsn = undefined;
      progress(sizes.get(`j/${name}`) ?? 0);
      continue;
    }
    const isLast = i === segmentNames.length - 1;
    const found: VerifyDamage[] = [];
    if (bytes.length < SEGMENT_HEADER_BYTES && isLast) {
      // As recovery does: a newest segment without a complete header holds no record; it is replaced at open.
      notes.push(`${file}: ${bytes.length} bytes, no complete header: a segment cut short by a crash (recovery replaces it)`);
      segments.push({ file, bytes: bytes.length, records: 0, firstLsn: id, lastLsn: id - 1, status: 'torn-tail', tornTail: { offset: 0, bytes: bytes.length } });
      progress(bytes.length);
      continue;
    }
    const scan = scanSegment(bytes, { isLast, maxRecordBytes }, (record: JournalRecord, offset: number) => {
      if (isErased(record.sid, record.lsn)) return;
      if (keys instanceof KeyStore && isSealed(record.data)) {
        try {
          keys.openData(record.sid, record.seq, record.data);
        } catch (err) {
          found.push({ kind: 'session', file, offset, session: record.sid, seq: record.seq, reason: `session ${record.sid} seq ${record.seq}: the encrypted payload does not open: ${(err as Error).message}` });
        }
      }
      const t = sessions.get(record.sid);
      if (t === undefined) {
        sessions.set(record.sid, { first: record.seq, last: record.seq, records: 1 });
        return;
      }
      if (record.seq !== t.last + 1) {
        found.push(
          record.seq > t.last + 1
            ? { kind: 'session', file, offset, session: record.sid, seq: [t.last + 1, record.seq - 1], reason: `session ${record.sid}: seq jumps from ${t.last} to ${record.seq} (events ${t.last + 1}..${record.seq - 1} missing)` }
            : { kind: 'session', file, offset, session: record.sid, seq: record.seq, reason: `session ${record.sid}: seq ${record.seq} after seq ${t.last} (duplicate or out of order)` },
        );
      }
      t.last = Math.max(t.last, record.seq);
      t.records += 1;
    });
    for (const d of scan.damage) {
      found.push({
        kind: 'segment',
        file,
        offset: d.offset,
        length: d.length,
        reason: d.reason,
        ...(d.lostLsns === undefined ? {} : { lostLsns: d.lostLsns }),
        ...(d.sessions === undefined ? {} : { sessions: d.sessions }),
      });
    }
    if (scan.header !== undefined && scan.header.firstLsn !== id) {
      found.push({ kind: 'segment', file, offset: 16, length: 8, reason: `header first LSN ${scan.header.firstLsn} does not match the file name (${id})` });
    }
    if (prevLastLsn !== undefined && scan.header !== undefined && id !== prevLastLsn + 1) {
      found.push(
        id > prevLastLsn + 1
          ? { kind: 'segment', file, offset: 0, length: 0, lostLsns: [prevLastLsn + 1, id - 1], reason: `segment starts at LSN ${id} but the previous one ends at ${prevLastLsn}: LSNs ${prevLastLsn + 1}..${id - 1} are lost` }
          : { kind: 'segment', file, offset: 0, length: 0, reason: `segment starts at LSN ${id}, overlapping the previous one (ends at ${prevLastLsn})` },
      );
    }
    prevLastLsn = scan.header === undefined ? undefined : scan.lastLsn;
    if (scan.header !== undefined) {
      salts.set(id, scan.header.salt);
      lastLsnSeen = Math.max(lastLsnSeen, scan.lastLsn);
    }
    records += scan.records;
    const status: VerifiedSegment['status'] = found.length > 0 ? 'damaged' : scan.torn !== undefined ? 'torn-tail' : 'ok';
    const seg: VerifiedSegment = { file, bytes: bytes.length, records: scan.records, firstLsn: scan.header?.firstLsn ?? id, lastLsn: scan.lastLsn, status };
    if (scan.torn !== undefined) {
      seg.tornTail = { offset: scan.torn.offset, bytes: scan.torn.bytes, ...(scan.torn.sessionId === undefined ? {} : { session: scan.torn.sessionId }) };
      notes.push(
        `${file}: torn tail of ${scan.torn.bytes} bytes at offset ${scan.torn.offset}${scan.torn.sessionId === undefined ? '' : ` (session ${scan.torn.sessionId})`}: ` +
          'an append cut short by a crash, or still being written by a live server; never acknowledged, truncated at the next open',
      );
    }
    segments.push(seg);
    damage.push(...found);
    progress(bytes.length);
  }

  // ---- snapshots (listed again now: a segment deleted during the journal pass is covered by a snapshot that exists by now) ----
  // A live server prunes old snapshots when it writes new ones: if the newest listed snapshot of a
  // session vanished before it was read, a newer one exists, so list again and read what is new.
  const newestValid = new Map<string, number>();
  const snapshotCount = new Map<string, number>();
  const seen = new Set<string>();
  const readSeq = new Map<string, number>();
  for (let pass = 0; ; pass += 1) {
    snapshotNames = await listDir(fs, snapshotDir);
    const newestListed = new Map<string, number>();
    for (const n of snapshotNames) {
      const m = SNAPSHOT_FILE.exec(n);
      if (m !== null && Number(m[2]) > (newestListed.get(m[1]!) ?? -1)) newestListed.set(m[1]!, Number(m[2]));
    }
    for (const n of snapshotNames) {
      if (seen.has(n)) continue;
      seen.add(n);
      if (n.endsWith('.tmp')) {
        if (pass === 0) notes.push(`snapshots/${n}: a temporary file (a snapshot being written, or left by a crash; removed at the next open)`);
        continue;
      }
      const m = SNAPSHOT_FILE.exec(n);
      if (m === null) {
        notes.push(`snapshots/${n}: not a snapshot file; ignored`);
        continue;
      }
      const file = `snapshots/${n}`;
      const sid = m[1]!;
      const seq = Number(m[2]);
      const bytes = await readIfPresent(fs, path.join(snapshotDir, n));
      if (bytes === undefined) {
        snapshotsOut.push({ file, session: sid, seq, bytes: 0, status: 'vanished' });
        notes.push(`${file}: deleted during the check (pruned after a newer snapshot)`);
        continue;
      }
      readSeq.set(sid, Math.max(readSeq.get(sid) ?? -1, seq));
      snapshotCount.set(sid, (snapshotCount.get(sid) ?? 0) + 1);
      const problem = await checkSnapshot(bytes, sid, seq);
      progress(bytes.length);
      if (problem !== undefined) {
        snapshotsOut.push({ file, session: sid, seq, bytes: bytes.length, status: 'damaged', reason: problem.reason });
        damage.push({ kind: 'snapshot', file, offset: problem.offset, length: problem.length, session: sid, seq, reason: problem.reason });
        continue;
      }
      const ts = Number(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).readBigUInt64LE(32));
      snapshotsOut.push({ file, session: sid, seq, bytes: bytes.length, ts, status: 'ok' });
      if (seq > (newestValid.get(sid) ?? 0)) newestValid.set(sid, seq);
    }
    const behind = [...newestListed].filter(([sid, seq]) => (readSeq.get(sid) ?? -1) < seq);
    if (behind.length === 0) break;
    if (pass >= 50) {
      notes.push(`snapshots of ${behind.length} sessions kept being replaced during the check; their seq checks may be incomplete`);
      break;
    }
  }
  snapshotsOut.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));

  // ---- sessions: the journal's first record of each session must follow a snapshot ----
  const ids = new Set<string>([...sessions.keys(), ...snapshotCount.keys()]);
  const sessionsOut: VerifiedSession[] = [];
  for (const sid of [...ids].sort()) {
    const t = sessions.get(sid);
    const snap = newestValid.get(sid);
    if (t !== undefined && t.first > (snap ?? 0) + 1) {
      damage.push({
        kind: 'session',
        session: sid,
        seq: [(snap ?? 0) + 1, t.first - 1],
        reason: `session ${sid}: events ${(snap ?? 0) + 1}..${t.first - 1} are in neither the journal (it starts at seq ${t.first}) nor a readable snapshot (${snap === undefined ? 'none' : `newest at seq ${snap}`})`,
      });
    }
    if (t === undefined && snap === undefined) {
      damage.push({ kind: 'session', session: sid, reason: `session ${sid}: no readable snapshot and no journal records: its history cannot be recovered` });
    }
    sessionsOut.push({
      id: sid,
      ...(t === undefined ? {} : { journal: { first: t.first, last: t.last, records: t.records } }),
      ...(snap === undefined ? {} : { newestSnapshotSeq: snap }),
      snapshots: snapshotCount.get(sid) ?? 0,
      lastSeq: Math.max(t?.last ?? 0, snap ?? 0),
    });
  }
  // ---- the journal's end against its durable high-water mark ----
  const marks: { lsn: number; where: string; at: number }[] = [];
  if ('image' in indexRead) {
    const named = indexRead.image.segments.filter((s) => salts.has(s.id));
    if (named.length > 0 && named.every((s) => salts.get(s.id) === s.salt)) marks.push({ lsn: indexRead.highWater, where: `checkpoint/${INDEX_FILE}`, at: indexRead.createdAt });
  }
  if (ckHigh !== undefined && salts.get(ckHigh.segment) === ckHigh.salt) marks.push({ lsn: ckHigh.lsn, where: `checkpoint/${CHECKPOINT_FILE}`, at: ckHigh.createdAt });
  const mark = marks.sort((x, y) => y.lsn - x.lsn)[0];
  if (mark !== undefined && mark.lsn > lastLsnSeen) {
    const affected: { sid: string; seq?: number }[] = [];
    if ('image' in indexRead) {
      for (const e of indexRead.image.sessions) {
        const has = Math.max(sessions.get(e.sid)?.last ?? 0, newestValid.get(e.sid) ?? 0);
        if (e.lastSeq > has) affected.push({ sid: e.sid, seq: has + 1 });
      }
    }
    const lost = mark.lsn - lastLsnSeen;
    damage.push({
      kind: 'loss',
      lostLsns: [lastLsnSeen + 1, mark.lsn],
      ...(affected.length === 0 ? {} : { sessions: affected }),
      reason:
        `LOSS: the journal ends at LSN ${lastLsnSeen}, but LSNs up to ${mark.lsn} had been synced (the high-water mark in ${mark.where}, ${new Date(mark.at).toISOString()}): ` +
        `at least ${lost} acknowledged event${lost === 1 ? '' : 's'} were cut from the disk` +
        (affected.length === 0 ? '' : `, in ${affected.length} session${affected.length === 1 ? '' : 's'} (${affected.slice(0, 10).map((a) => `${a.sid} from seq ${a.seq}`).join(', ')}${affected.length > 10 ? ', …' : ''})`) +
        '; not a torn write',
    });
  }
  if (keys === 'no-key') notes.push(`${dataDir} is encrypted at rest and no key was given (--encryption-key, --encryption-key-file or ARBOR_ENCRYPTION_KEY): frames, checksums and headers were checked, the encrypted payloads were not opened`);
  if (segmentNames.length === 0 && snapshotsOut.length === 0) notes.push(`no journal segment and no snapshot in ${journalDir} and ${snapshotDir}: an empty or new data directory`);
  const bytesTotal = segments.reduce((s, x) => s + x.bytes, 0) + snapshotsOut.reduce((s, x) => s + x.bytes, 0);
  return {
    ok: damage.length === 0,
    journalDir,
    snapshotDir,
    segments,
    snapshots: snapshotsOut,
    sessions: sessionsOut,
    damage,
    notes,
    encryption: keys === undefined ? 'none' : keys === 'no-key' ? 'no-key' : 'checked',
    totals: { segments: segments.filter((s) => s.status !== 'vanished').length, records, snapshots: snapshotsOut.filter((s) => s.status !== 'vanished').length, sessions: sessionsOut.length, bytes: bytesTotal },
    durationMs: performance.now() - started,
  };
}

async function statSize(fs: ReturnType<typeof resolveLayout>['fs'], file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return 0;
  }
}

/**
 * Why a snapshot file fails, and where: the whole-file checksum cannot say
 * which byte changed, so the header fields are checked one by one first (each
 * has an offset), then the body is decoded (its offset and length).
 */
export async function checkSnapshot(bytes: Uint8Array, sid: string, seq: number): Promise<{ offset: number; length: number; reason: string } | undefined> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const size = b.length;
  if (size < SNAPSHOT_FIXED_HEADER + 1 + 4) return { offset: 0, length: size, reason: `file is ${size} bytes, too short for a snapshot (cut short?)` };
  for (let i = 0; i < SNAPSHOT_MAGIC.length; i += 1) {
    if (b[i] !== SNAPSHOT_MAGIC[i]) return { offset: i, length: 8, reason: 'bad magic (expected "ARBORSNP")' };
  }
  if (b.readUInt16LE(8) !== 1) return { offset: 8, length: 2, reason: `unsupported snapshot format version ${b.readUInt16LE(8)}` };
  if (b.readUInt16LE(10) !== 1) return { offset: 10, length: 2, reason: `unknown codec ${b.readUInt16LE(10)}` };
  const sidLength = b.readUInt16LE(40);
  const bodyLength = b.readUInt32LE(44);
  if (sidLength !== sid.length) return { offset: 40, length: 2, reason: `session id length ${sidLength} does not match the file name's session ${sid}` };
  if (SNAPSHOT_FIXED_HEADER + sidLength + bodyLength + 4 !== size) return { offset: 44, length: 4, reason: `body length ${bodyLength} does not add up to the file size ${size}` };
  const headerSid = b.subarray(SNAPSHOT_FIXED_HEADER, SNAPSHOT_FIXED_HEADER + sidLength).toString('latin1');
  if (headerSid !== sid) {
    let at = 0;
    while (at < sid.length && headerSid[at] === sid[at]) at += 1;
    return { offset: SNAPSHOT_FIXED_HEADER + at, length: sidLength - at, reason: `header names session ${JSON.stringify(headerSid)}, the file name ${sid}` };
  }
  if (b.readBigUInt64LE(16) !== BigInt(seq)) return { offset: 16, length: 8, reason: `header names seq ${b.readBigUInt64LE(16)}, the file name ${seq}` };
  const stored = b.readUInt32LE(size - 4);
  const computed = crc32(b.subarray(0, size - 4));
  const bodyStart = SNAPSHOT_FIXED_HEADER + sidLength;
  if (stored !== computed) {
    // Where is the damage? Try the body alone: if it does not decode, it is there.
    const decoded = await decodeSnapshot(withFixedCrc(b));
    if (typeof decoded === 'string') return { offset: bodyStart, length: bodyLength, reason: `checksum mismatch (stored 0x${hex(stored)}, computed 0x${hex(computed)}) and the body at offset ${bodyStart} (${bodyLength} bytes) does not decode` };
    return {
      offset: 0,
      length: size,
      reason: `checksum mismatch (stored 0x${hex(stored)} at offset ${size - 4}, computed 0x${hex(computed)}); the header fields and the body still decode, so a changed byte is among the unchecked header fields (offsets 12..39) or the checksum`,
    };
  }
  const decoded = await decodeSnapshot(b);
  if (typeof decoded === 'string') return { offset: bodyStart, length: bodyLength, reason: decoded };
  if (!isSessionId(decoded.sid)) return { offset: SNAPSHOT_FIXED_HEADER, length: sidLength, reason: 'invalid session id in header' };
  return undefined;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** A copy of the snapshot with its checksum recomputed, to see whether the rest still decodes. */
function withFixedCrc(b: Buffer): Buffer {
  const copy = Buffer.from(b);
  copy.writeUInt32LE(crc32(copy.subarray(0, copy.length - 4)), copy.length - 4);
  return copy;
}
