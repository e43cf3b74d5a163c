import type { Session, SessionUpdate } from '../index.ts';

/** Streamed messages remembered per session (their chunk positions), newest kept. */
const MESSAGES_PER_SESSION = 32;

interface SessionTap {
  unsubscribe: () => void;
  /** seq of the last committed event seen */
  lastSeq: number;
  /** per streamed message: the session's seq when each chunk was published, by chunk index */
  seqAtChunk: Map<string, number[]>;
}

/**
 * Where each stream chunk sits between committed events, so a client that
 * resumes from a chunk id (`<messageId>:<index>`) gets every event after the
 * last one it saw, and no event twice, even when events were committed while
 * the answer streamed (another message, a config change).
 *
 * The server taps a session before its first command through HTTP, so every
 * chunk of an answer the server started is indexed. Memory: one number per
 * chunk of the last {@link MESSAGES_PER_SESSION} answers of each tapped session.
 */
export class StreamIndex {
  readonly #taps = new Map<string, SessionTap>();

  /** Starts indexing `session` (idempotent). */
  watch(session: Session): void {
    if (this.#taps.has(session.id)) return;
    const tap: SessionTap = { unsubscribe: () => undefined, lastSeq: session.state.seq, seqAtChunk: new Map() };
    tap.unsubscribe = session.subscribe((u: SessionUpdate) => {
      if (u.kind === 'event') {
        tap.lastSeq = Math.max(tap.lastSeq, u.event.seq);
      } else if (u.kind === 'chunk') {
        let seqs = tap.seqAtChunk.get(u.chunk.messageId);
        if (seqs === undefined) {
          seqs = [];
          tap.seqAtChunk.set(u.chunk.messageId, seqs);
          if (tap.seqAtChunk.size > MESSAGES_PER_SESSION) tap.seqAtChunk.delete(tap.seqAtChunk.keys().next().value!);
        }
        seqs[u.chunk.index] = tap.lastSeq;
      }
    });
    this.#taps.set(session.id, tap);
  }

  /** The session's seq when chunk `index` of `messageId` was published (undefined when not indexed). */
  seqAtChunk(sessionId: string, messageId: string, index: number): number | undefined {
    return this.#taps.get(sessionId)?.seqAtChunk.get(messageId)?.[index];
  }

  /** Stops every tap. */
  close(): void {
    for (const tap of this.#taps.values()) tap.unsubscribe();
    this.#taps.clear();
  }
}
