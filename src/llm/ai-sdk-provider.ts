import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { streamText, type LanguageModel } from 'ai';
import { abortError, LlmAbortError, LlmProviderError, textOfStream, type LlmProvider, type LlmStreamPart, type LlmUsage, type StreamRequest, type ToolStepPart, type ToolStepProvider, type ToolStepRequest } from './provider.ts';
import { messageOf, statusCodeOf, streamAiSdkStep } from './ai-sdk-step.ts';

/** The AI SDK's `experimental_telemetry` settings, passed through to `streamText`. */
export type AiSdkTelemetry = NonNullable<Parameters<typeof streamText>[0]['experimental_telemetry']>;

/** `true` → on with the SDK's defaults; an object as it is; false/undefined → off. Throws TypeError for anything else. */
function telemetryOption(value: unknown): AiSdkTelemetry | undefined {
  if (value !== undefined && typeof value !== 'boolean' && (typeof value !== 'object' || value === null)) {
    throw new TypeError(`option telemetry must be a boolean or the AI SDK's experimental_telemetry settings, got ${JSON.stringify(value)}`);
  }
  return value === true ? { isEnabled: true } : value === false ? undefined : (value as AiSdkTelemetry | undefined);
}

/** Options of a provider that speaks the OpenAI chat-completions protocol through the AI SDK. */
export interface AiSdkProviderOptions {
  /** e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`. */
  baseURL: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** The default model; a request may name another. */
  model: string;
  /** Shown in errors and logs (default `openai-compatible`). */
  name?: string;
  /** Extra HTTP headers on every request. */
  headers?: Record<string, string>;
  /**
   * Retries of the initial request on a retryable failure (5xx, 429, network),
   * before any chunk was received; default 2 (the AI SDK's), with its 2 s, 4 s backoff.
   * A stream that fails after its first chunk is never retried here.
   */
  maxRetries?: number;
  /**
   * The AI SDK's own OpenTelemetry spans (`ai.streamText`, `ai.streamText.doStream`):
   * `true` turns them on (through the global tracer provider, inputs and outputs
   * recorded), an object is passed as `experimental_telemetry` as it is. Each
   * call (an answer, functionId `arbor.answer`, and every model step of a turn
   * with tools, `arbor.step`) adds `arbor.session.id` and `arbor.message.id`
   * to its metadata. Off by default.
   */
  telemetry?: boolean | AiSdkTelemetry;
}

/**
 * An {@link LlmProvider} for any OpenAI-compatible endpoint, through the AI SDK's
 * `streamText` (see streamModel for how failures are caught).
 */
export class AiSdkProvider implements LlmProvider, ToolStepProvider {
  readonly name: string;
  readonly model: string;
  readonly #maxRetries: number;
  readonly #telemetry: AiSdkTelemetry | undefined;
  readonly #sdk: ReturnType<typeof createOpenAICompatible>;

  constructor(options: AiSdkProviderOptions) {
    if (typeof options.baseURL !== 'string' || !/^https?:\/\//.test(options.baseURL)) {
      throw new TypeError(`option baseURL must be an http(s) URL, got ${JSON.stringify(options.baseURL)}`);
    }
    if (typeof options.model !== 'string' || options.model.length === 0) {
      throw new TypeError(`option model must be a non-empty string, got ${JSON.stringify(options.model)}`);
    }
    const maxRetries = options.maxRetries ?? 2;
    if (!Number.isSafeInteger(maxRetries) || maxRetries < 0 || maxRetries > 10) {
      throw new RangeError(`option maxRetries must be an integer from 0 to 10, got ${String(options.maxRetries)}`);
    }
    this.name = options.name ?? 'openai-compatible';
    this.model = options.model;
    this.#maxRetries = maxRetries;
    this.#telemetry = telemetryOption(options.telemetry);
    this.#sdk = createOpenAICompatible({
      name: this.name,
      baseURL: options.baseURL,
      ...(options.apiKey !== undefined ? { apiKey: options.apiKey } : {}),
      ...(options.headers !== undefined ? { headers: options.headers } : {}),
    });
  }

  /** One step of a turn with tools (see streamAiSdkStep). */
  streamStep(request: ToolStepRequest): AsyncGenerator<ToolStepPart, void, undefined> {
    const modelId = request.model ?? this.model;
    return streamAiSdkStep({ name: this.name, modelId, model: this.#sdk.chatModel(modelId), maxRetries: this.#maxRetries, telemetry: this.#telemetry }, request);
  }

  stream(request: StreamRequest): AsyncGenerator<string, void, undefined> {
    return textOfStream(this.streamParts(request));
  }

  streamParts(request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
    const model = request.model ?? this.model;
    return streamModel({ name: this.name, modelId: model, model: this.#sdk.chatModel(model), maxRetries: this.#maxRetries, telemetry: this.#telemetry }, request);
  }
}

/** Options of a provider around any AI SDK language model. */
export interface LanguageModelProviderOptions {
  /** Any AI SDK `LanguageModel` (ai@6: a `LanguageModelV3` such as `anthropic('claude-…')`, or a gateway id string). */
  model: LanguageModel;
  /**
   * Other models a session may pick with its `model` config, by name. The
   * default model is also found under its own id.
   */
  models?: Readonly<Record<string, LanguageModel>>;
  /** Shown in errors, logs and the journal (default: the model's provider id). */
  name?: string;
  /** Retries before the first chunk (default 2, the AI SDK's). */
  maxRetries?: number;
  /** The AI SDK's own OpenTelemetry spans, as for {@link AiSdkProviderOptions.telemetry}. */
  telemetry?: boolean | AiSdkTelemetry;
}

function modelIdOf(model: LanguageModel): string {
  return typeof model === 'string' ? model : model.modelId;
}

/**
 * An {@link LlmProvider} around any AI SDK `LanguageModel`: what
 * `createArbor({ model })` builds. A session's `model` config picks one of
 * `models` (or the default by its id); an unknown name fails the turn with an
 * {@link LlmProviderError} that names it.
 */
export class LanguageModelProvider implements LlmProvider, ToolStepProvider {
  readonly name: string;
  readonly model: string;
  readonly #default: LanguageModel;
  readonly #models: Readonly<Record<string, LanguageModel>>;
  readonly #maxRetries: number;
  readonly #telemetry: AiSdkTelemetry | undefined;

  constructor(options: LanguageModelProviderOptions) {
    const m: unknown = options.model;
    const isModel = typeof m === 'string' ? m.length > 0 : typeof m === 'object' && m !== null && typeof (m as { doStream?: unknown }).doStream === 'function';
    if (!isModel) throw new TypeError('option model must be an AI SDK LanguageModel (an object with doStream, e.g. openai("gpt-4o"), or a model id string)');
    const maxRetries = options.maxRetries ?? 2;
    if (!Number.isSafeInteger(maxRetries) || maxRetries < 0 || maxRetries > 10) {
      throw new RangeError(`option maxRetries must be an integer from 0 to 10, got ${String(options.maxRetries)}`);
    }
    this.#default = options.model;
    this.model = modelIdOf(options.model);
    this.name = options.name ?? (typeof options.model === 'string' ? 'gateway' : options.model.provider);
    this.#models = Object.freeze({ ...options.models });
    this.#maxRetries = maxRetries;
    this.#telemetry = telemetryOption(options.telemetry);
  }

  stream(request: StreamRequest): AsyncGenerator<string, void, undefined> {
    return textOfStream(this.streamParts(request));
  }

  /** One step of a turn with tools (see streamAiSdkStep), with the same model choice as streamParts. */
  async *streamStep(request: ToolStepRequest): AsyncGenerator<ToolStepPart, void, undefined> {
    const wanted = request.model ?? this.model;
    const model = Object.hasOwn(this.#models, wanted) ? this.#models[wanted]! : wanted === this.model ? this.#default : undefined;
    if (model === undefined) throw new LlmProviderError(`${this.name}: no model ${JSON.stringify(wanted)}; pass it in createArbor({ models })`, { provider: this.name, model: wanted });
    yield* streamAiSdkStep({ name: this.name, modelId: wanted, model, maxRetries: this.#maxRetries, telemetry: this.#telemetry }, request);
  }

  async *streamParts(request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
    const wanted = request.model ?? this.model;
    const model = Object.hasOwn(this.#models, wanted) ? this.#models[wanted]! : wanted === this.model ? this.#default : undefined;
    if (model === undefined) {
      const known = [this.model, ...Object.keys(this.#models)].join(', ');
      throw new LlmProviderError(`${this.name}: no model ${JSON.stringify(wanted)} (known: ${known}); pass it in createArbor({ models })`, { provider: this.name, model: wanted });
    }
    yield* streamModel({ name: this.name, modelId: wanted, model, maxRetries: this.#maxRetries, telemetry: this.#telemetry }, request);
  }
}

function usageOf(u: { inputTokens?: number | undefined; outputTokens?: number | undefined; totalTokens?: number | undefined; outputTokenDetails?: { reasoningTokens?: number | undefined }; inputTokenDetails?: { cacheReadTokens?: number | undefined } } | undefined): LlmUsage | undefined {
  if (u === undefined) return undefined;
  const out: LlmUsage = {};
  const put = (key: keyof LlmUsage, v: number | undefined): void => {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) out[key] = v;
  };
  put('inputTokens', u.inputTokens);
  put('outputTokens', u.outputTokens);
  put('totalTokens', u.totalTokens);
  put('reasoningTokens', u.outputTokenDetails?.reasoningTokens);
  put('cachedInputTokens', u.inputTokenDetails?.cacheReadTokens);
  return Object.keys(out).length === 0 ? undefined : out;
}

/**
 * One answer from an AI SDK model through `streamText`, as parts.
 *
 * Failures always throw, as the provider interface demands. That needs care:
 * `streamText` never rejects its `textStream` for an HTTP error status, a
 * malformed event or a stream that ends without a finish reason — the text
 * stream just ends early and the error goes to `onError` (whose default is
 * `console.error`). An abort also ends `textStream` normally. So this reads
 * `fullStream` and turns its `error` part into an {@link LlmProviderError} and
 * its `abort` part into an AbortError.
 */
async function* streamModel(target: { name: string; modelId: string; model: LanguageModel; maxRetries: number; telemetry: AiSdkTelemetry | undefined }, request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
  const { signal } = request;
  const { name, modelId: model } = target;
  // Fast path: the SDK would also send nothing, but this names the phase and skips building a request.
  if (signal.aborted) throw abortError(name, 'before the request was sent', signal);

  // Our own controller as well as the caller's: when the consumer stops iterating
  // early (break, or a throw in its loop), `finally` aborts it so the HTTP
  // connection is closed instead of streaming on into the void.
  const local = new AbortController();
  const abortSignal = AbortSignal.any([signal, local.signal]);
  let received = 0;
  try {
    const result = streamText({
      model: target.model,
      messages: request.messages.map((turn) => ({ role: turn.role, content: turn.content })),
      allowSystemInMessages: true,
      ...(request.system === undefined ? {} : { system: request.system }),
      ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
      ...(request.maxOutputTokens === undefined ? {} : { maxOutputTokens: request.maxOutputTokens }),
      abortSignal,
      maxRetries: target.maxRetries,
      // Errors are surfaced below through the fullStream 'error' part; the
      // default handler would also print every one of them with console.error.
      onError: () => {},
      ...(target.telemetry === undefined
        ? {}
        : { experimental_telemetry: { functionId: 'arbor.answer', ...target.telemetry, metadata: { ...target.telemetry.metadata, 'arbor.session.id': request.sessionId, 'arbor.message.id': request.messageId } } }),
    });
    let finished = false;
    for await (const part of result.fullStream) {
      switch (part.type) {
        case 'text-delta':
          if (part.text.length > 0) {
            received++;
            yield { type: 'text', text: part.text };
          }
          break;
        case 'reasoning-delta':
          if (part.text.length > 0) {
            received++;
            yield { type: 'reasoning', text: part.text };
          }
          break;
        case 'abort':
          throw abortError(name, `after ${received} chunk(s)`, signal);
        case 'error':
          // Failure branch: an HTTP error status, an unparsable event or a stream that
          // ended without a finish reason. Any text already yielded is a partial answer.
          throw new LlmProviderError(
            `${name}: ${model} failed after ${received} chunk(s): ${messageOf(part.error)}`,
            { provider: name, model, statusCode: statusCodeOf(part.error) },
            { cause: part.error },
          );
        case 'finish': {
          // Belt and braces: the SDK sends an 'error' part before a finish with reason
          // 'error', but a finish that says error must never pass for a complete answer.
          if (part.finishReason === 'error') {
            throw new LlmProviderError(`${name}: ${model} finished with reason "error" after ${received} chunk(s)`, { provider: name, model });
          }
          finished = true;
          const usage = usageOf(part.totalUsage);
          yield { type: 'finish', finishReason: part.finishReason, ...(usage === undefined ? {} : { usage }) };
          break;
        }
        default:
          break;
      }
    }
    // Defensive: ai@6 always ends fullStream with a 'finish' (or an 'error'/'abort'
    // part, handled above); if a future version does not, a truncated answer must still throw.
    if (!finished) {
      throw new LlmProviderError(`${name}: ${model} stream ended without a finish after ${received} chunk(s)`, { provider: name, model });
    }
  } catch (err) {
    if (err instanceof LlmAbortError || err instanceof LlmProviderError) throw err;
    // Once the caller aborted, whatever broke the stream (fetch's AbortError, a
    // torn-down transport) is reported as the abort it is.
    if (signal.aborted) throw abortError(name, `after ${received} chunk(s)`, signal);
    // Failure branch: the fullStream itself rejected — the connection was cut mid-stream
    // (the SDK says "Failed to process successful response") or the request failed.
    throw new LlmProviderError(
      `${name}: ${model} failed after ${received} chunk(s): ${messageOf(err)}`,
      { provider: name, model, statusCode: statusCodeOf(err) },
      { cause: err },
    );
  } finally {
    local.abort();
  }
}
