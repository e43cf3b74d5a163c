import { abortError, textOfStream, type ChatTurn, type LlmProvider, type LlmStreamPart, type StreamRequest, type ToolStepPart, type ToolStepProvider, type ToolStepRequest } from './provider.ts';

/** Options of the mock provider; each falls back to its environment variable, then to the default. */
export interface MockProviderOptions {
  /** Chunks per answer, at least 1 (env `ARBOR_MOCK_CHUNKS`, default 8). */
  chunks?: number;
  /** Pause before each chunk, in ms (env `ARBOR_MOCK_CHUNK_DELAY_MS`, default 20). 0 still yields to the event loop between chunks. */
  chunkDelayMs?: number;
  /** Where the variables are read from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_MOCK_OPTIONS = Object.freeze({ chunks: 8, chunkDelayMs: 20 });

/** Upper bounds, so a typo cannot turn a demo into a stream of a million chunks or a timer Node would clamp. */
const MAX_CHUNKS = 100_000;
const MAX_CHUNK_DELAY_MS = 2_147_483_647; // setTimeout's largest delay

const DECIMAL = /^[0-9]+$/;

function fromEnv(env: NodeJS.ProcessEnv, variable: string, min: number, max: number): number | undefined {
  const raw = env[variable];
  // An empty variable (`ARBOR_MOCK_CHUNKS=` in a compose file) means "not set".
  if (raw === undefined || raw === '') return undefined;
  const value = DECIMAL.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`environment variable ${variable} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function checkOption(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`option ${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/**
 * The answer the mock gives to `messages`, already cut into exactly `chunks`
 * non-empty pieces: `Echo: <last user message>`, padded with `.` when it has
 * fewer characters than chunks. A pure function: tests and end-to-end checks use
 * it to know the expected text. Splits on code points, never inside a surrogate pair.
 */
export function mockReplyChunks(messages: readonly ChatTurn[], chunks: number): string[] {
  checkOption('chunks', chunks, 1, MAX_CHUNKS);
  let lastUser: string | undefined;
  for (let i = messages.length - 1; i >= 0; i--) {
    const turn = messages[i];
    if (turn !== undefined && turn.role === 'user') {
      lastUser = turn.content;
      break;
    }
  }
  const chars = Array.from(`Echo: ${lastUser ?? ''}`);
  while (chars.length < chunks) chars.push('.');
  // The first `extra` pieces take one more character, so sizes differ by at most one.
  const base = Math.floor(chars.length / chunks);
  const extra = chars.length % chunks;
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < chunks; i++) {
    const size = base + (i < extra ? 1 : 0);
    out.push(chars.slice(at, at + size).join(''));
    at += size;
  }
  return out;
}

/**
 * Waits `ms` (0 = one turn of the event loop via setImmediate, so a 0-delay stream
 * never starves I/O). Rejects with `onAbort()` as soon as `signal` aborts, and
 * clears its timer then: an aborted stream leaves nothing scheduled behind it.
 */
function pause(ms: number, signal: AbortSignal, onAbort: () => Error): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(onAbort());
      return;
    }
    const timeout = ms > 0 ? setTimeout(finish, ms) : undefined;
    const immediate = ms > 0 ? undefined : setImmediate(finish);
    function finish(): void {
      signal.removeEventListener('abort', abort);
      resolve();
    }
    function abort(): void {
      if (timeout !== undefined) clearTimeout(timeout);
      if (immediate !== undefined) clearImmediate(immediate);
      reject(onAbort());
    }
    signal.addEventListener('abort', abort, { once: true });
  });
}

/**
 * The pauses of one stream: as `pause`, but with one abort listener for the
 * whole stream instead of one added and removed per chunk (under load that
 * pair, with its closures, cost more than the chunk). `wait` resolves when
 * the time is up or at once when the signal aborts (its timer cleared); the
 * caller then checks `signal.aborted` and throws its own error.
 */
class Pacer {
  readonly #signal: AbortSignal;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  readonly #onAbort = (): void => {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#wake?.();
  };
  readonly #arm = (resolve: () => void): void => {
    this.#wake = resolve;
    if (this.#ms > 0) this.#timer = setTimeout(resolve, this.#ms);
    else this.#immediate = setImmediate(resolve);
  };
  readonly #ms: number;

  constructor(signal: AbortSignal, ms: number) {
    this.#signal = signal;
    this.#ms = ms;
    signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  wait(): Promise<void> {
    return this.#signal.aborted ? Promise.resolve() : new Promise(this.#arm);
  }

  dispose(): void {
    this.#signal.removeEventListener('abort', this.#onAbort);
  }
}

/** JavaScript's `\s`: what separates the words the mock counts as tokens. */
function isSpace(c: number): boolean {
  return (c >= 0x09 && c <= 0x0d) || c === 0x20 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/**
 * `text.match(/\S+/g).length` without building the array of words: the prompt
 * holds the whole conversation, so under load that array was most of what a
 * turn allocated (and the garbage collector then had to sweep).
 */
export function countWords(text: string): number {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const space = isSpace(text.charCodeAt(i));
    if (!space && !inWord) n++;
    inWord = !space;
  }
  return n;
}

/**
 * A prompt's word count, from the previous request of the same session. The
 * runtime hands every request of a session the same frozen turn objects
 * (sessions/prompt-cache.ts), so a prompt nearly always starts with the
 * previous one's turns: only the turns after the common prefix are counted.
 * Counting the whole history again at each answer was ~19% of the main
 * thread's time in the event loop's long tasks of bench/runtime (b), a cost of
 * the mock that its own baseline (one-message prompts) never paid; a cache
 * keyed by turn (a WeakMap) still cost a hash lookup per turn of the history,
 * a cache miss each (~8% of the main thread). The prefix is found by comparing
 * array slots, never by reading the turns. Only frozen turns are remembered: any
 * other may change before the next request.
 */
class PromptWords {
  /** more sessions than this and the least recently asked is forgotten (its next prompt is counted in full) */
  static readonly SESSIONS = 10_000;
  /** per session: the frozen prefix of its last prompt, and the running word count after each of its turns */
  readonly #last = new Map<string, { turns: Readonly<ChatTurn>[]; sums: number[] }>();

  count(sessionId: string, prompt: readonly Readonly<ChatTurn>[]): number {
    const last = this.#last.get(sessionId) ?? { turns: [], sums: [] };
    this.#last.delete(sessionId); // re-inserted below: the map's order is the order of use
    const { turns, sums } = last;
    const n = Math.min(prompt.length, turns.length);
    let k = 0;
    while (k < n && prompt[k] === turns[k]) k++;
    turns.length = k;
    sums.length = k;
    let total = k === 0 ? 0 : sums[k - 1]!;
    let remembering = true;
    for (let i = k; i < prompt.length; i++) {
      const turn = prompt[i]!;
      total += countWords(turn.content);
      remembering &&= Object.isFrozen(turn);
      if (remembering) {
        turns.push(turn);
        sums.push(total);
      }
    }
    this.#last.set(sessionId, last);
    if (this.#last.size > PromptWords.SESSIONS) this.#last.delete(this.#last.keys().next().value!);
    return total;
  }
}

/**
 * A deterministic provider for demos, tests and benchmarks: no network, and the
 * same conversation always yields the same chunks (see {@link mockReplyChunks}).
 * Reads `ARBOR_MOCK_CHUNKS` and `ARBOR_MOCK_CHUNK_DELAY_MS` once, in the
 * constructor; a malformed value throws a RangeError naming the variable.
 */
export class MockProvider implements LlmProvider, ToolStepProvider {
  readonly name = 'mock';
  readonly model = 'mock-echo';
  readonly chunks: number;
  readonly chunkDelayMs: number;
  readonly #promptWords = new PromptWords();

  constructor(options: MockProviderOptions = {}) {
    const env = options.env ?? process.env;
    this.chunks =
      options.chunks !== undefined
        ? checkOption('chunks', options.chunks, 1, MAX_CHUNKS)
        : (fromEnv(env, 'ARBOR_MOCK_CHUNKS', 1, MAX_CHUNKS) ?? DEFAULT_MOCK_OPTIONS.chunks);
    this.chunkDelayMs =
      options.chunkDelayMs !== undefined
        ? checkOption('chunkDelayMs', options.chunkDelayMs, 0, MAX_CHUNK_DELAY_MS)
        : (fromEnv(env, 'ARBOR_MOCK_CHUNK_DELAY_MS', 0, MAX_CHUNK_DELAY_MS) ?? DEFAULT_MOCK_OPTIONS.chunkDelayMs);
  }

  stream(request: StreamRequest): AsyncGenerator<string, void, undefined> {
    return textOfStream(this.streamParts(request));
  }

  /**
   * The chunks of {@link mockReplyChunks}, then a finish. Usage counts one
   * token per whitespace-separated word of the prompt (system prompt
   * included) and one per chunk of the answer. With `maxOutputTokens` below
   * the chunk count, the answer stops after that many chunks with finish
   * reason `length`.
   */
  streamParts(request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
    const parts = mockReplyChunks(request.messages, this.chunks);
    const limit = request.maxOutputTokens === undefined ? parts.length : Math.min(parts.length, request.maxOutputTokens);
    // A mock's token counts: the prompt's whitespace-separated words in (system prompt included), one token per chunk out.
    const inputTokens = (request.system === undefined ? 0 : countWords(request.system)) + this.#promptWords.count(request.sessionId, request.messages);
    const finish: LlmStreamPart = { type: 'finish', finishReason: limit < parts.length ? 'length' : 'stop', usage: { inputTokens, outputTokens: limit, totalTokens: inputTokens + limit } };
    // Everything is taken from the request up front: the stream does not keep the prompt (the whole history) alive while it plays.
    return this.#play(parts, limit, finish, request.signal);
  }

  async *#play(parts: readonly string[], limit: number, finish: LlmStreamPart, signal: AbortSignal): AsyncGenerator<LlmStreamPart, void, undefined> {
    const pacer = new Pacer(signal, this.chunkDelayMs);
    try {
      for (let i = 0; i < limit; i++) {
        // The pause comes before each chunk, so the first one also takes chunkDelayMs (a time-to-first-token).
        if (!signal.aborted) await pacer.wait();
        if (signal.aborted) throw abortError(this.name, `while waiting for chunk ${i + 1} of ${parts.length}`, signal);
        yield { type: 'text', text: parts[i] as string };
      }
    } finally {
      pacer.dispose();
    }
    yield finish;
  }
}

/**
 * The tool calls the mock makes for a step: one per line `call <tool> <json input>`
 * of the last user message, as long as no tool result follows that message
 * (so the step after the results answers in text). Call ids are
 * `<messageId>-<n>`, unique per answer.
 */
export function mockToolCalls(messages: readonly unknown[], messageId: string): { toolCallId: string; toolName: string; input: unknown }[] {
  let lastUser = -1;
  for (let i = messages.length - 1; i >= 0; i--) {
    if ((messages[i] as { role?: unknown }).role === 'user') {
      lastUser = i;
      break;
    }
  }
  if (lastUser < 0) return [];
  for (let i = lastUser + 1; i < messages.length; i++) if ((messages[i] as { role?: unknown }).role === 'tool') return [];
  const content = (messages[lastUser] as { content?: unknown }).content;
  const text = typeof content === 'string' ? content : Array.isArray(content) ? content.map((p: { text?: unknown }) => (typeof p.text === 'string' ? p.text : '')).join('') : '';
  const out: { toolCallId: string; toolName: string; input: unknown }[] = [];
  for (const line of text.split('\n')) {
    const m = /^call ([A-Za-z0-9_-]+) (\{.*\})\s*$/.exec(line.trim());
    if (m === null) continue;
    try {
      out.push({ toolCallId: `${messageId}-${out.length + 1}`, toolName: m[1]!, input: JSON.parse(m[2]!) as unknown });
    } catch {
      // not JSON: not a call
    }
  }
  return out;
}

export interface MockProvider {
  streamStep(request: ToolStepRequest): AsyncGenerator<ToolStepPart, void, undefined>;
}

/**
 * One step with tools: the calls of {@link mockToolCalls} (finish reason
 * `tool-calls`), or else the echo answer in chunks (finish `stop`).
 */
MockProvider.prototype.streamStep = async function* streamStep(this: MockProvider, request: ToolStepRequest): AsyncGenerator<ToolStepPart, void, undefined> {
  const { signal } = request;
  const calls = mockToolCalls(request.messages, request.messageId);
  if (calls.length > 0) {
    await pause(this.chunkDelayMs, signal, () => abortError(this.name, 'while deciding on tool calls', signal));
    // The input streams first (as a real model's does), then the calls come whole with the step's finish.
    for (const c of calls) {
      yield { type: 'tool-input-start', toolCallId: c.toolCallId, toolName: c.toolName };
      yield { type: 'tool-input-delta', toolCallId: c.toolCallId, delta: JSON.stringify(c.input) };
    }
    for (const c of calls) yield { type: 'tool-call', ...c };
    yield { type: 'finish', finishReason: 'tool-calls' };
    return;
  }
  const turns: ChatTurn[] = [];
  for (const m of request.messages as { role?: unknown; content?: unknown }[]) {
    if (m.role === 'user' && typeof m.content === 'string') turns.push({ role: 'user', content: m.content });
  }
  const parts = mockReplyChunks(turns, this.chunks);
  for (let i = 0; i < parts.length; i++) {
    await pause(this.chunkDelayMs, signal, () => abortError(this.name, `while waiting for chunk ${i + 1} of ${parts.length}`, signal));
    yield { type: 'text', text: parts[i] as string };
  }
  yield { type: 'finish', finishReason: 'stop' };
};
