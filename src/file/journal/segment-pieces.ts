import type { FileHandle } from '../../storage/fs-port.ts';

/**
 * Reads the first `end` bytes of a segment file in pieces, the next piece read
 * ahead while the caller works on the current one: the recovery pass's
 * sequential read of segments of up to journalMaxSizeMb (100 MB by default)
 * without holding a whole segment in memory.
 *
 * One `readFile` of a 100 MB segment was one 100 MB buffer: above V8's
 * external-memory limit, so allocating it started a garbage collection at
 * once, while a restarted server was answering its first request; and the
 * segment stayed in memory until its last record was replayed.
 *
 * Two buffers take turns, each `headroom + pieceBytes` long: a piece is read
 * into one at `headroom` while the caller works on the other. The end of the
 * current piece that the caller has not finished (at most a frame that
 * straddles the two pieces) is copied in front of the next piece, into its
 * headroom. Reusing the buffers costs no allocation and no fresh pages per
 * piece; it is safe because the caller keeps nothing of a view past its next
 * `cover` (the pass parses what it keeps into strings and objects).
 *
 * `view` holds the file's bytes from offset `base` on. `cover(pos, need)` makes
 * it hold [pos, pos + need). The caller checks `pos + need <= base + view.length`
 * itself first, so a frame inside the current piece costs no promise.
 */
export class SegmentPieces {
  view: Buffer = Buffer.alloc(0);
  /** The file offset of view[0]. */
  base = 0;
  readonly #handle: FileHandle;
  readonly #end: number;
  readonly #piece: number;
  readonly #headroom: number;
  /** The buffer `view` lies in, and the one the next piece is read into. */
  #current: Buffer | undefined;
  #spare: Buffer | undefined;
  /** The read ahead into #spare at #headroom: the file offset it starts at, and the bytes it got. */
  #ahead: Promise<number> | undefined;
  #aheadAt = -1;

  constructor(handle: FileHandle, end: number, pieceBytes: number, headroom = Math.min(pieceBytes, 256 * 1024)) {
    this.#handle = handle;
    this.#end = end;
    this.#piece = Math.max(1, pieceBytes);
    this.#headroom = Math.max(1, headroom);
  }

  /**
   * Makes `view` hold the file's bytes [pos, pos + need), pos at or after `base`. False when the file
   * (up to `end`) holds fewer; `view` then holds what there is from pos on.
   */
  async cover(pos: number, need: number): Promise<boolean> {
    const want = Math.min(pos + need, this.#end);
    if (pos >= this.base && want <= this.base + this.view.length) return want === pos + need;
    const held = this.base + this.view.length;
    const carried = pos >= this.base && pos < held ? this.view.subarray(pos - this.base) : undefined;
    const from = carried === undefined ? pos : held;
    const r = carried?.length ?? 0;
    let got = 0;
    if (this.#aheadAt === from && this.#ahead !== undefined && r <= this.#headroom && want - pos <= r + this.#piece) {
      // The usual turn: the piece read ahead follows the carried bytes.
      got = await this.#ahead;
      this.#ahead = undefined;
      const next = this.#spare!;
      if (carried !== undefined) carried.copy(next, this.#headroom - r);
      this.#spare = this.#current;
      this.#current = next;
      this.view = next.subarray(this.#headroom - r, this.#headroom + got);
    } else {
      // The first piece, a frame longer than a piece, or a jump: read what is wanted into a buffer of its own.
      await this.#settleAhead();
      const length = Math.max(this.#piece, want - from);
      const out = Buffer.allocUnsafeSlow(r + Math.min(length, this.#end - from));
      if (carried !== undefined) carried.copy(out, 0);
      got = await this.#read(out, r, out.length - r, from);
      this.view = out.subarray(0, r + got);
      // Pieces of the usual size take turns in the two buffers from here on.
      this.#current = undefined;
    }
    this.base = pos;
    const have = pos + this.view.length;
    if (have < this.#end) this.#readAhead(have);
    return have >= pos + need;
  }

  /** Waits for the read ahead, if any (its buffer is about to be reused or dropped). */
  async close(): Promise<void> {
    await this.#settleAhead();
  }

  async #settleAhead(): Promise<void> {
    const ahead = this.#ahead;
    this.#ahead = undefined;
    this.#aheadAt = -1;
    // (its failure is no one's now: the bytes are read again where they are wanted)
    if (ahead !== undefined) await ahead.catch(() => undefined);
  }

  #readAhead(at: number): void {
    const size = this.#headroom + this.#piece;
    this.#spare ??= Buffer.allocUnsafeSlow(size);
    // The view must not lie in the buffer read into: a view of its own buffer leaves both turn buffers free.
    if (this.#current === undefined) this.#current = Buffer.allocUnsafeSlow(size);
    this.#aheadAt = at;
    this.#ahead = this.#read(this.#spare, this.#headroom, Math.min(this.#piece, this.#end - at), at);
    // A failed read ahead surfaces when its piece is taken, not as an unhandled rejection before.
    this.#ahead.catch(() => undefined);
  }

  /** Reads `length` bytes at file offset `at` into `into` at `offset`; the bytes read (fewer at the end of the file). */
  async #read(into: Buffer, offset: number, length: number, at: number): Promise<number> {
    let done = 0;
    while (done < length) {
      const n = await this.#handle.read(into, offset + done, length - done, at + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }
}
