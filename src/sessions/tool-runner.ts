import { randomUUID } from 'node:crypto';
import type { CriticalEventType, EventData } from '../core/events.ts';
import { findMessage, type MessagePart, type SessionState, type ToolPart } from '../core/state.ts';
import { decideCall, needsApprovalFor, toolPermission, type GrantEntry, type PriorCall } from '../tools/policy.ts';
import type { ToolRegistry } from '../tools/registry.ts';

/**
 * Runs the tool calls of one model step under the intent log: for each call,
 * the policy decides (tools/policy.ts); a call that runs has
 * `tool_call_started` journaled (durable) BEFORE its tool is invoked and
 * `tool_call_finished` after; a call that needs an approval has
 * `tool_approval_requested` journaled and does not run; a refused call gets
 * its `tool_call_finished` with the reason and does not run.
 */

/** A part an answer streams itself (text, reasoning, step start): what `before` carries. */
export type AnswerPart = Exclude<MessagePart, ToolPart>;

/** A tool call the model made. */
export interface ModelToolCall {
  readonly toolCallId: string;
  readonly toolName: string;
  readonly input: unknown;
}

/** How one call ended for the model's next step. */
export interface ToolCallResult {
  readonly toolCallId: string;
  readonly toolName: string;
  readonly input: unknown;
  /** 'ran' (output or error), 'refused' (never ran), 'waiting' (approval requested) */
  readonly status: 'ran' | 'refused' | 'waiting';
  readonly output?: unknown;
  readonly error?: string;
}

/** A UI stream chunk for the turn's stream (feat-chat's TurnLog takes them). */
export type ToolChunk = { readonly type: string } & Readonly<Record<string, unknown>>;

export interface ToolRunnerDeps {
  readonly registry: ToolRegistry;
  /** Journals one event inside the session's mailbox; resolves with the state after it, once durable. */
  journal<T extends CriticalEventType>(type: T, data: EventData<T>): Promise<SessionState>;
  /** Tells the turn's stream. */
  chunk(c: ToolChunk): void;
  /** The session's committed state now (grants decided meanwhile count). */
  current(): SessionState;
  now(): number;
}

/** A JSON copy of a tool's output (undefined → null): what the journal keeps and replays. */
function jsonOf(value: unknown): unknown {
  if (value === undefined) return null;
  try {
    return JSON.parse(JSON.stringify(value)) as unknown;
  } catch {
    return String(value);
  }
}

/** The error text of an MCP result with `isError`, else undefined. */
function mcpErrorOf(output: unknown): string | undefined {
  if (typeof output !== 'object' || output === null || (output as { isError?: unknown }).isError !== true) return undefined;
  const content = (output as { content?: unknown }).content;
  const texts = Array.isArray(content) ? content.filter((c): c is { type: 'text'; text: string } => typeof c === 'object' && c !== null && c.type === 'text' && typeof c.text === 'string').map((c) => c.text) : [];
  return texts.join('\n') || 'the tool reported an error';
}

function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).slice(0, 10_000);
}

/**
 * Calls a re-run could repeat: those of the turn being retried (`retryOf`'s
 * tool parts), and every call in the session whose outcome is unknown.
 */
export function priorCallsFor(state: SessionState, retryOf: string | undefined): PriorCall[] {
  const out: PriorCall[] = [];
  const of = (p: ToolPart): PriorCall => ({
    toolName: p.toolName,
    input: p.input,
    outcome: p.outcome === 'unknown' ? 'unknown' : p.state === 'output-available' ? 'ok' : p.state === 'output-error' ? 'error' : p.state === 'output-denied' ? 'denied' : 'pending',
  });
  const retried = retryOf === undefined ? undefined : findMessage(state, retryOf);
  for (const p of retried?.parts ?? []) if (p.type === 'tool') out.push(of(p));
  for (const m of state.messages) {
    if (m.id === retryOf || m.role !== 'assistant') continue;
    for (const p of m.parts) if (p.type === 'tool' && p.outcome === 'unknown') out.push(of(p));
  }
  return out;
}

/**
 * Runs (or asks for, or refuses) each call in order. `before`: the answer's
 * parts not journaled yet, carried by the first event. `pendingGrantFor`: the
 * call ids a continuation runs under the grant just decided.
 */
export async function runToolCalls(
  deps: ToolRunnerDeps,
  input: { state: SessionState; messageId: string; calls: readonly ModelToolCall[]; before: readonly AnswerPart[]; prior: readonly PriorCall[]; refuseRepeats?: boolean },
): Promise<{ state: SessionState; results: ToolCallResult[] }> {
  let state = input.state;
  let before: readonly AnswerPart[] | undefined = input.before.length > 0 ? input.before : undefined;
  const takeBefore = (): { before?: AnswerPart[] } => {
    const b = before;
    before = undefined;
    return b === undefined ? {} : { before: [...b] };
  };
  const results: ToolCallResult[] = [];
  for (const call of input.calls) {
    const { toolCallId, toolName } = call;
    const callInput = jsonOf(call.input);
    const entry = deps.registry.get(toolName);
    if (entry === undefined) {
      const error = `tool ${toolName} is not available (unknown, or its MCP server is down); it was not run`;
      state = await deps.journal('tool_call_finished', { messageId: input.messageId, toolCallId, tool: toolName, input: callInput as never, error, ...takeBefore() });
      // The client needs the call's part before its outcome (the SDK refuses an output for a call it never saw).
      deps.chunk({ type: 'tool-input-available', toolCallId, toolName, input: callInput });
      deps.chunk({ type: 'tool-output-error', toolCallId, errorText: error });
      results.push({ toolCallId, toolName, input: callInput, status: 'refused', error });
      continue;
    }
    const dynamic = entry.dynamic ? { dynamic: true } : {};
    deps.chunk({ type: 'tool-input-available', toolCallId, toolName, input: callInput, ...dynamic });
    const needsApproval = await needsApprovalFor(entry.tool, entry.safety, callInput, { toolCallId });
    const grant = deps.current().permissions[toolPermission(toolName)] as GrantEntry | undefined;
    const decision = decideCall({ toolName, toolCallId, callInput, safety: entry.safety, needsApproval, prior: input.prior, grant, now: deps.now(), ...(input.refuseRepeats === undefined ? {} : { refuseRepeats: input.refuseRepeats }) });
    if (decision.action === 'refuse') {
      state = await deps.journal('tool_call_finished', { messageId: input.messageId, toolCallId, tool: toolName, input: callInput as never, error: decision.message, refused: decision.reason, ...dynamic, ...takeBefore() });
      deps.chunk({ type: 'tool-output-error', toolCallId, errorText: decision.message });
      results.push({ toolCallId, toolName, input: callInput, status: 'refused', error: decision.message });
      continue;
    }
    if (decision.action === 'ask') {
      const approvalId = randomUUID();
      state = await deps.journal('tool_approval_requested', { messageId: input.messageId, toolCallId, approvalId, tool: toolName, input: callInput as never, reason: decision.reason, ...dynamic, ...takeBefore() });
      deps.chunk({ type: 'tool-approval-request', approvalId, toolCallId });
      results.push({ toolCallId, toolName, input: callInput, status: 'waiting' });
      continue;
    }
    const ran = await runOne(deps, state, { messageId: input.messageId, toolCallId, toolName, input: callInput, idempotent: entry.safety.idempotent, dynamic: entry.dynamic, ...(decision.grant === undefined ? {} : { grant: decision.grant }), ...takeBefore() });
    state = ran.state;
    results.push(ran.result);
  }
  return { state, results };
}

/** Journals the intent, runs the tool, journals the outcome. */
export async function runOne(
  deps: ToolRunnerDeps,
  _state: SessionState,
  c: { messageId: string; toolCallId: string; toolName: string; input: unknown; idempotent: boolean; dynamic: boolean; grant?: { permission: string; seq: number }; before?: AnswerPart[] },
): Promise<{ state: SessionState; result: ToolCallResult }> {
  const entry = deps.registry.get(c.toolName);
  const { toolCallId, toolName, messageId } = c;
  // Intent before effect: durable before the tool is invoked. If this write fails, the tool never runs.
  let state = await deps.journal('tool_call_started', {
    messageId,
    toolCallId,
    tool: toolName,
    input: c.input as never,
    ...(c.before === undefined ? {} : { before: c.before }),
    ...(c.dynamic ? { dynamic: true } : {}),
    idempotent: c.idempotent,
    ...(c.grant === undefined ? {} : { grant: c.grant }),
  });
  const started = performance.now();
  let output: unknown;
  let error: string | undefined;
  try {
    if (entry?.tool.execute === undefined) throw new Error(`tool ${toolName} is not available any more`);
    // No abort signal: a tool that started runs to its end, so a shutdown does not turn its outcome unknown.
    output = jsonOf(await entry.tool.execute(c.input as never, { toolCallId, messages: [] }));
    error = mcpErrorOf(output);
  } catch (err) {
    error = messageOf(err);
  }
  const durationMs = performance.now() - started;
  state = await deps.journal('tool_call_finished', { messageId, toolCallId, ...(error === undefined ? { output: output as never } : { error }), durationMs });
  if (error === undefined) deps.chunk({ type: 'tool-output-available', toolCallId, output });
  else deps.chunk({ type: 'tool-output-error', toolCallId, errorText: error });
  return { state, result: { toolCallId, toolName, input: c.input, status: 'ran', ...(error === undefined ? { output } : { error }) } };
}
