/**
 * Where a session's unreleased records are: flattened [seq, segmentId, offset, frameBytes] per
 * record, in log order, in Float64Arrays rather than a JS array. A restart on 10,000 sessions ×
 * 100 events adopts a million locations from the journal index; as JS arrays they were 10,000
 * arrays of 400 numbers that the garbage collector copied and scanned (more than half of
 * createArbor's time in a profile), while a typed array's bytes are off the JS heap.
 *
 * The locations adopted from the journal index come first. They stay as the index's bytes
 * (`fromIndex`) until one of them is read: open then costs nothing per record, and a session
 * whose adopted records a snapshot releases before anyone reads them is never decoded (the
 * recovery pass replays the segments, not the locations). Decoding a million of them at open
 * took ~150 ms of createArbor's time.
 *
 * Records are added at the end (`push`) and released from the start (`dropFirst`, when a snapshot
 * covers them). What is pushed goes into chunks of CHUNK numbers (128 records, 4 KiB; a session's
 * first one starts small) that are never copied once whole. A session's first chunk starts as a
 * plain array of FIRST_CHUNK numbers: a typed array costs ~2 µs to create on this VM (its backing
 * store is allocated apart from the heap and counted as external memory), and a restart's tail scan
 * gives each of 10,000 sessions its first pushed record (~20 ms of createArbor, and the external
 * memory it added started garbage collections). One growing array, doubled and
 * copied, had the allocator zero and the CPU copy about twice what it kept: ~0.3 µs per append in
 * bench/journal at 1,000 sessions (fresh pages are expensive on a virtual machine). Released whole
 * chunks go to a small shared pool.
 */
const EMPTY = new Float64Array(0);
const SHIFT = 9;
const CHUNK = 1 << SHIFT;
const MASK = CHUNK - 1;
/** Released chunks kept for reuse by any session (at most 4 MiB). */
const pool: Float64Array[] = [];
const POOL_MAX = 1024;
/** A session's first chunk starts as a plain array of 4 records, then grows ×4 as typed arrays until it is a whole chunk. */
const FIRST_CHUNK = 16;

/** A chunk: a plain array of doubles while it is a session's first, small one (see Locs); then typed. */
type Chunk = Float64Array | number[];

/**
 * The journal index's encoding of one session's locations (format version 2, docs/checkpoint-format.md),
 * about a third of the 16 bytes per location of version 1: runs of records in one segment, the
 * numbers of each record as varints (LEB128, unsigned) relative to the record before it.
 *
 *   locs  = run*
 *   run   = segment:varint count:varint bytes:varint rec{count}     (segment: position in the index's list;
 *                                                                     bytes: length of the rec part)
 *   rec   = head:varint [seqDelta:varint] frameDelta:varint
 *   head  = offsetDelta × 2 + (1 when seqDelta ≠ 1, and then seqDelta follows, zigzag)
 *
 * offsetDelta is the offset minus the previous record's in the run (the first record's is its
 * offset); seqDelta the seq minus the session's previous record's (the first one's: minus 0);
 * frameDelta the frame size minus the previous record's in the run (the first: minus 0), zigzag.
 * A record at a lower offset than the one before it in the same segment starts a new run.
 *
 * Open reads only the run headers (segment and count: the segments' live counts, and every
 * segment position checked); the records are decoded when the session's locations are first read.
 */
const VARINT_MAX_BYTES = 8;

/** Where readVarint stopped (the next byte to read), or -1 when the bytes ran out or the number is too long. */
let cursor = 0;

/** An unsigned LEB128 varint at `cursor`, below `end`; sets `cursor` past it, or to -1 when malformed. */
function readVarint(b: Uint8Array, end: number): number {
  let p = cursor;
  let value = 0;
  let scale = 1;
  for (let k = 0; k < VARINT_MAX_BYTES && p < end; k += 1) {
    const c = b[p++]!;
    value += (c & 0x7f) * scale;
    if (c < 0x80) {
      cursor = p;
      return value;
    }
    scale *= 128;
  }
  cursor = -1;
  return 0;
}

function writeVarint(b: Uint8Array, at: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    b[at++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  b[at++] = v;
  return at;
}

const zigzag = (n: number): number => (n < 0 ? -n * 2 - 1 : n * 2);
const unzigzag = (z: number): number => (z % 2 === 1 ? -(z + 1) / 2 : z / 2);

/** Scratch space of encodeIndexLocs (grown when a session needs more). */
let scratch = new Uint8Array(64 * 1024);

/**
 * The index's bytes for `locs` (flattened [seq, segmentId, offset, frameBytes]*), segment ids mapped
 * through `segPos`; undefined when a location's segment is not there or a number is not a
 * non-negative safe integer (then no index is written).
 */
export function encodeIndexLocs(locs: Float64Array, segPos: ReadonlyMap<number, number>): Uint8Array | undefined {
  const n = locs.length;
  // Worst case: a run per record, 3 header varints and 3 record varints of at most 8 bytes each.
  const worst = (n / 4) * 6 * VARINT_MAX_BYTES;
  if (scratch.length < worst) scratch = new Uint8Array(worst);
  const b = scratch;
  let p = 0;
  let prevSeq = 0;
  let i = 0;
  while (i < n) {
    const segId = locs[i + 1]!;
    const pos = segPos.get(segId);
    if (pos === undefined) return undefined;
    // The run: records in this segment at non-decreasing offsets.
    let j = i;
    while (j + 4 < n && locs[j + 5]! === segId && locs[j + 6]! >= locs[j + 2]!) j += 4;
    const count = (j - i) / 4 + 1;
    // Its records go first into the scratch past the worst-case header, then are moved up behind the header.
    const recStart = p + 3 * VARINT_MAX_BYTES;
    let q = recStart;
    let prevOffset = 0;
    let prevFrame = 0;
    for (let k = i; k <= j; k += 4) {
      const seq = locs[k]!;
      const offset = locs[k + 2]!;
      const frame = locs[k + 3]!;
      if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(offset) || !Number.isSafeInteger(frame) || seq < 0 || offset < 0 || frame < 0 || offset * 2 + 1 > Number.MAX_SAFE_INTEGER) return undefined;
      const seqDelta = seq - prevSeq;
      if (seqDelta === 1) q = writeVarint(b, q, (offset - prevOffset) * 2);
      else {
        q = writeVarint(b, q, (offset - prevOffset) * 2 + 1);
        q = writeVarint(b, q, zigzag(seqDelta));
      }
      q = writeVarint(b, q, zigzag(frame - prevFrame));
      prevSeq = seq;
      prevOffset = offset;
      prevFrame = frame;
    }
    p = writeVarint(b, p, pos);
    p = writeVarint(b, p, count);
    p = writeVarint(b, p, q - recStart);
    b.copyWithin(p, recStart, q);
    p += q - recStart;
    i = j + 4;
  }
  return b.slice(0, p);
}

/**
 * Checks the run headers of one session's encoded locations (every segment position below
 * `segments`, every run within the bytes and non-empty, the runs in log order, nothing after the
 * last) and adds each run's count to `counts[segment position]`. Returns the number of
 * locations, or -1 when the bytes are not well formed. Records are not decoded.
 */
export function checkIndexLocs(bytes: Uint8Array, segments: number, counts: Float64Array): number {
  const end = bytes.length;
  let total = 0;
  let lastPos = 0;
  cursor = 0;
  while (cursor < end) {
    const pos = readVarint(bytes, end);
    const count = cursor < 0 ? 0 : readVarint(bytes, end);
    const length = cursor < 0 ? 0 : readVarint(bytes, end);
    // each record is at least 2 bytes (two varints), at most 3 × VARINT_MAX_BYTES
    if (cursor < 0 || pos >= segments || pos < lastPos || count < 1 || length < 2 * count || length > 3 * VARINT_MAX_BYTES * count || cursor + length > end) return -1;
    counts[pos] = counts[pos]! + count;
    total += count;
    lastPos = pos;
    cursor += length;
  }
  return total;
}

/** One record's four numbers into a typed chunk (only ever a Float64Array here: see Locs.push). */
function setRecord(a: Float64Array, e: number, seq: number, segmentId: number, offset: number, frameBytes: number): void {
  a[e] = seq;
  a[e + 1] = segmentId;
  a[e + 2] = offset;
  a[e + 3] = frameBytes;
}

function newChunk(): Float64Array {
  return pool.pop() ?? new Float64Array(CHUNK);
}

function release(chunk: Chunk): void {
  if (!Array.isArray(chunk) && chunk.length === CHUNK && pool.length < POOL_MAX) pool.push(chunk);
}

interface Encoded {
  /** the index's bytes (checked by checkIndexLocs) */
  bytes: Uint8Array;
  /** segment position → segment id */
  segIds: readonly number[];
  /** segment ids deleted since the index was written: their locations are left out */
  deleted: ReadonlySet<number> | undefined;
}

export class Locs {
  /** the adopted array: positions [0, #firstLen) (still encoded while #encoded is set) */
  #first: Float64Array;
  #firstLen: number;
  #encoded: Encoded | undefined;
  /** then chunk k holds positions #firstLen + k·CHUNK … */
  #chunks: Chunk[] = [];
  /** live positions: [#start, #end) */
  #start = 0;
  #end: number;

  /** Takes `values` (a multiple of 4 numbers) as they are, without a copy. */
  constructor(values: Float64Array = EMPTY) {
    this.#first = values;
    this.#firstLen = values.length;
    this.#end = values.length;
  }

  /**
   * Locations as the journal index stores them (encodeIndexLocs; `count` of them, as
   * checkIndexLocs found, which checked every segment position is in `segIds`), decoded when
   * first read. `bytes` is kept, not copied.
   */
  static fromIndex(bytes: Uint8Array, segIds: readonly number[], count: number): Locs {
    const locs = new Locs();
    if (count === 0) return locs;
    locs.#encoded = { bytes, segIds, deleted: undefined };
    locs.#firstLen = locs.#end = count * 4;
    return locs;
  }

  /** Drops the locations in `segments` (deleted since they were recorded). */
  dropSegments(segments: ReadonlySet<number>): void {
    if (segments.size === 0) return;
    const e = this.#encoded;
    if (e !== undefined && e.deleted === undefined && this.#start === 0 && this.#chunks.length === 0) {
      // Still encoded: counted now (from the run headers), left out when decoded.
      let kept = 0;
      forEachRun(e.bytes, (pos, count) => {
        if (!segments.has(e.segIds[pos]!)) kept += count * 4;
        return true;
      });
      e.deleted = segments;
      this.#firstLen = this.#end = kept;
      if (kept === 0) this.#clear();
      return;
    }
    const all = this.head(this.length);
    const kept = new Float64Array(all.length);
    let n = 0;
    for (let i = 0; i < all.length; i += 4) {
      if (segments.has(all[i + 1]!)) continue;
      kept.set(all.subarray(i, i + 4), n);
      n += 4;
    }
    this.#clear();
    this.#first = kept.subarray(0, n);
    this.#firstLen = this.#end = n;
  }

  /** The segment of the first (oldest) location, without decoding adopted ones; undefined when empty. */
  firstSegment(): number | undefined {
    if (this.#end === this.#start) return undefined;
    const e = this.#encoded;
    if (e !== undefined && this.#start === 0) {
      let first: number | undefined;
      forEachRun(e.bytes, (pos) => {
        const id = e.segIds[pos]!;
        if (e.deleted !== undefined && e.deleted.has(id)) return true;
        first = id;
        return false;
      });
      if (first !== undefined) return first;
    }
    return this.at(1);
  }

  /** Numbers held: 4 per record. */
  get length(): number {
    return this.#end - this.#start;
  }

  /** The `i`-th number (i < length). */
  at(i: number): number {
    const p = this.#start + i;
    const f = this.#firstLen;
    if (p < f) {
      if (this.#encoded !== undefined) this.#decode();
      return this.#first[p]!;
    }
    const q = p - f;
    return this.#chunks[q >> SHIFT]![q & MASK]!;
  }

  set(i: number, value: number): void {
    const p = this.#start + i;
    const f = this.#firstLen;
    if (p < f) {
      if (this.#encoded !== undefined) this.#decode();
      this.#first[p] = value;
      return;
    }
    const q = p - f;
    this.#chunks[q >> SHIFT]![q & MASK] = value;
  }

  /** Adds a location at the end (adopted ones stay encoded). */
  push(seq: number, segmentId: number, offset: number, frameBytes: number): void {
    // Chunks hold a multiple of 4 numbers, so a record never straddles two.
    const q = this.#end - this.#firstLen;
    const e = q & MASK;
    const a = this.#chunks[q >> SHIFT];
    // The common case, kept to typed arrays only: with a session's small plain first chunk stored to
    // at the same place, these stores saw five kinds of arrays and went generic (~170 ns per push
    // instead of ~25 at 1,000 sessions round robin).
    if (a instanceof Float64Array && e < a.length) {
      setRecord(a, e, seq, segmentId, offset, frameBytes);
      this.#end += 4;
      return;
    }
    this.#pushGrowing(q, seq, segmentId, offset, frameBytes);
  }

  /** push() when the chunk is missing, full, or still a session's small plain first one. */
  #pushGrowing(q: number, seq: number, segmentId: number, offset: number, frameBytes: number): void {
    const k = q >> SHIFT;
    const e = q & MASK;
    const chunks = this.#chunks;
    const a = chunks[k];
    this.#end += 4;
    if (a === undefined) {
      // A session's first chunk starts small (most sessions are short) and grows to a whole one.
      if (k === 0) chunks[k] = [seq, segmentId, offset, frameBytes];
      else setRecord(chunks[k] = newChunk(), e, seq, segmentId, offset, frameBytes);
      return;
    }
    if (Array.isArray(a) && e < FIRST_CHUNK) {
      a.push(seq, segmentId, offset, frameBytes);
      return;
    }
    const b = a.length * 4 >= CHUNK ? newChunk() : new Float64Array(Math.max(FIRST_CHUNK, a.length) * 4);
    b.set(a);
    chunks[k] = b;
    setRecord(b, e, seq, segmentId, offset, frameBytes);
  }

  /** Releases the first `n` numbers (a multiple of 4). */
  dropFirst(n: number): void {
    this.#start += n;
    if (this.#start >= this.#end) {
      for (const c of this.#chunks) release(c);
      this.#clear();
      return;
    }
    // Give back what lies wholly before the start: the adopted array (never decoded, if it was not
    // read), then whole chunks.
    let f = this.#firstLen;
    if (f > 0 && this.#start >= f) {
      this.#first = EMPTY;
      this.#encoded = undefined;
      this.#firstLen = 0;
      this.#start -= f;
      this.#end -= f;
      f = 0;
    }
    if (f === 0 && this.#start >= CHUNK) {
      const whole = this.#start >> SHIFT;
      for (const c of this.#chunks.splice(0, whole)) release(c);
      this.#start -= whole * CHUNK;
      this.#end -= whole * CHUNK;
    }
  }

  /** A copy of the first `n` numbers. */
  head(n: number): Float64Array {
    const out = new Float64Array(n);
    let p = this.#start;
    let o = 0;
    const f = this.#firstLen;
    if (p < f) {
      if (this.#encoded !== undefined) this.#decode();
      const take = Math.min(n, f - p);
      out.set(this.#first.subarray(p, p + take), 0);
      o = take;
      p += take;
    }
    while (o < n) {
      const q = p - f;
      const chunk = this.#chunks[q >> SHIFT]!;
      const from = q & MASK;
      const take = Math.min(n - o, CHUNK - from);
      if (Array.isArray(chunk)) for (let i = 0; i < take; i += 1) out[o + i] = chunk[from + i]!;
      else out.set(chunk.subarray(from, from + take), o);
      o += take;
      p += take;
    }
    return out;
  }

  #clear(): void {
    this.#chunks = [];
    this.#first = EMPTY;
    this.#encoded = undefined;
    this.#firstLen = 0;
    this.#start = this.#end = 0;
  }

  /** Decodes the adopted locations (leaving out those in deleted segments) into #first. */
  #decode(): void {
    const { bytes, segIds, deleted } = this.#encoded!;
    this.#encoded = undefined;
    const a = new Float64Array(this.#firstLen);
    const end = bytes.length;
    let n = 0;
    let seq = 0;
    cursor = 0;
    while (cursor < end && cursor >= 0) {
      const seg = segIds[readVarint(bytes, end)]!;
      const count = readVarint(bytes, end);
      const length = readVarint(bytes, end);
      const runEnd = cursor + length;
      if (deleted !== undefined && deleted.has(seg)) {
        // Skipped; its seqs still count for the deltas of the records after it.
        for (let k = 0; k < count && cursor >= 0; k += 1) {
          const head = readVarint(bytes, runEnd);
          seq += head % 2 === 1 && cursor >= 0 ? unzigzag(readVarint(bytes, runEnd)) : 1;
          if (cursor >= 0) readVarint(bytes, runEnd);
        }
      } else {
        let offset = 0;
        let frame = 0;
        for (let k = 0; k < count && cursor >= 0 && n < a.length; k += 1) {
          const head = readVarint(bytes, runEnd);
          const odd = head % 2 === 1;
          offset += (head - (odd ? 1 : 0)) / 2;
          seq += odd && cursor >= 0 ? unzigzag(readVarint(bytes, runEnd)) : 1;
          if (cursor >= 0) frame += unzigzag(readVarint(bytes, runEnd));
          a[n] = seq;
          a[n + 1] = seg;
          a[n + 2] = offset;
          a[n + 3] = frame;
          n += 4;
        }
      }
      if (cursor !== runEnd) break;
    }
    if (n !== a.length) {
      // Not what encodeIndexLocs writes (its run headers were checked at open, its checksum matched): the
      // locations that did not decode read as frames past any segment's end, which fail their read-back check.
      for (let i = n; i < a.length; i += 4) {
        a[i] = a[i - 4] ?? 0;
        a[i + 1] = segIds[0] ?? 0;
        a[i + 2] = 2 ** 40;
        a[i + 3] = 48;
      }
    }
    this.#first = a;
  }
}

/** Calls `f` with each run's segment position and count (until it returns false); the run headers were checked at open. */
function forEachRun(bytes: Uint8Array, f: (pos: number, count: number) => boolean): void {
  const end = bytes.length;
  cursor = 0;
  while (cursor < end && cursor >= 0) {
    const pos = readVarint(bytes, end);
    const count = readVarint(bytes, end);
    const length = readVarint(bytes, end);
    if (cursor < 0 || !f(pos, count)) return;
    cursor += length;
  }
}
