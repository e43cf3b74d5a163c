/** One streamed chunk as subscribers see it; `index` counts from 0 within its message. */
export interface Chunk {
  messageId: string;
  index: number;
  text: string;
}

/** Consecutive chunks of one message: the texts of indexes `first`, `first + 1`, … */
interface Run {
  readonly messageId: string;
  first: number;
  texts: string[];
}

/**
 * The chunks of a session's recent streams, bounded, in memory only (chunks
 * are never written to disk): a subscriber that reconnects mid-stream resumes
 * from its last index. The oldest chunks go first when the bound is reached.
 *
 * Kept as runs of texts, and made into {@link Chunk} objects only when asked
 * for: under load nobody asks (a stream's chunks are forgotten when it ends),
 * and an object per chunk, alive for the whole answer, was young-generation
 * garbage that every collection meanwhile had to copy.
 */
export class ChunkBuffer {
  readonly #max: number;
  #runs: Run[] = [];
  #count = 0;

  constructor(maxChunks: number) {
    this.#max = maxChunks;
  }

  push(messageId: string, index: number, text: string): void {
    const last = this.#runs.length === 0 ? undefined : this.#runs[this.#runs.length - 1]!;
    if (last !== undefined && last.messageId === messageId && last.first + last.texts.length === index) last.texts.push(text);
    else this.#runs.push({ messageId, first: index, texts: [text] });
    this.#count += 1;
    if (this.#count > this.#max) this.#dropOldest(this.#count - this.#max);
  }

  /** Chunks of `messageId` with index ≥ `fromIndex`, in order. */
  since(messageId: string, fromIndex = 0): Chunk[] {
    const out: Chunk[] = [];
    for (const run of this.#runs) {
      if (run.messageId !== messageId) continue;
      for (let i = Math.max(0, fromIndex - run.first); i < run.texts.length; i += 1) out.push({ messageId, index: run.first + i, text: run.texts[i]! });
    }
    return out;
  }

  /** Forgets a finished message's chunks (its answer is in the state now). */
  forget(messageId: string): void {
    let kept = 0;
    for (const run of this.#runs) {
      if (run.messageId === messageId) this.#count -= run.texts.length;
      else this.#runs[kept++] = run;
    }
    this.#runs.length = kept;
  }

  #dropOldest(n: number): void {
    let dropped = 0;
    while (n > 0) {
      const run = this.#runs[dropped]!;
      if (run.texts.length <= n) {
        n -= run.texts.length;
        this.#count -= run.texts.length;
        dropped += 1;
      } else {
        run.texts = run.texts.slice(n);
        run.first += n;
        this.#count -= n;
        n = 0;
      }
    }
    if (dropped > 0) this.#runs.splice(0, dropped);
  }
}
