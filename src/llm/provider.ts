/**
 * The one interface every LLM provider sits behind. A session asks a provider
 * for a streamed answer and relays the chunks; it never sees HTTP or SDK types.
 */

/** One message of the conversation sent to the model. */
export interface ChatTurn {
  role: 'user' | 'assistant' | 'system';
  content: string;
}

/** What a session asks a provider for: the answer to `messages`, streamed. */
export interface StreamRequest {
  sessionId: string;
  /** Id of the assistant message being produced (for logs and deterministic providers). */
  messageId: string;
  /** Each turn is frozen and shared by the session's later requests (src/sessions/prompt-cache.ts): copy one before changing it. */
  messages: readonly Readonly<ChatTurn>[];
  /** Aborting it stops the stream promptly; the iteration then throws an error named `AbortError`. */
  signal: AbortSignal;
  /** Overrides the provider's default model for this request. */
  model?: string;
  /** The session's system prompt (config `system`), sent before the conversation. */
  system?: string;
  /** Sampling temperature (config `temperature`). */
  temperature?: number;
  /** The most tokens the answer may have (config `maxOutputTokens`). */
  maxOutputTokens?: number;
}

/** Tokens an answer used, as the provider reported them (any may be missing). */
export interface LlmUsage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  reasoningTokens?: number;
  cachedInputTokens?: number;
}

/**
 * One piece of a streamed answer, from {@link LlmProvider.streamParts}: text,
 * reasoning, and one `finish` last, with the model's finish reason (the AI
 * SDK's: `stop`, `length`, `content-filter`, `tool-calls`, `other`) and usage.
 */
export type LlmStreamPart =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'finish'; finishReason: string; usage?: LlmUsage };

/**
 * A source of streamed answers.
 *
 * `stream()` yields text chunks in order and ends normally only when the answer
 * is complete. A provider failure — an HTTP error, a cut connection, a malformed
 * stream — ends the iteration with a thrown error, never with a silently short
 * answer. When `signal` aborts, the iteration stops promptly and throws an error
 * whose `name` is `'AbortError'` (see {@link isAbortError}).
 */
export interface LlmProvider {
  readonly name: string;
  /** The model used when a request names none. */
  readonly model: string;
  stream(request: StreamRequest): AsyncIterable<string>;
  /**
   * The answer as parts (text, reasoning, then one finish with reason and
   * usage), under the same failure and abort rules as `stream`. Optional: the
   * runtime falls back to `stream` (text only, finish reason `stop`, no usage).
   */
  streamParts?(request: StreamRequest): AsyncIterable<LlmStreamPart>;
}

/**
 * `provider.streamParts`, or its `stream` as parts: text chunks, then finish
 * `stop` without usage. The provider's own parts are returned as they are, not
 * re-yielded through a generator of ours: under load every chunk would pay one
 * more promise and iterator result for nothing.
 */
export function streamPartsOf(provider: LlmProvider, request: StreamRequest): AsyncIterable<LlmStreamPart> {
  return provider.streamParts !== undefined ? provider.streamParts(request) : partsOfText(provider, request);
}

async function* partsOfText(provider: LlmProvider, request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
  for await (const text of provider.stream(request)) yield { type: 'text', text };
  yield { type: 'finish', finishReason: 'stop' };
}

/** `parts` as text only: what `stream` yields when a provider implements `streamParts`. */
export async function* textOfStream(parts: AsyncIterable<LlmStreamPart>): AsyncGenerator<string, void, undefined> {
  for await (const part of parts) if (part.type === 'text') yield part.text;
}

/** Thrown by providers when the request's signal aborts; `name` is `'AbortError'`, `cause` is the signal's reason. */
export class LlmAbortError extends Error {
  override readonly name = 'AbortError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The error a provider throws when `signal` aborted; the message says in which phase (e.g. "while waiting for chunk 3 of 8"). */
export function abortError(provider: string, phase: string, signal: AbortSignal): LlmAbortError {
  return new LlmAbortError(`${provider}: stream aborted ${phase}`, { cause: signal.reason });
}

/** True for any error named `AbortError`: ours, a DOMException from fetch, or an SDK's. */
export function isAbortError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AbortError';
}

/**
 * A provider failed to produce a complete answer (HTTP error, cut connection,
 * malformed stream). `cause` holds the underlying error; `statusCode` is set when
 * the provider answered with an HTTP error status.
 */
export class LlmProviderError extends Error {
  override readonly name = 'LlmProviderError';
  readonly provider: string;
  readonly model: string;
  readonly statusCode: number | undefined;

  constructor(message: string, details: { provider: string; model: string; statusCode?: number | undefined }, options?: { cause?: unknown }) {
    super(message, options);
    this.provider = details.provider;
    this.model = details.model;
    this.statusCode = details.statusCode;
  }
}

/**
 * One model call of a multi-step turn with tools: the conversation as AI SDK
 * model messages (tool calls and results included) and the tools the model
 * may call (definitions only: Arbor runs each call itself).
 */
export interface ToolStepRequest {
  sessionId: string;
  messageId: string;
  /** AI SDK `ModelMessage[]` */
  messages: readonly unknown[];
  /** AI SDK `ToolSet` without `execute` */
  tools: Readonly<Record<string, unknown>>;
  signal: AbortSignal;
  model?: string;
}

/** A piece of one model step: text, reasoning, a tool call, then one finish. */
export type ToolStepPart =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'tool-call'; toolCallId: string; toolName: string; input: unknown }
  /** A tool call's input as the model streams it (shown, never journaled: only a `tool-call` of a finished step runs). */
  | { type: 'tool-input-start'; toolCallId: string; toolName: string }
  | { type: 'tool-input-delta'; toolCallId: string; delta: string }
  | { type: 'finish'; finishReason: string; usage?: { inputTokens?: number; outputTokens?: number } };

/** A provider that can make tool calls: one model step per call (same failure and abort rules as `stream`). */
export interface ToolStepProvider {
  streamStep(request: ToolStepRequest): AsyncIterable<ToolStepPart>;
}

/** True when `llm` can make tool calls. */
export function canCallTools(llm: object): llm is ToolStepProvider {
  return typeof (llm as Partial<ToolStepProvider>).streamStep === 'function';
}
