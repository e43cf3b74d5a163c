import { crc32 } from 'node:zlib';
import { isSessionId } from '../../core/ids.ts';
import type { JournalRecord } from '../../core/record.ts';

export type { JournalRecord };

/**
 * The journal's on-disk format (docs/journal-format.md has the grammar and a
 * worked example).
 *
 *   segment  = header record*
 *   header   = "ARBORWAL" version:u16 flags:u16 salt:u32 firstLsn:u64 lsnSpan:u32 headerCrc:u32   (32 bytes)
 *   flags    = bit 0 ERASED_GAPS: the segment was rewritten by erasure (src/file/erasure.ts); its records
 *              may skip LSNs, and it covers LSNs firstLsn .. firstLsn + lsnSpan - 1 (0 when the bit is clear)
 *   record   = crc:u32 length:u32 payload[length]
 *   crc      = crc32(length ‖ payload, headerCrc)        (the 4 length bytes and the payload, seeded)
 *   payload  = UTF-8 JSON {"lsn":…,"sid":…,"seq":…,"ts":…,"type":…,"v":…,"data":…[,"cid":…]}
 *
 * Every integer is little-endian. The record checksum is seeded with the
 * header's checksum, which covers the segment's random salt and first LSN, so a
 * record copied from another segment or another generation of the same file
 * never validates here.
 */
export const SEGMENT_MAGIC = Buffer.from('ARBORWAL', 'latin1');
export const SEGMENT_FORMAT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 32;
export const FRAME_HEADER_BYTES = 8;
/** Smallest possible payload: `{"lsn":1,"sid":"a","seq":1,"ts":0,"type":"t","v":1,"data":0}`. */
export const MIN_PAYLOAD_BYTES = 40;
export const SEGMENT_FILE_PATTERN = /^(\d{20})\.wal$/;

export function segmentFileName(firstLsn: number): string {
  return `${String(firstLsn).padStart(20, '0')}.wal`;
}

/** Header flag: the segment was rewritten by erasure; LSN gaps inside it are erased records, not damage. */
export const SEGMENT_FLAG_ERASED_GAPS = 1;

export interface SegmentHeader {
  version: number;
  /** SEGMENT_FLAG_* bits (0 for a segment the writer made) */
  flags: number;
  /** With SEGMENT_FLAG_ERASED_GAPS: how many LSNs from firstLsn the segment covers; 0 otherwise. */
  lsnSpan: number;
  salt: number;
  firstLsn: number;
  /** crc32 of the first 28 header bytes: the seed of every record checksum in the segment. */
  seed: number;
}

export function encodeSegmentHeader(firstLsn: number, salt: number, erasedGaps?: { lsnSpan: number }): { bytes: Buffer; header: SegmentHeader } {
  const bytes = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(bytes, 0);
  bytes.writeUInt16LE(SEGMENT_FORMAT_VERSION, 8);
  const flags = erasedGaps === undefined ? 0 : SEGMENT_FLAG_ERASED_GAPS;
  const lsnSpan = erasedGaps?.lsnSpan ?? 0;
  bytes.writeUInt16LE(flags, 10);
  bytes.writeUInt32LE(salt >>> 0, 12);
  bytes.writeBigUInt64LE(BigInt(firstLsn), 16);
  bytes.writeUInt32LE(lsnSpan, 24);
  const seed = crc32(bytes.subarray(0, 28));
  bytes.writeUInt32LE(seed, 28);
  return { bytes, header: { version: SEGMENT_FORMAT_VERSION, flags, lsnSpan, salt: salt >>> 0, firstLsn, seed } };
}

/** Why a header was refused, or the header. */
export function decodeSegmentHeader(bytes: Uint8Array): SegmentHeader | string {
  if (bytes.length < SEGMENT_HEADER_BYTES) return `header is ${bytes.length} bytes, expected ${SEGMENT_HEADER_BYTES}`;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, SEGMENT_HEADER_BYTES);
  if (!b.subarray(0, 8).equals(SEGMENT_MAGIC)) return 'bad magic';
  const seed = crc32(b.subarray(0, 28));
  if (b.readUInt32LE(28) !== seed) return 'header checksum mismatch';
  const version = b.readUInt16LE(8);
  if (version !== SEGMENT_FORMAT_VERSION) return `unsupported segment format version ${version}`;
  const firstLsn = b.readBigUInt64LE(16);
  if (firstLsn < 1n || firstLsn > BigInt(Number.MAX_SAFE_INTEGER)) return `first LSN ${firstLsn} out of range`;
  const flags = b.readUInt16LE(10);
  if ((flags & ~SEGMENT_FLAG_ERASED_GAPS) !== 0) return `unknown segment flags ${flags}`;
  const lsnSpan = flags & SEGMENT_FLAG_ERASED_GAPS ? b.readUInt32LE(24) : 0;
  return { version, flags, lsnSpan, salt: b.readUInt32LE(12), firstLsn: Number(firstLsn), seed };
}

/** Byte offsets inside a record frame. */
export const FRAME_CRC_OFFSET = 0;
export const FRAME_LENGTH_OFFSET = 4;

/** The record checksum: seeded with the segment, covering the length field and the payload. */
export function recordCrc(seed: number, lengthField: Uint8Array, payload: Uint8Array): number {
  return crc32(payload, crc32(lengthField, seed));
}

/**
 * The checksum of a whole frame in place: its length field and payload are contiguous (bytes 4..end).
 * The frame is `bytes[at, end)` (all of `bytes` by default): scans pass the range instead of a view of it.
 */
export function frameCrc(seed: number, bytes: Uint8Array, at = 0, end = bytes.length): number {
  return crc32(bytes.subarray(at + FRAME_LENGTH_OFFSET, end), seed);
}

/**
 * The payload as JSON text, encoded once at append time. Key order is fixed
 * (lsn, sid, seq, …) so a torn or damaged record still shows which session it
 * belonged to. `sid` is a validated id and needs no escaping. Returns undefined
 * when `data` has no JSON form (`undefined`, a function).
 */
export function encodePayload(lsn: number, sid: string, seq: number, ts: number, type: string, v: number, data: unknown, cid: string | undefined): string | undefined {
  const json = JSON.stringify(data);
  if (json === undefined) return undefined;
  const head = `{"lsn":${lsn},"sid":"${sid}","seq":${seq},"ts":${ts},"type":${JSON.stringify(type)},"v":${v},"data":${json}`;
  return cid === undefined ? `${head}}` : `${head},"cid":${JSON.stringify(cid)}}`;
}

const K_LSN = Buffer.from('{"lsn":', 'latin1');
const K_SID = Buffer.from(',"sid":"', 'latin1');
const K_SEQ = Buffer.from('","seq":', 'latin1');
const K_TS = Buffer.from(',"ts":', 'latin1');
const K_TYPE = Buffer.from(',"type":', 'latin1');
const K_V = Buffer.from(',"v":', 'latin1');
const K_DATA = Buffer.from(',"data":', 'latin1');
const K_CID = Buffer.from(',"cid":', 'latin1');
/** The fixed bytes of a payload plus room for its four numbers (at most 24 characters each) and the closing brace. */
export const PAYLOAD_FIXED_BYTES = K_LSN.length + K_SID.length + K_SEQ.length + K_TS.length + K_TYPE.length + K_V.length + K_DATA.length + K_CID.length + 4 * 24 + 1;

function putBytes(buf: Buffer, at: number, lit: Uint8Array): number {
  for (let i = 0; i < lit.length; i += 1) buf[at + i] = lit[i]!;
  return at + lit.length;
}

/** Digits of a non-negative integer below 2³¹, written backwards from `end` (exclusive); returns where they start. */
function putSmallDigitsBackwards(buf: Buffer, end: number, n: number, minDigits: number): number {
  let i = end;
  let x = n;
  do {
    const q = (x / 10) | 0;
    buf[--i] = 0x30 + x - q * 10;
    x = q;
  } while (x > 0 || end - i < minDigits);
  return i;
}

function digitCount(n: number): number {
  let d = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) d += 1;
  return d;
}

/** The last timestamp written and its digits: appends within one millisecond share them. */
let lastTs = -1;
let lastTsBytes: Buffer = Buffer.alloc(0);

/** A number as JSON (what JSON.stringify and template strings print), in ASCII. */
function putNumber(buf: Buffer, at: number, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) return at + buf.write(String(n), at, 'latin1');
  if (n < 0x7fffffff) {
    const d = n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : digitCount(n);
    putSmallDigitsBackwards(buf, at + d, n, 1);
    return at + d;
  }
  // Above 2³¹ (timestamps): the low 8 digits, zero-padded, and the rest, each in 32-bit arithmetic.
  const hi = Math.floor(n / 1e8);
  const lo = n - hi * 1e8;
  const d = digitCount(hi) + 8;
  putSmallDigitsBackwards(buf, at + d, lo, 8);
  putSmallDigitsBackwards(buf, at + d - 8, hi, 1);
  return at + d;
}

/** putNumber for the timestamp, which repeats from append to append. */
function putTs(buf: Buffer, at: number, ts: number): number {
  if (ts !== lastTs) {
    const scratch = Buffer.allocUnsafe(32);
    const n = putNumber(scratch, 0, ts);
    lastTsBytes = scratch.subarray(0, n);
    lastTs = ts;
  }
  return putBytes(buf, at, lastTsBytes);
}

/**
 * The UTF-8 bytes a payload holds between its `ts` and its data:
 * `,"type":<type as JSON>,"v":<v>,"data":`. Type and version repeat from
 * append to append, so the journal keeps these per type and copies them.
 */
export function encodeTypeAndVersion(type: string, v: number): Buffer {
  return Buffer.from(`,"type":${JSON.stringify(type)},"v":${v},"data":`, 'utf8');
}

/**
 * What encodePayload returns, written as UTF-8 straight into `buf` at `at`,
 * from the pieces already serialised (`typeAndV` is encodeTypeAndVersion of
 * the type and version; `dataJson` and `cidJson` are JSON.stringify of the
 * data and the cid). The caller reserves `PAYLOAD_FIXED_BYTES + sid.length +
 * typeAndV.length + 3 × (dataJson + cidJson lengths)` bytes. Returns the
 * payload's byte length.
 */
export function encodePayloadInto(buf: Buffer, at: number, lsn: number, sid: string, seq: number, ts: number, typeAndV: Uint8Array, dataJson: string, cidJson: string | undefined): number {
  let p = putBytes(buf, at, K_LSN);
  p = putNumber(buf, p, lsn);
  p = putBytes(buf, p, K_SID);
  // a validated session id: ASCII, no escaping
  for (let i = 0; i < sid.length; i += 1) buf[p + i] = sid.charCodeAt(i);
  p += sid.length;
  p = putBytes(buf, p, K_SEQ);
  p = putNumber(buf, p, seq);
  p = putBytes(buf, p, K_TS);
  p = putTs(buf, p, ts);
  buf.set(typeAndV, p);
  p += typeAndV.length;
  p += buf.write(dataJson, p, 'utf8');
  if (cidJson !== undefined) {
    p = putBytes(buf, p, K_CID);
    p += buf.write(cidJson, p, 'utf8');
  }
  buf[p] = BRACE_BYTE;
  return p + 1 - at;
}
const BRACE_BYTE = 0x7d;

function isPositiveInt(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1;
}

/** Parses and checks a payload whose checksum already matched. Returns the record or why it was refused. */
export function decodePayload(payload: Uint8Array): JournalRecord | string {
  return decodePayloadAt(Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.length), 0, payload.length);
}

/**
 * decodePayload of the payload at [start, end) of `buf`, decoded from the buffer
 * as it is: the recovery pass decodes a million records, and a view of each (two
 * Buffer objects: subarray, then Buffer.from) cost ~110 ns of the ~170 ns its
 * UTF-8 decoding took on Node 20.
 */
export function decodePayloadAt(buf: Buffer, start: number, end: number): JournalRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8', start, end));
  } catch {
    return 'payload is not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'payload is not an object';
  const r = value as Record<string, unknown>;
  if (!isPositiveInt(r.lsn)) return 'lsn is not a positive integer';
  if (!isSessionId(r.sid)) return 'sid is not a valid session id';
  if (!isPositiveInt(r.seq)) return 'seq is not a positive integer';
  if (typeof r.ts !== 'number' || !Number.isFinite(r.ts)) return 'ts is not a number';
  if (typeof r.type !== 'string' || r.type.length === 0) return 'type is not a non-empty string';
  if (!isPositiveInt(r.v)) return 'v is not a positive integer';
  if (!('data' in r)) return 'data is missing';
  if (r.cid !== undefined && typeof r.cid !== 'string') return 'cid is not a string';
  return r as unknown as JournalRecord;
}

/** The session id at the start of a torn payload, if enough of it survived (see encodePayloadTail). */
export function sessionOfTornPayload(bytes: Uint8Array): string | undefined {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 200)).toString('latin1');
  const m = /^\{"lsn":\d+,"sid":"([A-Za-z0-9_-]{1,128})"/.exec(head);
  return m?.[1];
}

/** What the journal's index needs of a record: everything but its type and data. */
export interface RecordHead {
  lsn: number;
  sid: string;
  seq: number;
  ts: number;
  cid?: string;
}

const CID_KEY = Buffer.from(',"cid":"', 'latin1');
const P_LSN = Buffer.from('{"lsn":', 'latin1');
const P_SID = Buffer.from(',"sid":"', 'latin1');
const P_SEQ = Buffer.from('","seq":', 'latin1');
const P_TS = Buffer.from(',"ts":', 'latin1');
const P_TYPE = Buffer.from(',"type":"', 'latin1');
const QUOTE = 0x22;
const BRACE = 0x7d;

function at(buf: Uint8Array, pos: number, lit: Uint8Array): boolean {
  if (pos + lit.length > buf.length) return false;
  for (let i = 0; i < lit.length; i += 1) if (buf[pos + i] !== lit[i]) return false;
  return true;
}

/** Digits from `pos` (1..16 of them); returns [value, end] or undefined. */
function digits(buf: Uint8Array, pos: number): [number, number] | undefined {
  let n = 0;
  let i = pos;
  while (i < buf.length && i - pos < 16) {
    const c = buf[i]!;
    if (c < 0x30 || c > 0x39) break;
    n = n * 10 + (c - 0x30);
    i += 1;
  }
  return i === pos ? undefined : [n, i];
}

function isIdByte(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2d;
}

/**
 * The head of a payload whose checksum already matched, without parsing its
 * data: what opening the journal needs to index a record (a full JSON.parse of
 * every record would dominate a restart). Reads encodePayload's fixed key
 * order byte by byte; anything else falls back to decodePayload, so the
 * result is the same.
 *
 * The cid, when present, is the payload's last member: the payload then ends
 * with a JSON string and `}`. The raw bytes `,"cid":"` cannot occur inside a
 * JSON string (its quotes would be escaped), and a nested object's last member
 * would end the payload with `}}`, so the last occurrence is the record's own.
 */
export function decodeHead(payload: Uint8Array): RecordHead | string {
  const buf = payload instanceof Buffer ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const len = buf.length;
  // The usual head in one native step (the regular expression and the latin1 copy are compiled code
  // from the first call on, while a byte loop runs interpreted until it is hot: a restart's tail
  // scan calls this 10,000 times and is over before that).
  // Most heads fit the short prefix (ids of up to ~40 characters); the longest one fits the long.
  let m = HEAD.exec(buf.toString('latin1', 0, len < HEAD_SHORT_BYTES ? len : HEAD_SHORT_BYTES));
  if (m === null && len > HEAD_SHORT_BYTES) m = HEAD.exec(buf.toString('latin1', 0, len < HEAD_PREFIX_BYTES ? len : HEAD_PREFIX_BYTES));
  if (m === null) return decodeHeadByBytes(buf, payload);
  const lsn = Number(m[1]);
  const seq = Number(m[3]);
  if (!isPositiveInt(lsn) || !isPositiveInt(seq)) return headOf(decodePayload(payload));
  if (buf[len - 1] !== BRACE) return 'payload is not an object';
  return withCid(buf, len, m[0].length - P_TYPE.length, { lsn, sid: m[2]!, seq, ts: Number(m[4]) }, payload);
}

/**
 * encodePayload's head with an integer ts, as decodeHeadByBytes reads it: each number 1..16
 * digits, the id 1..128 id bytes. Matched on the first HEAD_PREFIX_BYTES bytes (the longest head).
 */
const HEAD = /^\{"lsn":(\d{1,16}),"sid":"([A-Za-z0-9_-]{1,128})","seq":(\d{1,16}),"ts":(\d{1,16}),"type":"/;
const HEAD_PREFIX_BYTES = 224;
const HEAD_SHORT_BYTES = 112;

/** The head with its cid, when the payload ends with one (see decodeHead); `tsEnd` is where the ts ends. */
function withCid(buf: Buffer, len: number, tsEnd: number, head: RecordHead, payload: Uint8Array): RecordHead | string {
  if (buf[len - 2] !== QUOTE) return head;
  const c = buf.lastIndexOf(CID_KEY);
  if (c < tsEnd) return head;
  let cid: unknown;
  try {
    cid = JSON.parse(buf.toString('utf8', c + CID_KEY.length - 1, len - 1));
  } catch {
    return headOf(decodePayload(payload));
  }
  return typeof cid === 'string' ? { ...head, cid } : headOf(decodePayload(payload));
}

/** decodeHead byte by byte: heads the regular expression does not take (a ts with a fraction or an exponent, or not ours at all). */
function decodeHeadByBytes(buf: Buffer, payload: Uint8Array): RecordHead | string {
  const len = buf.length;
  if (!at(buf, 0, P_LSN)) return headOf(decodePayload(payload));
  const l = digits(buf, P_LSN.length);
  if (l === undefined || !at(buf, l[1], P_SID)) return headOf(decodePayload(payload));
  const sidStart = l[1] + P_SID.length;
  let sidEnd = sidStart;
  while (sidEnd < len && sidEnd - sidStart <= 128 && isIdByte(buf[sidEnd]!)) sidEnd += 1;
  if (sidEnd === sidStart || sidEnd - sidStart > 128 || !at(buf, sidEnd, P_SEQ)) return headOf(decodePayload(payload));
  const q = digits(buf, sidEnd + P_SEQ.length);
  if (q === undefined || !at(buf, q[1], P_TS)) return headOf(decodePayload(payload));
  const tsStart = q[1] + P_TS.length;
  const t = digits(buf, tsStart);
  let ts: number;
  let tsEnd: number;
  if (t !== undefined && at(buf, t[1], P_TYPE)) {
    [ts, tsEnd] = t;
  } else {
    // not a plain integer (a fraction or an exponent): read the number up to the next key
    tsEnd = buf.indexOf(P_TYPE, tsStart);
    if (tsEnd < 0 || tsEnd - tsStart > 32) return headOf(decodePayload(payload));
    ts = Number(buf.toString('latin1', tsStart, tsEnd));
  }
  const lsn = l[0];
  const seq = q[0];
  if (!isPositiveInt(lsn) || !isPositiveInt(seq) || !Number.isFinite(ts)) return headOf(decodePayload(payload));
  if (buf[len - 1] !== BRACE) return 'payload is not an object';
  return withCid(buf, len, tsEnd, { lsn, sid: buf.toString('latin1', sidStart, sidEnd), seq, ts }, payload);
}

function headOf(record: JournalRecord | string): RecordHead | string {
  if (typeof record === 'string') return record;
  return record.cid === undefined ? { lsn: record.lsn, sid: record.sid, seq: record.seq, ts: record.ts } : { lsn: record.lsn, sid: record.sid, seq: record.seq, ts: record.ts, cid: record.cid };
}
