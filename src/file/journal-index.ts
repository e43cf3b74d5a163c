import { crc32 } from 'node:zlib';
import { posix as path } from 'node:path';
import { Packr } from 'msgpackr';
import { isSessionId } from '../core/ids.ts';
import type { DedupeEntry, JournalIndexImage } from './journal/journal.ts';
import { ensureDir, hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { checkIndexLocs, encodeIndexLocs, Locs } from './journal/locs.ts';

/**
 * The persisted journal index, written beside the whole-table checkpoint (and
 * at a clean close): what opening the journal would otherwise learn by
 * scanning every segment — each session's last seq, the places of its
 * unreleased records, its dedupe window — up to one frame of the log, plus the
 * journal's durable high-water mark. Open checks it against the files and then
 * scans only what follows it (Journal.open's `index`). It is never the source
 * of truth: an index that does not check out is ignored, and a full scan
 * recovers exactly what it would have without it (docs/checkpoint-format.md).
 *
 *   file   = header body bodyCrc:u32
 *   header = "ARBORIDX" version:u16 reserved:u16 reserved:u32
 *            createdAt:u64 highWater:u64 endLsn:u64 endSegment:u64
 *            endFrame:u32 endOffset:u32 bodyLength:u32 headerCrc:u32     (64 bytes)
 *   body   = msgpack([segments, sessions])
 *            segments = [[firstLsn, salt, seed, size, records]...]   (oldest first, up to endSegment)
 *            sessions = [[sid, lastSeq, covered, dedupe, locs]...]
 *            locs     = bytes: runs of varints (journal/locs.ts, encodeIndexLocs), about 6 bytes a place
 *   headerCrc = crc32(header bytes 0..59); bodyCrc = crc32(body, seed = headerCrc)
 *
 * Version 1 (16 bytes a place: [seq:u32 segment:u32 offset:u32 frameBytes:u32]*) is refused like any
 * index that does not check out: open scans the journal in full once, and the next checkpoint (or
 * a clean close) writes version 2.
 *
 * `highWater` is the journal's synced LSN when the file was written: every
 * record up to it had been fdatasynced, so a journal that later ends below it
 * has lost acknowledged events (see docs/durability.md).
 */
export const INDEX_MAGIC = Buffer.from('ARBORIDX', 'latin1');
export const INDEX_VERSION = 2;
export const INDEX_FILE = 'journal.idx';
const HEADER_BYTES = 64;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const packr = new Packr({ useRecords: false, moreTypes: false });

export interface JournalIndexFile {
  image: JournalIndexImage;
  /** the journal's synced LSN when the index was written */
  highWater: number;
  createdAt: number;
  bytes: number;
}

/** Encodes an index image; undefined when a figure does not fit the format (then no index is written). */
export function encodeJournalIndex(image: JournalIndexImage, highWater: number, createdAt = Date.now()): Buffer | undefined {
  const segPos = new Map<number, number>();
  image.segments.forEach((s, i) => segPos.set(s.id, i));
  const sessions: unknown[] = [];
  for (const e of image.sessions) {
    const locs = encodeIndexLocs(e.locs.head(e.locs.length), segPos);
    if (locs === undefined) return undefined;
    sessions.push([e.sid, e.lastSeq, e.covered, e.dedupe, locs]);
  }
  const body = packr.pack([image.segments.map((s) => [s.id, s.salt, s.seed, s.size, s.records]), sessions]);
  const header = Buffer.alloc(HEADER_BYTES);
  INDEX_MAGIC.copy(header, 0);
  header.writeUInt16LE(INDEX_VERSION, 8);
  header.writeBigUInt64LE(BigInt(createdAt), 16);
  header.writeBigUInt64LE(BigInt(highWater), 24);
  header.writeBigUInt64LE(BigInt(image.end.lsn), 32);
  header.writeBigUInt64LE(BigInt(image.end.segment), 40);
  header.writeUInt32LE(image.end.frame, 48);
  header.writeUInt32LE(image.end.offset, 52);
  header.writeUInt32LE(body.length, 56);
  const seed = crc32(header.subarray(0, 60));
  header.writeUInt32LE(seed, 60);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(crc32(body, seed), 0);
  return Buffer.concat([header, body, trailer]);
}

/** Decodes and checks an index file's bytes: the index, or why it is refused. */
export function decodeJournalIndex(bytes: Uint8Array): JournalIndexFile | { problem: string } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (buf.length < HEADER_BYTES + 4) return { problem: `${INDEX_FILE} is ${buf.length} bytes, shorter than a header (cut short?)` };
  if (!buf.subarray(0, 8).equals(INDEX_MAGIC)) return { problem: `${INDEX_FILE} does not start with ARBORIDX` };
  const seed = crc32(buf.subarray(0, 60));
  if (seed !== buf.readUInt32LE(60)) return { problem: `${INDEX_FILE}: header checksum mismatch` };
  const version = buf.readUInt16LE(8);
  if (version !== INDEX_VERSION) return { problem: version < INDEX_VERSION ? `${INDEX_FILE}: version ${version}, an older format (the next checkpoint writes version ${INDEX_VERSION})` : `${INDEX_FILE}: unknown version ${version}` };
  const bodyLength = buf.readUInt32LE(56);
  if (HEADER_BYTES + bodyLength + 4 !== buf.length) return { problem: `${INDEX_FILE}: ${buf.length} bytes, the header says ${HEADER_BYTES + bodyLength + 4} (cut short?)` };
  const body = buf.subarray(HEADER_BYTES, HEADER_BYTES + bodyLength);
  if (crc32(body, seed) !== buf.readUInt32LE(HEADER_BYTES + bodyLength)) return { problem: `${INDEX_FILE}: body checksum mismatch` };
  let value: unknown;
  try {
    value = packr.unpack(body);
  } catch {
    return { problem: `${INDEX_FILE}: the body does not decode` };
  }
  const bad = { problem: `${INDEX_FILE}: the body is malformed` };
  if (!Array.isArray(value) || !Array.isArray(value[0]) || !Array.isArray(value[1])) return bad;
  const segments: JournalIndexImage['segments'] = [];
  for (const s of value[0] as unknown[]) {
    if (!Array.isArray(s) || !s.every((x) => Number.isSafeInteger(x) && x >= 0)) return bad;
    segments.push({ id: s[0], salt: s[1], seed: s[2], size: s[3], records: s[4] });
  }
  const sessions: JournalIndexImage['sessions'] = [];
  const segIds = segments.map((s) => s.id);
  // Records per segment, counted from each session's run headers while their segment positions are
  // checked: open takes the segments' live counts from here and leaves the records encoded (journal/locs.ts).
  const indexed = new Float64Array(segments.length);
  for (const e of value[1] as unknown[]) {
    if (!Array.isArray(e) || !isSessionId(e[0]) || !Number.isSafeInteger(e[1]) || !Number.isSafeInteger(e[2]) || !Array.isArray(e[3]) || !(e[4] instanceof Uint8Array)) return bad;
    const raw = e[4] as Uint8Array;
    const count = checkIndexLocs(raw, segments.length, indexed);
    if (count < 0) return bad;
    sessions.push({ sid: e[0], lastSeq: e[1], covered: e[2], dedupe: e[3] as DedupeEntry[], locs: Locs.fromIndex(raw, segIds, count) });
  }
  segments.forEach((s, i) => (s.indexed = indexed[i]!));
  const image: JournalIndexImage = {
    segments,
    end: { lsn: Number(buf.readBigUInt64LE(32)), segment: Number(buf.readBigUInt64LE(40)), frame: buf.readUInt32LE(48), offset: buf.readUInt32LE(52) },
    sessions,
  };
  return { image, highWater: Number(buf.readBigUInt64LE(24)), createdAt: Number(buf.readBigUInt64LE(16)), bytes: buf.length };
}

/** Reads `<dir>/journal.idx`; a missing or refused file is a `problem`, not an error. */
export async function readJournalIndex(fs: FileSystem, dir: string): Promise<JournalIndexFile | { problem: string }> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path.join(dir, INDEX_FILE));
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return { problem: 'no index' };
    return { problem: `cannot read ${INDEX_FILE}: ${(err as Error).message}` };
  }
  return decodeJournalIndex(bytes);
}

/**
 * Writes the index (temp → fdatasync → rename → directory sync). With `sync`
 * false (at close, where it must not hold the close up) the two syncs are
 * skipped: safe, because a power loss then leaves the old index, the new one,
 * or bytes that fail the checksums, and open checks every index it reads.
 */
export async function writeJournalIndex(fs: FileSystem, dir: string, bytes: Uint8Array, sync = true): Promise<void> {
  await ensureDir(fs, dir, DIR_MODE);
  const file = path.join(dir, INDEX_FILE);
  const temp = `${file}.tmp`;
  const handle = await fs.open(temp, 'w+', FILE_MODE);
  try {
    await writeFully(handle, bytes, 0);
    if (sync) await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(temp, file);
  if (sync) await fs.syncDir(dir);
}

/** Removes the index (it no longer describes the journal); durable, and quiet when there is none. */
export async function removeJournalIndex(fs: FileSystem, dir: string): Promise<void> {
  try {
    await fs.unlink(path.join(dir, INDEX_FILE));
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  await fs.syncDir(dir);
}
