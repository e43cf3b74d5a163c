import { crc32, brotliCompress, brotliDecompress, constants as zc } from 'node:zlib';
import { promisify } from 'node:util';
import { Packr } from 'msgpackr';
import { isSessionId } from '../core/ids.ts';
import type { DedupeEntry } from './backend.ts';

/**
 * Snapshot file format (docs/snapshot-format.md has the grammar and an example):
 *
 *   snapshot = "ARBORSNP" formatVersion:u16 codec:u16 stateSchemaVersion:u32
 *              seq:u64 lsn:u64 ts:u64 sidLength:u16 reserved:u16 bodyLength:u32
 *              sid[sidLength] body[bodyLength] crc:u32
 *   body     = brotli(msgpack({ state, dedupe }))      (codec 1)
 *   crc      = crc32 of every byte before it
 *
 * Integers are little-endian. The whole file is checked before anything in it is trusted.
 */
export const SNAPSHOT_MAGIC = Buffer.from('ARBORSNP', 'latin1');
export const SNAPSHOT_FORMAT_VERSION = 1;
export const CODEC_MSGPACK_BROTLI = 1;
const FIXED_HEADER_BYTES = 48;

const brotli = promisify(brotliCompress);
const unbrotli = promisify(brotliDecompress);
const packr = new Packr({ useRecords: true, moreTypes: false });

export interface SnapshotMeta {
  sid: string;
  seq: number;
  lsn: number;
  ts: number;
  stateSchemaVersion: number;
}

export interface SnapshotContent extends SnapshotMeta {
  state: unknown;
  dedupe: DedupeEntry[];
}

/** Encodes a snapshot. Compression runs on the libuv thread pool, off the event loop. */
export async function encodeSnapshot(content: SnapshotContent): Promise<Buffer> {
  const packed = packr.pack({ state: content.state, dedupe: content.dedupe });
  const body = await brotli(packed, { params: { [zc.BROTLI_PARAM_QUALITY]: 4, [zc.BROTLI_PARAM_SIZE_HINT]: packed.length } });
  const sid = Buffer.from(content.sid, 'latin1');
  const out = Buffer.alloc(FIXED_HEADER_BYTES + sid.length + body.length + 4);
  SNAPSHOT_MAGIC.copy(out, 0);
  out.writeUInt16LE(SNAPSHOT_FORMAT_VERSION, 8);
  out.writeUInt16LE(CODEC_MSGPACK_BROTLI, 10);
  out.writeUInt32LE(content.stateSchemaVersion, 12);
  out.writeBigUInt64LE(BigInt(content.seq), 16);
  out.writeBigUInt64LE(BigInt(content.lsn), 24);
  out.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(content.ts))), 32);
  out.writeUInt16LE(sid.length, 40);
  out.writeUInt32LE(body.length, 44);
  sid.copy(out, FIXED_HEADER_BYTES);
  body.copy(out, FIXED_HEADER_BYTES + sid.length);
  out.writeUInt32LE(crc32(out.subarray(0, out.length - 4)), out.length - 4);
  return out;
}

/** Checks and decodes a snapshot file. Returns the content, or why it was refused; never throws on content. */
export async function decodeSnapshot(bytes: Uint8Array): Promise<SnapshotContent | string> {
  const meta = decodeSnapshotHeader(bytes);
  if (typeof meta === 'string') return meta;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const bodyStart = FIXED_HEADER_BYTES + meta.sid.length;
  let decoded: unknown;
  try {
    decoded = packr.unpack(await unbrotli(b.subarray(bodyStart, b.length - 4)));
  } catch (err) {
    return `body does not decode: ${(err as Error).message}`;
  }
  if (typeof decoded !== 'object' || decoded === null || !('state' in decoded) || !Array.isArray((decoded as { dedupe?: unknown }).dedupe)) {
    return 'body is not a snapshot record';
  }
  const { state, dedupe } = decoded as { state: unknown; dedupe: DedupeEntry[] };
  return { ...meta, state, dedupe };
}

/** Checks the whole file's checksum and reads the header. */
export function decodeSnapshotHeader(bytes: Uint8Array): SnapshotMeta | string {
  if (bytes.length < FIXED_HEADER_BYTES + 1 + 4) return `file is ${bytes.length} bytes, too short for a snapshot`;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (!b.subarray(0, 8).equals(SNAPSHOT_MAGIC)) return 'bad magic';
  if (crc32(b.subarray(0, b.length - 4)) !== b.readUInt32LE(b.length - 4)) return 'checksum mismatch';
  const version = b.readUInt16LE(8);
  if (version !== SNAPSHOT_FORMAT_VERSION) return `unsupported snapshot format version ${version}`;
  const codec = b.readUInt16LE(10);
  if (codec !== CODEC_MSGPACK_BROTLI) return `unknown codec ${codec}`;
  const sidLength = b.readUInt16LE(40);
  const bodyLength = b.readUInt32LE(44);
  if (FIXED_HEADER_BYTES + sidLength + bodyLength + 4 !== b.length) return 'lengths do not add up to the file size';
  const sid = b.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + sidLength).toString('latin1');
  if (!isSessionId(sid)) return 'session id in header is invalid';
  const seq = b.readBigUInt64LE(16);
  const lsn = b.readBigUInt64LE(24);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER) || lsn > BigInt(Number.MAX_SAFE_INTEGER)) return 'seq or lsn out of range';
  return { sid, seq: Number(seq), lsn: Number(lsn), ts: Number(b.readBigUInt64LE(32)), stateSchemaVersion: b.readUInt32LE(12) };
}
