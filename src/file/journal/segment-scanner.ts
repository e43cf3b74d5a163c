import {
  FRAME_HEADER_BYTES,
  MIN_PAYLOAD_BYTES,
  SEGMENT_HEADER_BYTES,
  decodePayload,
  decodeSegmentHeader,
  SEGMENT_FLAG_ERASED_GAPS,
  FRAME_LENGTH_OFFSET,
  frameCrc,
  recordCrc,
  sessionOfTornPayload,
  type JournalRecord,
  type SegmentHeader,
} from './format.ts';

/** A region of a segment that held no valid record although valid records follow it (or the segment is sealed). */
export interface DamagedRegion {
  offset: number;
  length: number;
  reason: string;
  /** LSNs missing between the last good record before the region and the first good one after it, inclusive. */
  lostLsns?: [number, number];
  /** Sessions (and seqs, where legible) still readable in the damaged bytes: the ones that may have lost an event here. */
  sessions?: { sid: string; seq?: number }[];
}

/**
 * Sessions legible in damaged bytes; best effort, for quarantine. Payloads start
 * `{"lsn":N,"sid":"<id>","seq":S`; the pattern tolerates one damaged byte in
 * each key and in the punctuation around the id, so a single flipped byte
 * outside the id itself still names the session.
 */
const LEGIBLE_SESSION = /(?:.id|s.d|si.).{3}([A-Za-z0-9_-]{1,128}).{3}(?:.eq|s.q|se.).{2}(\d{1,15})?/gs;

function legibleSessions(bytes: Uint8Array): { sid: string; seq?: number }[] | undefined {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
  const found: { sid: string; seq?: number }[] = [];
  for (const m of text.matchAll(LEGIBLE_SESSION)) found.push(m[2] === undefined ? { sid: m[1]! } : { sid: m[1]!, seq: Number(m[2]) });
  return found.length === 0 ? undefined : found;
}

function region(view: Uint8Array, offset: number, length: number, reason: string, lostLsns?: [number, number]): DamagedRegion {
  const sessions = legibleSessions(view.subarray(offset, offset + length));
  return { offset, length, reason, ...(lostLsns === undefined ? {} : { lostLsns }), ...(sessions === undefined ? {} : { sessions }) };
}

/** The incomplete end of the last segment: a write the process did not finish. */
export interface TornTail {
  offset: number;
  bytes: number;
  /** The session whose record was torn, when enough of its payload survived to tell. */
  sessionId?: string;
}

export interface SegmentScan {
  header: SegmentHeader | undefined;
  /** Why the header was refused; the whole segment is then unreadable. */
  headerProblem?: string;
  /** The offset just past the last valid record (or the header): where appends may resume. */
  validEnd: number;
  records: number;
  /** LSN of the last valid record, or firstLsn - 1 when there is none. */
  lastLsn: number;
  damage: DamagedRegion[];
  torn?: TornTail;
}

export interface ScanOptions {
  /** Only the newest segment may end in a torn write; a sealed one was synced whole before the next was created. */
  isLast: boolean;
  maxRecordBytes: number;
  /**
   * `bytes` holds the segment's header followed by the file's bytes from
   * offset `at` on (the part after what a journal index already vouches for):
   * scanning starts there, after LSN `lastLsn`, and every offset reported is
   * the file's.
   */
  tail?: { at: number; lastLsn: number };
}

type Attempt<R> = { ok: true; record: R; end: number } | { ok: false; reason: string };

/**
 * Reads one segment from its bytes, calling `onRecord` for every valid record
 * in order. Never throws on content: every byte sequence yields a scan.
 * `decode` turns a checksummed payload into what `onRecord` receives (the whole
 * record by default; the journal's index only needs its head, see decodeHead).
 *
 * Policy (after leveldb's log_reader): a record is valid only if its length is
 * plausible, it fits in the file, its checksum matches (seeded with this
 * segment's header) and its payload decodes with an LSN above the previous one.
 * After an invalid record the length field is not trusted: the reader resyncs
 * by looking at every later offset for a valid record. Invalid bytes followed by
 * a valid record are corruption. Invalid bytes at the end of the newest segment
 * are a torn write when they look like one (incomplete, or zero-filled from a
 * sector boundary); anything else there is corruption too.
 */
export function scanSegment<R extends { lsn: number } = JournalRecord>(
  bytes: Uint8Array,
  options: ScanOptions,
  onRecord: (record: R, offset: number, frameBytes: number) => void,
  decode: (payload: Uint8Array) => R | string = decodePayload as unknown as (payload: Uint8Array) => R | string,
): SegmentScan {
  const size = bytes.length;
  const header = decodeSegmentHeader(bytes);
  if (typeof header === 'string') {
    return { header: undefined, headerProblem: header, validEnd: 0, records: 0, lastLsn: 0, damage: [region(bytes, 0, size, `segment header: ${header}`)] };
  }
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const damage: DamagedRegion[] = [];
  // In a tail scan, buffer position p is file offset p + shift.
  const shift = options.tail === undefined ? 0 : options.tail.at - SEGMENT_HEADER_BYTES;
  let lastLsn = options.tail?.lastLsn ?? header.firstLsn - 1;
  let pos = SEGMENT_HEADER_BYTES;
  let validEnd = pos;
  let records = 0;
  let torn: TornTail | undefined;

  const attempt = (at: number): Attempt<R> => {
    if (at + FRAME_HEADER_BYTES > size) return { ok: false, reason: 'frame header past end of file' };
    const length = view.readUInt32LE(at + FRAME_LENGTH_OFFSET);
    if (length < MIN_PAYLOAD_BYTES || length > options.maxRecordBytes) return { ok: false, reason: `implausible record length ${length}` };
    const end = at + FRAME_HEADER_BYTES + length;
    if (end > size) return { ok: false, reason: `record of ${length} bytes runs past end of file` };
    if (frameCrc(header.seed, view, at, end) !== view.readUInt32LE(at)) {
      return { ok: false, reason: 'checksum mismatch' };
    }
    const record = decode(view.subarray(at + FRAME_HEADER_BYTES, end));
    if (typeof record === 'string') return { ok: false, reason: record };
    if (record.lsn <= lastLsn) return { ok: false, reason: `lsn ${record.lsn} not above previous ${lastLsn}` };
    return { ok: true, record, end };
  };

  let resynced = false;
  while (pos < size) {
    const first = attempt(pos);
    if (first.ok) {
      // (after a resync the missing LSNs were already reported with the damaged region)
      if (first.record.lsn !== lastLsn + 1 && !resynced && (header.flags & SEGMENT_FLAG_ERASED_GAPS) === 0) {
        // Intact bytes but missing LSNs: records vanished without a trace (e.g. a hole punched at a frame boundary).
        damage.push({ offset: pos + shift, length: 0, reason: `lsn jumps from ${lastLsn} to ${first.record.lsn}`, lostLsns: [lastLsn + 1, first.record.lsn - 1] });
      }
      onRecord(first.record, pos + shift, first.end - pos);
      resynced = false;
      lastLsn = first.record.lsn;
      records += 1;
      pos = first.end;
      validEnd = pos;
      continue;
    }
    // The length field of a bad record cannot be trusted: look at every later offset.
    let next = pos + 1;
    let found: Attempt<R> | undefined;
    for (; next + FRAME_HEADER_BYTES + MIN_PAYLOAD_BYTES <= size; next += 1) {
      const candidate = attempt(next);
      if (candidate.ok) {
        found = candidate;
        break;
      }
    }
    if (found?.ok) {
      damage.push({ ...region(view, pos, next - pos, first.reason, [lastLsn + 1, found.record.lsn - 1]), offset: pos + shift });
      pos = next;
      resynced = true;
      continue;
    }
    // Nothing valid follows: the end of the segment.
    const tornReason = options.isLast ? looksTorn(view, pos, header.seed, shift) : undefined;
    if (tornReason !== undefined) {
      const sessionId = sessionOfTornPayload(view.subarray(Math.min(size, pos + FRAME_HEADER_BYTES)));
      torn = { offset: pos + shift, bytes: size - pos, ...(sessionId === undefined ? {} : { sessionId }) };
    } else {
      damage.push({ ...region(view, pos, size - pos, options.isLast ? `${first.reason} (not a torn write)` : `${first.reason} at the end of a sealed segment`), offset: pos + shift });
    }
    break;
  }
  // A segment rewritten by erasure covers its whole LSN span, erased records included.
  if (header.lsnSpan > 0) lastLsn = Math.max(lastLsn, header.firstLsn + header.lsnSpan - 1);
  return { header, validEnd: validEnd + shift, records, lastLsn, damage, ...(torn === undefined ? {} : { torn }) };
}

const SECTOR_BYTES = 512;

/**
 * Whether the invalid bytes from `pos` to the end of the file are what a
 * crashed append leaves: all zeros, a frame cut short, or a frame whose end was
 * zero-filled from a sector boundary. Returns a reason when torn.
 */
function looksTorn(view: Buffer, pos: number, seed: number, shift = 0): string | undefined {
  const size = view.length;
  let lastNonZero = size - 1;
  while (lastNonZero >= pos && view[lastNonZero] === 0) lastNonZero -= 1;
  if (lastNonZero < pos) return 'zero-filled';
  if (pos + FRAME_HEADER_BYTES > size) return 'frame header cut short';
  const length = view.readUInt32LE(pos + FRAME_LENGTH_OFFSET);
  if (pos + FRAME_HEADER_BYTES + length > size) {
    // A cut-short frame is a torn write, unless the rest of the file is exactly one
    // complete record whose length field alone was damaged.
    const altLength = size - pos - FRAME_HEADER_BYTES;
    const lengthBytes = Buffer.alloc(4);
    lengthBytes.writeUInt32LE(altLength);
    const payload = view.subarray(pos + FRAME_HEADER_BYTES);
    if (altLength >= MIN_PAYLOAD_BYTES && recordCrc(seed, lengthBytes, payload) === view.readUInt32LE(pos)) return undefined;
    return 'frame cut short';
  }
  // A complete frame with bad content is torn only if zeros run from a sector boundary to the end of the file.
  // Sector boundaries are the file's: compare in file offsets.
  const zeroFrom = lastNonZero + 1 + shift;
  const sectorStart = Math.ceil(zeroFrom / SECTOR_BYTES) * SECTOR_BYTES;
  if (sectorStart < size + shift && sectorStart > pos + shift) return 'zero-filled from a sector boundary';
  return undefined;
}
