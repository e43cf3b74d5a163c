/**
 * Where a session's unreleased records are: flattened [seq, segmentId, offset, frameBytes] per
 * record, in log order, in a Float64Array rather than a JS array. A restart on 10,000 sessions ×
 * 100 events adopts a million locations from the journal index; as JS arrays they were 10,000
 * arrays of 400 numbers that the garbage collector copied and scanned (more than half of
 * createArbor's time in a profile), while a typed array's bytes are off the JS heap.
 *
 * Adopted from the journal index, a session's locations stay as the index's bytes
 * (`fromIndex`) until something reads them: open then costs nothing per record, and a session no
 * one touches before its next snapshot is never decoded (the recovery pass replays the segments,
 * not the locations). Decoding 1,000,000 of them at open took ~150 ms of createArbor's time.
 *
 * Records are added at the end (`push`) and released from the start (`dropFirst`, when a snapshot
 * covers them); the storage grows by doubling what is live, so it stays within twice that.
 */
const EMPTY = new Float64Array(0);

/** One location in the index's bytes: seq:u32 segment:u32 (a position in the index's segment list) offset:u32 frameBytes:u32. */
export const INDEX_LOC_BYTES = 16;

interface Encoded {
  view: DataView;
  /** segment position → segment id */
  segIds: readonly number[];
  /** segment ids deleted since the index was written: their locations are dropped when decoded */
  deleted: ReadonlySet<number> | undefined;
}

/** Numbers in a session's first storage (4 records), carved from SLAB_NUMBERS-sized slabs. */
const FIRST_ROOM = 16;
const SLAB_NUMBERS = FIRST_ROOM * 4096;
let slab = new Float64Array(0);
let slabUsed = 0;

function firstRoom(): Float64Array {
  if (slabUsed + FIRST_ROOM > slab.length) {
    slab = new Float64Array(SLAB_NUMBERS);
    slabUsed = 0;
  }
  slabUsed += FIRST_ROOM;
  return slab.subarray(slabUsed - FIRST_ROOM, slabUsed);
}

export class Locs {
  #a: Float64Array;
  #start = 0;
  #end: number;
  #encoded: Encoded | undefined;

  /** Takes `values` (a multiple of 4 numbers) as they are, without a copy. */
  constructor(values: Float64Array = EMPTY) {
    this.#a = values;
    this.#end = values.length;
  }

  /**
   * Locations as the journal index stores them (INDEX_LOC_BYTES each; the caller checked that
   * every segment position is in `segIds`), decoded on first use. `bytes` is kept, not copied.
   */
  static fromIndex(bytes: Uint8Array, segIds: readonly number[]): Locs {
    const locs = new Locs();
    if (bytes.length > 0) locs.#encoded = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.length), segIds, deleted: undefined };
    return locs;
  }

  /** Drops the locations in `segments` (deleted since they were recorded). */
  dropSegments(segments: ReadonlySet<number>): void {
    if (segments.size === 0) return;
    if (this.#encoded !== undefined) {
      if (this.#end === this.#start && this.#encoded.deleted === undefined) {
        this.#encoded.deleted = segments;
        return;
      }
      this.#decode();
    }
    const a = this.#a;
    const kept = new Float64Array(this.#end - this.#start);
    let n = 0;
    for (let i = this.#start; i < this.#end; i += 4) {
      if (segments.has(a[i + 1]!)) continue;
      kept.set(a.subarray(i, i + 4), n);
      n += 4;
    }
    this.#a = kept;
    this.#start = 0;
    this.#end = n;
  }

  /** The segment of the first (oldest) location, without decoding encoded ones; undefined when empty. */
  firstSegment(): number | undefined {
    const e = this.#encoded;
    if (e !== undefined) {
      for (let at = 4; at < e.view.byteLength; at += INDEX_LOC_BYTES) {
        const id = e.segIds[e.view.getUint32(at, true)]!;
        if (e.deleted === undefined || !e.deleted.has(id)) return id;
      }
    }
    return this.#end > this.#start ? this.#a[this.#start + 1] : undefined;
  }

  /** Numbers held: 4 per record. */
  get length(): number {
    if (this.#encoded !== undefined) this.#decode();
    return this.#end - this.#start;
  }

  /** The `i`-th number (i < length). */
  at(i: number): number {
    if (this.#encoded !== undefined) this.#decode();
    return this.#a[this.#start + i]!;
  }

  set(i: number, value: number): void {
    if (this.#encoded !== undefined) this.#decode();
    this.#a[this.#start + i] = value;
  }

  /** Adds a location at the end (after any still encoded: they stay encoded). */
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
    if (this.#encoded !== undefined) this.#decode();
    this.#start += n;
    if (this.#start >= this.#end) this.#start = this.#end = 0;
  }

  /** A copy of the first `n` numbers. */
  head(n: number): Float64Array {
    if (this.#encoded !== undefined) this.#decode();
    return this.#a.slice(this.#start, this.#start + n);
  }

  /** Decodes the encoded locations, followed by those pushed since (held decoded in #a). */
  #decode(): void {
    const { view, segIds, deleted } = this.#encoded!;
    this.#encoded = undefined;
    const pushed = this.#a.subarray(this.#start, this.#end);
    const a = new Float64Array((view.byteLength / INDEX_LOC_BYTES) * 4 + pushed.length);
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
    a.set(pushed, n);
    n += pushed.length;
    this.#a = n === a.length ? a : a.slice(0, n);
    this.#start = 0;
    this.#end = n;
  }

  #grow(): void {
    const n = this.#end - this.#start;
    // A session's first locations come from a shared slab: allocating a typed array (a backing store
    // of its own) per session is what made a restart's tail scan slow (10,000 sessions each adding a
    // record after the index: ~100 ms of allocation in a profile).
    const next = this.#a.length === 0 ? firstRoom() : new Float64Array(n * 2);
    next.set(this.#a.subarray(this.#start, this.#end));
    this.#a = next;
    this.#start = 0;
    this.#end = n;
  }
}
