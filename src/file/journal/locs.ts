/**
 * Where a session's unreleased records are: flattened [seq, segmentId, offset, frameBytes] per
 * record, in log order, in Float64Arrays rather than a JS array. A restart on 10,000 sessions ×
 * 100 events adopts a million locations from the journal index; as JS arrays they were 10,000
 * arrays of 400 numbers that the garbage collector copied and scanned (more than half of
 * createArbor's time in a profile), while a typed array's bytes are off the JS heap and an index
 * decodes into one with a plain loop.
 *
 * Records are added at the end (`push`) and released from the start (`dropFirst`, when a snapshot
 * covers them). The array adopted from an index (if any) comes first; what is pushed after it goes
 * into chunks of CHUNK numbers (128 records, 4 KiB; a session's first one starts small) that are
 * never copied once whole. One growing array, doubled and copied, had the allocator zero and the
 * CPU copy about twice what it kept: ~0.3 µs per append in bench/journal at 1,000 sessions (fresh
 * pages are expensive on a virtual machine). Released whole chunks go to a small shared pool.
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

function newChunk(): Float64Array {
  return pool.pop() ?? new Float64Array(CHUNK);
}

function release(chunk: Float64Array): void {
  if (chunk.length === CHUNK && pool.length < POOL_MAX) pool.push(chunk);
}

export class Locs {
  /** the adopted array: positions [0, #first.length) */
  #first: Float64Array;
  /** then chunk k holds positions #first.length + k·CHUNK … */
  #chunks: Float64Array[] = [];
  /** live positions: [#start, #end) */
  #start = 0;
  #end: number;

  /** Takes `values` (a multiple of 4 numbers) as they are, without a copy. */
  constructor(values: Float64Array = EMPTY) {
    this.#first = values;
    this.#end = values.length;
  }

  /** Numbers held: 4 per record. */
  get length(): number {
    return this.#end - this.#start;
  }

  /** The `i`-th number (i < length). */
  at(i: number): number {
    const p = this.#start + i;
    const f = this.#first.length;
    if (p < f) return this.#first[p]!;
    const q = p - f;
    return this.#chunks[q >> SHIFT]![q & MASK]!;
  }

  set(i: number, value: number): void {
    const p = this.#start + i;
    const f = this.#first.length;
    if (p < f) {
      this.#first[p] = value;
      return;
    }
    const q = p - f;
    this.#chunks[q >> SHIFT]![q & MASK] = value;
  }

  push(seq: number, segmentId: number, offset: number, frameBytes: number): void {
    // Chunks hold a multiple of 4 numbers, so a record never straddles two.
    const q = this.#end - this.#first.length;
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
      this.#chunks = [];
      this.#first = EMPTY;
      this.#start = this.#end = 0;
      return;
    }
    // Give back what lies wholly before the start: the adopted array, then whole chunks.
    let f = this.#first.length;
    if (f > 0 && this.#start >= f) {
      this.#first = EMPTY;
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
    const f = this.#first.length;
    if (p < f) {
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
}
