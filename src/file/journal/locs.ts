/**
 * Where a session's unreleased records are: flattened [seq, segmentId, offset, frameBytes] per
 * record, in log order, in a Float64Array rather than a JS array. A restart on 10,000 sessions ×
 * 100 events adopts a million locations from the journal index; as JS arrays they were 10,000
 * arrays of 400 numbers that the garbage collector copied and scanned (more than half of
 * createArbor's time in a profile), while a typed array's bytes are off the JS heap and an index
 * decodes into one with a plain loop.
 *
 * Records are added at the end (`push`) and released from the start (`dropFirst`, when a snapshot
 * covers them); the storage grows by doubling what is live, so it stays within twice that.
 */
const EMPTY = new Float64Array(0);

export class Locs {
  #a: Float64Array;
  #start = 0;
  #end: number;

  /** Takes `values` (a multiple of 4 numbers) as they are, without a copy. */
  constructor(values: Float64Array = EMPTY) {
    this.#a = values;
    this.#end = values.length;
  }

  /** Numbers held: 4 per record. */
  get length(): number {
    return this.#end - this.#start;
  }

  /** The `i`-th number (i < length). */
  at(i: number): number {
    return this.#a[this.#start + i]!;
  }

  set(i: number, value: number): void {
    this.#a[this.#start + i] = value;
  }

  push(seq: number, segmentId: number, offset: number, frameBytes: number): void {
    if (this.#end + 4 > this.#a.length) this.#grow();
    const a = this.#a;
    const e = this.#end;
    a[e] = seq;
    a[e + 1] = segmentId;
    a[e + 2] = offset;
    a[e + 3] = frameBytes;
    this.#end = e + 4;
  }

  /** Releases the first `n` numbers (a multiple of 4). */
  dropFirst(n: number): void {
    this.#start += n;
    if (this.#start >= this.#end) this.#start = this.#end = 0;
  }

  /** A copy of the first `n` numbers. */
  head(n: number): Float64Array {
    return this.#a.slice(this.#start, this.#start + n);
  }

  #grow(): void {
    const n = this.length;
    const next = new Float64Array(Math.max(16, n * 2));
    next.set(this.#a.subarray(this.#start, this.#end));
    this.#a = next;
    this.#start = 0;
    this.#end = n;
  }
}
