import type { LlmProvider, StreamRequest } from '../../src/index.ts';

/**
 * Answers `ok: <request>` at once, except a request starting with "hang":
 * that one streams one chunk and then waits until it is aborted.
 */
export class HangingProvider implements LlmProvider {
  readonly name = 'hanging';
  readonly model = 'hanging-1';
  #onHang: (() => void)[] = [];

  /** Resolves when the next hanging answer has streamed its first chunk. */
  nextHang(): Promise<void> {
    return new Promise((r) => this.#onHang.push(r));
  }

  async *stream(request: StreamRequest): AsyncIterable<string> {
    const prompt = request.messages.at(-1)?.content ?? '';
    if (!prompt.startsWith('hang')) {
      yield `ok: ${prompt}`;
      return;
    }
    yield 'partial';
    const waiting = this.#onHang;
    this.#onHang = [];
    for (const w of waiting) w();
    await new Promise<void>((resolve) => {
      if (request.signal.aborted) resolve();
      else request.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    const err = new Error(`aborted: ${String(request.signal.reason)}`);
    err.name = 'AbortError';
    throw err;
  }
}
