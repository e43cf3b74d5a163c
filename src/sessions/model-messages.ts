import type { ModelMessage } from 'ai';
import { findMessage, UNKNOWN_OUTCOME_TEXT, type Message, type SessionState, type ToolPart } from '../core/state.ts';

/**
 * The conversation as the AI SDK's `ModelMessage`s, tool calls and their
 * results included: what a multi-step turn sends the model. A call whose
 * outcome is unknown is sent as an error result saying so, so the model is
 * told, and a call that never got an answer (no approval) as one saying it
 * did not run.
 */

type AssistantContent = Exclude<Extract<ModelMessage, { role: 'assistant' }>['content'], string>;
type ToolContent = Extract<ModelMessage, { role: 'tool' }>['content'];
type ToolResultOutput = Extract<ToolContent[number], { type: 'tool-result' }>['output'];

/** The result the model sees for a tool part, or undefined while it has none yet (running). */
export function toolResultOutput(part: ToolPart): ToolResultOutput {
  type Out = ToolResultOutput;
  if (part.outcome === 'unknown') return { type: 'error-text', value: UNKNOWN_OUTCOME_TEXT } as Out;
  switch (part.state) {
    case 'output-available':
      return { type: 'json', value: (part.output ?? null) as never } as Out;
    case 'output-error':
      return { type: 'error-text', value: part.errorText ?? 'the tool failed' } as Out;
    case 'output-denied':
      return { type: 'execution-denied', ...(part.approval?.reason === undefined ? {} : { reason: part.approval.reason }) } as Out;
    default:
      return { type: 'error-text', value: 'This tool call did not run: it is waiting for an approval that was not given.' } as Out;
  }
}

/** One assistant message (its parts, step by step) as model messages: assistant content, then the tool results of that step. */
export function assistantModelMessages(message: Pick<Message, 'parts'>): ModelMessage[] {
  const out: ModelMessage[] = [];
  let content: AssistantContent = [];
  let results: ToolContent = [];
  const flush = (): void => {
    if (content.length > 0) out.push({ role: 'assistant', content });
    if (results.length > 0) out.push({ role: 'tool', content: results });
    content = [];
    results = [];
  };
  for (const part of message.parts) {
    if (part.type === 'step-start') {
      if (results.length > 0) flush();
      continue;
    }
    if (part.type === 'reasoning') continue; // not sent back
    if (part.type === 'text') {
      if (results.length > 0) flush();
      if (part.text.length > 0) content.push({ type: 'text', text: part.text });
      continue;
    }
    content.push({ type: 'tool-call', toolCallId: part.toolCallId, toolName: part.toolName, input: part.input ?? {} });
    results.push({ type: 'tool-result', toolCallId: part.toolCallId, toolName: part.toolName, output: toolResultOutput(part) });
  }
  flush();
  return out;
}

/**
 * The prompt of a turn: every user and assistant message up to its request
 * (as `promptFor`), then `extra` assistant messages whose tool calls the turn
 * carries on from (a continuation after an approval, or the partial answer an
 * interrupted turn left, so the model learns what already ran or is unknown).
 */
export function modelMessagesFor(state: SessionState, requestMessageId: string, extra: readonly string[] = []): ModelMessage[] {
  const request = findMessage(state, requestMessageId);
  const upto = request?.seq ?? state.seq;
  const out: ModelMessage[] = [];
  const push = (m: Message): void => {
    if (m.role === 'user') out.push({ role: 'user', content: m.content });
    else if (m.role === 'assistant') out.push(...assistantModelMessages(m));
  };
  for (const m of state.messages) if (m.role !== 'system' && m.seq <= upto) push(m);
  for (const id of extra) {
    const m = findMessage(state, id);
    if (m !== undefined && m.role === 'assistant') push(m);
  }
  return out;
}
