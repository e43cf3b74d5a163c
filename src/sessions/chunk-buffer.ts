/** One streamed chunk as subscribers see it; `index` counts from 0 within its message. */
export interface Chunk {
  messageId: string;
  index: number;
  text: string;
}

/**
 * The chunks of a session's recent streams, bounded, in memory only (chunks
 * are never written to disk): a subscriber that reconnects mid-stream resumes
 * from its last index. The oldest chunks go first when the bound is reached.
 */
export class ChunkBuffer {
  readonly #max: number;
  #chunks: Chunk[] = [];

  constructor(maxChunks: number) {
    this.#max = maxChunks;
  }

  push(chunk: Chunk): void {
    this.#chunks.push(chunk);
    if (this.#chunks.length > this.#max) this.#chunks = this.#chunks.slice(this.#chunks.length - this.#max);
  }

  /** Chunks of `messageId` with index ≥ `fromIndex`, in order. */
  since(messageId: string, fromIndex = 0): Chunk[] {
    return this.#chunks.filter((c) => c.messageId === messageId && c.index >= fromIndex);
  }

  /** Forgets a finished message's chunks (its answer is in the state now). */
  forget(messageId: string): void {
    this.#chunks = this.#chunks.filter((c) => c.messageId !== messageId);
  }
}
