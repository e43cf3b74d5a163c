import type { Message } from '../core/state.ts';

/**
 * One chunk of the AI SDK's UI message stream (protocol v1: `start`,
 * `text-start`/`-delta`/`-end`, `reasoning-*`, `tool-*`, `finish`, `error`, …),
 * as plain JSON; structurally the SDK's `UIMessageChunk`.
 */
export type UIChunk = { readonly type: string } & Readonly<Record<string, unknown>>;

type Delta = { type: 'text-delta' | 'reasoning-delta'; id: string; delta: string };

function isDelta(c: UIChunk): c is UIChunk & Delta {
  return (c.type === 'text-delta' || c.type === 'reasoning-delta') && typeof c.id === 'string' && typeof c.delta === 'string';
}

/**
 * The UI message stream of one answer (a turn), in memory only: every chunk
 * from its `start` to its `finish` or `error`, so a client that (re)connects
 * while it runs gets it from the first chunk, then live. Bounded: past
 * `maxChunks` entries, a delta is appended to the delta before it (same part)
 * instead of becoming an entry of its own, and readers that already sent that
 * delta get the rest as a new one — no text is lost, the log stops growing in
 * entries.
 */
export class TurnLog {
  /** the user message the answer is for */
  readonly requestMessageId: string;
  readonly #max: number;
  #chunks: (UIChunk | (UIChunk & Delta))[] = [];
  #ended = false;
  #messageId: string | undefined;
  #wake = new Set<() => void>();
  readonly #endedPromise: Promise<void>;
  #resolveEnded!: () => void;

  constructor(requestMessageId: string, maxChunks: number) {
    this.requestMessageId = requestMessageId;
    this.#max = maxChunks;
    this.#endedPromise = new Promise((resolve) => (this.#resolveEnded = resolve));
  }

  /** The assistant message id, once the answer started. */
  get messageId(): string | undefined {
    return this.#messageId;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Resolves when the turn ended (its last chunk is in). */
  whenEnded(): Promise<void> {
    return this.#endedPromise;
  }

  /**
   * Appends a chunk (a `start` chunk's `messageId` names the answer). Ignored
   * once ended. A text or reasoning delta goes through {@link pushDelta} (the
   * log keeps its own copy, which it may grow).
   */
  push(chunk: UIChunk): void {
    if (isDelta(chunk)) {
      this.pushDelta(chunk.type, chunk.id, chunk.delta);
      return;
    }
    if (this.#ended) return;
    if (chunk.type === 'start' && typeof chunk.messageId === 'string') this.#messageId = chunk.messageId;
    this.#chunks.push(chunk);
    this.#notify();
  }

  /**
   * `push({type, id, delta})` for a text or reasoning delta, without the
   * caller's chunk object: the log owns (and may grow) the one it creates, so
   * a streamed chunk costs one object here instead of two. The one merge rule:
   * once the log holds `maxChunks` entries, a delta is appended to the last
   * entry when that is a delta of the same type and id.
   */
  pushDelta(type: 'text-delta' | 'reasoning-delta', id: string, delta: string): void {
    if (this.#ended) return;
    const last = this.#chunks.at(-1);
    if (this.#chunks.length >= this.#max && last !== undefined && last.type === type && isDelta(last) && last.id === id) last.delta += delta;
    else this.#chunks.push({ type, id, delta });
    this.#notify();
  }

  /** Ends the turn: readers get what is left, then their iteration ends. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#resolveEnded();
    this.#notify();
  }

  #notify(): void {
    if (this.#wake.size === 0) return; // nobody reading (the common case under load)
    for (const wake of this.#wake) wake();
    this.#wake.clear();
  }

  /**
   * Every chunk from the first, then each new one as it comes, until the turn
   * ends or `signal` aborts. Each reader has its own position.
   */
  async *read(signal?: AbortSignal): AsyncGenerator<UIChunk, void, undefined> {
    let pos = 0;
    /** the length of the delta at pos - 1 already sent (it may have grown since) */
    let sentLen = 0;
    while (signal?.aborted !== true) {
      const prev = pos > 0 ? this.#chunks[pos - 1] : undefined;
      if (prev !== undefined && isDelta(prev) && prev.delta.length > sentLen) {
        const rest = prev.delta.slice(sentLen);
        sentLen = prev.delta.length;
        yield { type: prev.type, id: prev.id, delta: rest };
        continue;
      }
      if (pos < this.#chunks.length) {
        const c = this.#chunks[pos]!;
        pos += 1;
        if (isDelta(c)) {
          sentLen = c.delta.length;
          yield { type: c.type, id: c.id, delta: c.delta };
        } else {
          sentLen = 0;
          yield c;
        }
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        const onAbort = (): void => resolve();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.#wake.add(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
  }
}

/**
 * The UI message stream of an answer that is already in the state (a retried
 * POST whose answer ended): `start`, its text and reasoning parts, `finish`
 * with its finish reason and metadata. Tool parts are sent as their final
 * chunks (input available, then output or error).
 */
export function uiChunksOfAnswer(message: Message): UIChunk[] {
  const out: UIChunk[] = [{ type: 'start', messageId: message.id }];
  message.parts.forEach((p, i) => {
    if (p.type === 'text' || p.type === 'reasoning') {
      const id = `${message.id}:${i}`;
      out.push({ type: `${p.type}-start`, id }, { type: `${p.type}-delta`, id, delta: String(p.text) }, { type: `${p.type}-end`, id });
    } else if (p.type === 'step-start') {
      out.push({ type: 'start-step' });
    } else if (p.type === 'tool') {
      const base = { toolCallId: p.toolCallId, ...(p.dynamic === true ? { dynamic: true } : {}) };
      out.push({ type: 'tool-input-available', ...base, toolName: p.toolName, input: p.input ?? null });
      // A call that asked for an approval: the client needs the request to answer it (or to show its answer).
      if (p.approval !== undefined) out.push({ type: 'tool-approval-request', approvalId: p.approval.id, toolCallId: p.toolCallId });
      if (p.state === 'output-available') out.push({ type: 'tool-output-available', ...base, output: p.output ?? null });
      else if (p.state === 'output-error') out.push({ type: 'tool-output-error', ...base, errorText: String(p.errorText ?? 'the tool failed') });
      else if (p.state === 'output-denied') out.push({ type: 'tool-output-denied', toolCallId: p.toolCallId });
    }
  });
  const finishReason = message.metadata?.finishReason;
  out.push({ type: 'finish', ...(typeof finishReason === 'string' && FINISH_REASONS.has(finishReason) ? { finishReason } : {}), ...(message.metadata === undefined ? {} : { messageMetadata: message.metadata }) });
  return out;
}

/** The finish reasons the SDK's `finish` chunk accepts. */
export const FINISH_REASONS: ReadonlySet<string> = new Set(['stop', 'length', 'content-filter', 'tool-calls', 'error', 'other']);
