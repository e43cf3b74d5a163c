import { crc32 } from 'node:zlib';
import { posix as path } from 'node:path';
import { Packr } from 'msgpackr';
import { isSessionId } from '../core/ids.ts';
import type { DedupeEntry } from './journal/journal.ts';
import { ensureDir, hasCode, readFully, writeFully, type FileSystem } from '../storage/fs-port.ts';

/**
 * The whole-table checkpoint: every session of the hot tier in one file, the
 * seed's PersistentEts backup. A restarting process reads it in one
 * sequential pass instead of one snapshot file per session, then replays only
 * the journal records after each entry. It is an accelerator, never the
 * source of truth: an entry is used only when the journal proves it (the
 * record at the entry's seq is still in the log with the entry's LSN), and
 * anything that does not check out is ignored in favour of snapshots.
 *
 *   file    = header entry* trailer
 *   header  = "ARBORCKP" version:u16 reserved:u16 stateSchemaVersion:u32
 *             createdAt:u64 entries:u32 highWater:u64 hwSegment:u64
 *             hwSalt:u32 reserved:u32 headerCrc:u32                 (56 bytes, version 2)
 *   (version 1, still read: the same up to `entries`, then headerCrc:u32; 32 bytes)
 *   entry   = length:u32 crc:u32 msgpack([sid, seq, lsn, state, dedupe, snapshotLsn?])
 *   trailer = 0xFFFFFFFF:u32 count:u32
 *   crc     = crc32(payload, seed = headerCrc); headerCrc = crc32(the header bytes before it)
 *
 * `highWater` is the journal's synced LSN when the checkpoint was written and
 * `hwSegment`/`hwSalt` the journal segment it was written against (its first
 * LSN and salt): a journal of this data directory that ends below it lost
 * acknowledged events (the same mark as the journal index's).
 *
 * `snapshotLsn` (optional; readers before it ignore a sixth element) ties an
 * entry to the session's newest snapshot when that snapshot is at the entry's
 * seq: the LSN in that snapshot's header. Such an entry can stand in for the
 * snapshot without the journal (whose records up to the snapshot are released)
 * when the snapshot file still names that LSN.
 *
 * Written to a temp file, synced, renamed, directory synced; `entries` in the
 * header and `count` in the trailer must agree with what is in between.
 */
export const CHECKPOINT_MAGIC = Buffer.from('ARBORCKP', 'latin1');
export const CHECKPOINT_VERSION = 2;
export const CHECKPOINT_FILE = 'table.ckpt';
const HEADER_BYTES = 56;
const V1_HEADER_BYTES = 32;
const TRAILER_MARK = 0xffffffff;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const packr = new Packr({ useRecords: true, moreTypes: false });
/** Longest stretch of decoding between two yields to the event loop. */
const DECODE_SLICE_MS = 10;

/** One session as the checkpoint holds it: its state after event `seq`, which had LSN `lsn`. */
export interface CheckpointEntry<S = unknown> {
  sid: string;
  seq: number;
  lsn: number;
  state: S;
  dedupe: DedupeEntry[];
  /** the header LSN of the session's newest snapshot, when that snapshot is at `seq` (see the format above) */
  snapshotLsn?: number;
}

export interface CheckpointWriteOptions {
  fs: FileSystem;
  dir: string;
  stateSchemaVersion: number;
  /** Entries to write; called in slices so a large table never blocks the event loop for long. */
  entries: Iterable<CheckpointEntry>;
  /** Entries encoded between two yields to the event loop. */
  sliceEntries?: number;
  /** the journal's synced LSN now, and its segment (first LSN and salt) it belongs to */
  highWater?: number;
  highWaterSegment?: { id: number; salt: number } | undefined;
}

/** Writes the checkpoint durably (temp → sync → rename → directory sync). Resolves with its size. */
export async function writeTableCheckpoint(o: CheckpointWriteOptions): Promise<{ bytes: number; entries: number }> {
  await ensureDir(o.fs, o.dir, DIR_MODE);
  const file = path.join(o.dir, CHECKPOINT_FILE);
  const temp = `${file}.tmp`;
  const list = [...o.entries];
  const header = Buffer.alloc(HEADER_BYTES);
  CHECKPOINT_MAGIC.copy(header, 0);
  header.writeUInt16LE(CHECKPOINT_VERSION, 8);
  header.writeUInt32LE(o.stateSchemaVersion, 12);
  header.writeBigUInt64LE(BigInt(Date.now()), 16);
  header.writeUInt32LE(list.length, 24);
  header.writeBigUInt64LE(BigInt(o.highWater ?? 0), 28);
  header.writeBigUInt64LE(BigInt(o.highWaterSegment?.id ?? 0), 36);
  header.writeUInt32LE(o.highWaterSegment?.salt ?? 0, 44);
  const seed = crc32(header.subarray(0, HEADER_BYTES - 4));
  header.writeUInt32LE(seed, HEADER_BYTES - 4);
  const handle = await o.fs.open(temp, 'w+', FILE_MODE);
  let pos = 0;
  try {
    await writeFully(handle, header, pos);
    pos += header.length;
    const slice = o.sliceEntries ?? 200;
    for (let i = 0; i < list.length; i += slice) {
      const chunk: Buffer[] = [];
      for (const e of list.slice(i, i + slice)) {
        const payload = packr.pack(e.snapshotLsn === undefined ? [e.sid, e.seq, e.lsn, e.state, e.dedupe] : [e.sid, e.seq, e.lsn, e.state, e.dedupe, e.snapshotLsn]);
        const frame = Buffer.alloc(8);
        frame.writeUInt32LE(payload.length, 0);
        frame.writeUInt32LE(crc32(payload, seed), 4);
        chunk.push(frame, payload);
      }
      const bytes = Buffer.concat(chunk);
      await writeFully(handle, bytes, pos);
      pos += bytes.length;
      await new Promise<void>((r) => setImmediate(r));
    }
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(TRAILER_MARK, 0);
    trailer.writeUInt32LE(list.length, 4);
    await writeFully(handle, trailer, pos);
    pos += trailer.length;
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await o.fs.rename(temp, file);
  await o.fs.syncDir(o.dir);
  return { bytes: pos, entries: list.length };
}

export type CheckpointRead<S> = { entries: CheckpointEntry<S>[]; createdAt: number; stateSchemaVersion: number; bytes: number; highWater?: CheckpointHighWater } | { problem: string };

/** The durable high-water mark a checkpoint recorded: the journal's synced LSN, and the segment it belonged to. */
export interface CheckpointHighWater {
  lsn: number;
  segment: number;
  salt: number;
  createdAt: number;
}

/** Checks a checkpoint header; its length, seed and high-water mark (version 2), or why not. */
function checkHeader(buf: Buffer): { headerBytes: number; seed: number; highWater?: CheckpointHighWater } | { problem: string } {
  if (buf.length < V1_HEADER_BYTES + 8) return { problem: `${CHECKPOINT_FILE} is ${buf.length} bytes, shorter than a header and trailer` };
  if (!buf.subarray(0, 8).equals(CHECKPOINT_MAGIC)) return { problem: `${CHECKPOINT_FILE} does not start with ARBORCKP` };
  const version = buf.readUInt16LE(8);
  const headerBytes = version === 1 ? V1_HEADER_BYTES : HEADER_BYTES;
  if (version !== 1 && version !== CHECKPOINT_VERSION) return { problem: `${CHECKPOINT_FILE}: unknown version ${version}` };
  if (buf.length < headerBytes + 8) return { problem: `${CHECKPOINT_FILE} is ${buf.length} bytes, shorter than a header and trailer` };
  const seed = crc32(buf.subarray(0, headerBytes - 4));
  if (seed !== buf.readUInt32LE(headerBytes - 4)) return { problem: `${CHECKPOINT_FILE}: header checksum mismatch` };
  if (version === 1) return { headerBytes, seed };
  const lsn = Number(buf.readBigUInt64LE(28));
  return { headerBytes, seed, ...(lsn > 0 ? { highWater: { lsn, segment: Number(buf.readBigUInt64LE(36)), salt: buf.readUInt32LE(44), createdAt: Number(buf.readBigUInt64LE(16)) } } : {}) };
}

/**
 * Only the checkpoint's high-water mark (its header), without reading the
 * entries: what open and `arbor verify` compare the journal's end with.
 */
export async function readCheckpointHighWater(fs: FileSystem, dir: string): Promise<CheckpointHighWater | undefined> {
  let handle;
  try {
    handle = await fs.open(path.join(dir, CHECKPOINT_FILE), 'r');
  } catch {
    return undefined;
  }
  try {
    const head = await readFully(handle, HEADER_BYTES + 8, 0);
    const h = checkHeader(Buffer.from(head.buffer, head.byteOffset, head.length));
    return 'problem' in h ? undefined : h.highWater;
  } catch {
    return undefined;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Reads and checks the checkpoint in `dir`. The whole file must check out
 * (header, every entry's crc, the trailer) or none of it is used: a
 * `problem` says why (a missing file is a problem too, not an error).
 */
export async function readTableCheckpoint<S>(fs: FileSystem, dir: string, openState?: (sid: string, state: unknown) => unknown): Promise<CheckpointRead<S>> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path.join(dir, CHECKPOINT_FILE));
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return { problem: 'no checkpoint' };
    return { problem: `cannot read ${CHECKPOINT_FILE}: ${(err as Error).message}` };
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const h = checkHeader(buf);
  if ('problem' in h) return h;
  const { seed } = h;
  const expected = buf.readUInt32LE(24);
  const entries: CheckpointEntry<S>[] = [];
  let pos = h.headerBytes;
  let sliceStart = performance.now();
  for (;;) {
    if (pos + 8 > buf.length) return { problem: `${CHECKPOINT_FILE}: cut short at offset ${pos}` };
    const length = buf.readUInt32LE(pos);
    if (length === TRAILER_MARK) {
      const count = buf.readUInt32LE(pos + 4);
      if (count !== expected || entries.length !== expected || pos + 8 !== buf.length) return { problem: `${CHECKPOINT_FILE}: trailer at offset ${pos} does not match (${entries.length} entries, header ${expected}, trailer ${count})` };
      break;
    }
    const end = pos + 8 + length;
    if (end > buf.length) return { problem: `${CHECKPOINT_FILE}: entry at offset ${pos} runs past the end` };
    const payload = buf.subarray(pos + 8, end);
    // A big table decodes for a second or more: in slices, so that requests answered meanwhile (a
    // restarted server's first ones) wait for one slice at most, not for the whole table.
    if (performance.now() - sliceStart > DECODE_SLICE_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    }
    if (crc32(payload, seed) !== buf.readUInt32LE(pos + 4)) return { problem: `${CHECKPOINT_FILE}: checksum mismatch in the entry at offset ${pos}` };
    let value: unknown;
    try {
      value = packr.unpack(payload);
    } catch {
      return { problem: `${CHECKPOINT_FILE}: the entry at offset ${pos} does not decode` };
    }
    const [sid, seq, lsn, state, dedupe, snapshotLsn] = Array.isArray(value) ? value : [];
    if (!isSessionId(sid) || !Number.isSafeInteger(seq) || seq < 1 || !Number.isSafeInteger(lsn) || lsn < 1 || !Array.isArray(dedupe) || (snapshotLsn !== undefined && !(Number.isSafeInteger(snapshotLsn) && snapshotLsn >= 0))) {
      return { problem: `${CHECKPOINT_FILE}: the entry at offset ${pos} is malformed` };
    }
    let opened: unknown = state;
    if (openState !== undefined) {
      try {
        opened = openState(sid, state);
      } catch (err) {
        return { problem: `${CHECKPOINT_FILE}: the state of session ${sid} at offset ${pos} does not open: ${(err as Error).message}` };
      }
    }
    entries.push({ sid, seq, lsn, state: opened as S, dedupe: dedupe as DedupeEntry[], ...(snapshotLsn === undefined ? {} : { snapshotLsn }) });
    pos = end;
  }
  return { entries, createdAt: Number(buf.readBigUInt64LE(16)), stateSchemaVersion: buf.readUInt32LE(12), bytes: buf.length, ...(h.highWater === undefined ? {} : { highWater: h.highWater }) };
}
