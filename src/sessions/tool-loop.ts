import type { ModelMessage } from 'ai';
import type { SessionState } from '../core/state.ts';
import { abortError, type ToolStepPart, type ToolStepProvider, type ToolStepRequest } from '../llm/provider.ts';
import type { PriorCall } from '../tools/policy.ts';
import { runToolCalls, type AnswerPart, type ModelToolCall, type ToolChunk, type ToolRunnerDeps } from './tool-runner.ts';

/**
 * A multi-step turn: the model is called; if it made tool calls, they run
 * (tool-runner.ts: intent journaled first) and their results go back to it,
 * until it answers without a tool call, a call waits for an approval (the turn
 * pauses), or `maxSteps` model calls were made.
 *
 * Yields what the answer's stream shows: `start-step`, text and reasoning as
 * the model produces them, `journaled` after the step's tool events were
 * written (the parts before it are in the journal now), `finish-step`, and
 * one `finish` last. The tool calls' input as the model streams it goes to
 * the stream directly (`tool-input-start` / `tool-input-delta`); only the
 * calls of a finished step run.
 */
export type TurnPart =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'journaled' }
  /** a step begins / ends (the SDK's `start-step` / `finish-step` chunks; the answer's open text part ends first) */
  | { type: 'start-step' }
  | { type: 'finish-step' }
  /** a chunk for the stream as it is (a tool call's input streaming); `endsText`: the open text or reasoning part ends first */
  | { type: 'chunk'; chunk: ToolChunk; endsText: boolean }
  | { type: 'finish'; finishReason: string; steps: number; paused: boolean; usage?: { inputTokens?: number; outputTokens?: number }; rest: AnswerPart[] };

type AssistantContent = Exclude<Extract<ModelMessage, { role: 'assistant' }>['content'], string>;

export async function* toolLoop(options: {
  provider: ToolStepProvider;
  request: Omit<ToolStepRequest, 'messages'>;
  messages: readonly ModelMessage[];
  maxSteps: number;
  deps: ToolRunnerDeps;
  messageId: string;
  prior: readonly PriorCall[];
}): AsyncGenerator<TurnPart, void, undefined> {
  const { provider, deps, messageId, request } = options;
  const signal = request.signal;
  let messages: ModelMessage[] = [...options.messages];
  let pending: AnswerPart[] = [];
  const usage = { inputTokens: 0, outputTokens: 0 };
  const add = (p: AnswerPart & { text: string }): void => {
    const last = pending.at(-1);
    if (last !== undefined && last.type === p.type) pending[pending.length - 1] = { type: p.type, text: (last as { text: string }).text + p.text };
    else pending.push({ type: p.type, text: p.text } as AnswerPart);
  };
  for (let step = 0; ; step++) {
    if (step > 0) pending.push({ type: 'step-start' });
    yield { type: 'start-step' };
    const calls: ModelToolCall[] = [];
    const content: AssistantContent = [];
    let finish: Extract<ToolStepPart, { type: 'finish' }> | undefined;
    for await (const part of provider.streamStep({ ...request, messages })) {
      if (part.type === 'text' || part.type === 'reasoning') {
        add(part);
        if (part.type === 'text') {
          const last = content.at(-1);
          if (last?.type === 'text') content[content.length - 1] = { type: 'text', text: last.text + part.text };
          else content.push({ type: 'text', text: part.text });
        }
        yield part;
      } else if (part.type === 'tool-call') {
        calls.push({ toolCallId: part.toolCallId, toolName: part.toolName, input: part.input });
      } else if (part.type === 'tool-input-start') {
        const chunk = { type: 'tool-input-start', toolCallId: part.toolCallId, toolName: part.toolName, ...(deps.registry.get(part.toolName)?.dynamic === true ? { dynamic: true } : {}) };
        yield { type: 'chunk', chunk, endsText: true };
      } else if (part.type === 'tool-input-delta') {
        yield { type: 'chunk', chunk: { type: 'tool-input-delta', toolCallId: part.toolCallId, inputTextDelta: part.delta }, endsText: false };
      } else {
        finish = part;
      }
    }
    usage.inputTokens += finish?.usage?.inputTokens ?? 0;
    usage.outputTokens += finish?.usage?.outputTokens ?? 0;
    if (calls.length === 0) {
      yield { type: 'finish-step' };
      yield { type: 'finish', finishReason: finish?.finishReason ?? 'stop', steps: step + 1, paused: false, usage, rest: pending };
      return;
    }
    // Stopped or shutting down between the model's calls and running them: nothing ran, nothing is journaled.
    if (signal.aborted) throw abortError('turn', `before running ${calls.length} tool call(s)`, signal);
    const { results } = await runToolCalls(deps, { state: deps.current(), messageId, calls, before: pending, prior: options.prior });
    pending = [];
    yield { type: 'journaled' };
    yield { type: 'finish-step' };
    if (results.some((r) => r.status === 'waiting')) {
      yield { type: 'finish', finishReason: 'tool-calls', steps: step + 1, paused: true, usage, rest: [] };
      return;
    }
    if (step + 1 >= options.maxSteps) {
      yield { type: 'finish', finishReason: 'tool-calls', steps: step + 1, paused: false, usage, rest: [] };
      return;
    }
    for (const c of calls) content.push({ type: 'tool-call', toolCallId: c.toolCallId, toolName: c.toolName, input: c.input ?? {} });
    messages = [...messages, { role: 'assistant', content }, toolMessage(results)];
  }
}

function toolMessage(results: readonly { toolCallId: string; toolName: string; output?: unknown; error?: string }[]): ModelMessage {
  return {
    role: 'tool',
    content: results.map((r) => ({
      type: 'tool-result' as const,
      toolCallId: r.toolCallId,
      toolName: r.toolName,
      output: r.error === undefined ? { type: 'json' as const, value: (r.output ?? null) as never } : { type: 'error-text' as const, value: r.error },
    })),
  };
}

/** The session state type, re-exported for the actor's deps. */
export type { SessionState };
