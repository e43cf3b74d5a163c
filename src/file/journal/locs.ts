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
 * first one starts small) that are never copied once whole. One growing array, doubled and
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
/** A session's first chunk starts at 4 records and grows ×4 until it is a whole chunk. */
const FIRST_CHUNK = 16;

/** One location in the index's bytes: seq:u32 segment:u32 (a position in the index's segment list) offset:u32 frameBytes:u32. */
export const INDEX_LOC_BYTES = 16;

function newChunk(): Float64Array {
  return pool.pop() ?? new Float64Array(CHUNK);
}

function release(chunk: Float64Array): void {
  if (chunk.length === CHUNK && pool.length < POOL_MAX) pool.push(chunk);
}

interface Encoded {
  view: DataView;
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
  #chunks: Float64Array[] = [];
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
   * Locations as the journal index stores them (INDEX_LOC_BYTES each; the caller checked that
   * every segment position is in `segIds`), decoded when first read. `bytes` is kept, not copied.
   */
  static fromIndex(bytes: Uint8Array, segIds: readonly number[]): Locs {
    const locs = new Locs();
    if (bytes.length === 0) return locs;
    locs.#encoded = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.length), segIds, deleted: undefined };
    locs.#firstLen = locs.#end = (bytes.length / INDEX_LOC_BYTES) * 4;
    return locs;
  }

  /** Drops the locations in `segments` (deleted since they were recorded). */
  dropSegments(segments: ReadonlySet<number>): void {
    if (segments.size === 0) return;
    const e = this.#encoded;
    if (e !== undefined && e.deleted === undefined && this.#start === 0 && this.#chunks.length === 0) {
      // Still encoded: counted now, left out when decoded.
      let kept = 0;
      for (let at = 4; at < e.view.byteLength; at += INDEX_LOC_BYTES) if (!segments.has(e.segIds[e.view.getUint32(at, true)]!)) kept += 4;
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
      for (let at = 4; at < e.view.byteLength; at += INDEX_LOC_BYTES) {
        const id = e.segIds[e.view.getUint32(at, true)]!;
        if (e.deleted === undefined || !e.deleted.has(id)) return id;
      }
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
    const k = q >> SHIFT;
    const e = q & MASK;
    const chunks = this.#chunks;
    let a = chunks[k];
    if (a === undefined) {
      // A session's first chunk starts small (most sessions are short) and grows to a whole one.
      a = chunks[k] = k === 0 ? new Float64Array(FIRST_CHUNK) : newChunk();
    } else if (e >= a.length) {
      const b = a.length * 4 >= CHUNK ? newChunk() : new Float64Array(a.length * 4);
      b.set(a);
      a = chunks[k] = b;
    }
    a[e] = seq;
    a[e + 1] = segmentId;
    a[e + 2] = offset;
    a[e + 3] = frameBytes;
    this.#end += 4;
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
      out.set(chunk.subarray(from, from + take), o);
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
    const { view, segIds, deleted } = this.#encoded!;
    this.#encoded = undefined;
    const a = new Float64Array(this.#firstLen);
    let n = 0;
    for (let at = 0; at < view.byteLength; at += INDEX_LOC_BYTES) {
      const seg = segIds[view.getUint32(at + 4, true)]!;
      if (deleted !== undefined && deleted.has(seg)) continue;
      a[n] = view.getUint32(at, true);
      a[n + 1] = seg;
      a[n + 2] = view.getUint32(at + 8, true);
      a[n + 3] = view.getUint32(at + 12, true);
      n += 4;
    }
    this.#first = a;
  }
}
