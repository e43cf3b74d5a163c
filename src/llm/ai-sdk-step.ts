import { streamText, type LanguageModel, type ModelMessage, type ToolSet } from 'ai';
import { abortError, LlmAbortError, LlmProviderError, type ToolStepPart, type ToolStepRequest } from './provider.ts';

/** The AI SDK's `experimental_telemetry` settings (what ai-sdk-provider.ts calls AiSdkTelemetry). */
export type AiSdkStepTelemetry = NonNullable<Parameters<typeof streamText>[0]['experimental_telemetry']>;

/** The SDK's error shapes, read by duck-typing so we do not depend on its classes. */
export function statusCodeOf(err: unknown): number | undefined {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; depth++) {
    const code = (e as { statusCode?: unknown }).statusCode;
    if (typeof code === 'number') return code;
    // A RetryError carries the last attempt's error.
    e = (e as { lastError?: unknown }).lastError;
  }
  return undefined;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * One model step with tools through the AI SDK's `streamText`: the tools have
 * no `execute`, so the SDK stops after the model's tool calls and hands them
 * over (Arbor runs them under its intent log). Failures throw, as `stream`
 * does: an `error` part or a rejected `fullStream` is an LlmProviderError, an
 * abort an AbortError; a step that ends without a finish is a failure too —
 * so a connection cut mid-tool-call never yields a half tool call.
 */
export async function* streamAiSdkStep(
  target: { name: string; modelId: string; model: LanguageModel; maxRetries: number; telemetry?: AiSdkStepTelemetry | undefined },
  request: ToolStepRequest,
): AsyncGenerator<ToolStepPart, void, undefined> {
  const { signal } = request;
  const { name, modelId } = target;
  if (signal.aborted) throw abortError(name, 'before the request was sent', signal);
  const local = new AbortController();
  const abortSignal = AbortSignal.any([signal, local.signal]);
  let received = 0;
  // Tool calls are held until the step's finish: a cut before it must not leave a call half-made.
  const calls: ToolStepPart[] = [];
  try {
    const result = streamText({
      model: target.model,
      messages: request.messages as ModelMessage[],
      tools: request.tools as ToolSet,
      allowSystemInMessages: true,
      abortSignal,
      maxRetries: target.maxRetries,
      onError: () => {},
      // The SDK's own spans for every step, as for an answer without tools (functionId `arbor.step`), with the session and message ids.
      ...(target.telemetry === undefined
        ? {}
        : { experimental_telemetry: { functionId: 'arbor.step', ...target.telemetry, metadata: { ...target.telemetry.metadata, 'arbor.session.id': request.sessionId, 'arbor.message.id': request.messageId } } }),
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
        case 'tool-input-start':
          yield { type: 'tool-input-start', toolCallId: part.id, toolName: part.toolName };
          break;
        case 'tool-input-delta':
          if (part.delta.length > 0) yield { type: 'tool-input-delta', toolCallId: part.id, delta: part.delta };
          break;
        case 'tool-call':
          received++;
          calls.push({ type: 'tool-call', toolCallId: part.toolCallId, toolName: part.toolName, input: part.input });
          break;
        case 'tool-error':
          // The SDK could not parse the call's input (or the tool is unknown to it): the step fails as a whole.
          throw new LlmProviderError(`${name}: ${modelId} made an invalid tool call: ${messageOf(part.error)}`, { provider: name, model: modelId });
        case 'abort':
          throw abortError(name, `after ${received} chunk(s)`, signal);
        case 'error':
          throw new LlmProviderError(`${name}: ${modelId} failed after ${received} chunk(s): ${messageOf(part.error)}`, { provider: name, model: modelId, statusCode: statusCodeOf(part.error) }, { cause: part.error });
        case 'finish':
          if (part.finishReason === 'error') throw new LlmProviderError(`${name}: ${modelId} finished with reason "error" after ${received} chunk(s)`, { provider: name, model: modelId });
          finished = true;
          yield* calls;
          yield { type: 'finish', finishReason: part.finishReason, usage: { ...(part.totalUsage.inputTokens === undefined ? {} : { inputTokens: part.totalUsage.inputTokens }), ...(part.totalUsage.outputTokens === undefined ? {} : { outputTokens: part.totalUsage.outputTokens }) } };
          break;
        default:
          break;
      }
    }
    if (!finished) throw new LlmProviderError(`${name}: ${modelId} stream ended without a finish after ${received} chunk(s)`, { provider: name, model: modelId });
  } catch (err) {
    if (err instanceof LlmAbortError || err instanceof LlmProviderError) throw err;
    if (signal.aborted) throw abortError(name, `after ${received} chunk(s)`, signal);
    throw new LlmProviderError(`${name}: ${modelId} failed after ${received} chunk(s): ${messageOf(err)}`, { provider: name, model: modelId, statusCode: statusCodeOf(err) }, { cause: err });
  } finally {
    local.abort();
  }
}
