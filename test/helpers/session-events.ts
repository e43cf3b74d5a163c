import fc from 'fast-check';
import { unfaithfulValuePath } from '../../src/core/events.ts';
import type { CriticalEventType, EventData } from '../../src/core/events.ts';
import type { JournalRecord } from '../../src/core/record.ts';

/**
 * fast-check generators of Arbor's journaled (critical) events: every type,
 * with valid data (each passes parseEventData), drawn from small pools of ids
 * so that the events meet each other — a tool call finishes one that started,
 * an approval answers a request, an interruption ends the stream in flight,
 * a command finishes one that started — and also miss each other.
 */

/** One generated event: its type and data. */
export type GeneratedEvent = { [T in CriticalEventType]: { type: T; data: EventData<T> } }[CriticalEventType];

const messageId = fc.constantFrom('m1', 'm2', 'm3', 'm4');
const toolCallId = fc.constantFrom('t1', 't2', 't3');
const approvalId = fc.constantFrom('a1', 'a2');
const commandId = fc.constantFrom('c1', 'c2');
const permission = fc.constantFrom('fs.read', 'net');
const text = fc.string({ minLength: 1, maxLength: 12 });
const toolName = fc.constantFrom('search', 'read');
// Through a JSON round trip: fc.jsonValue() makes -0 (and keys may hold lone surrogates), which the
// schemas refuse because the journal and snapshots could not give them back.
const json = fc
  .jsonValue({ maxDepth: 2 })
  .map((v) => JSON.parse(JSON.stringify(v)) as unknown)
  .filter((v) => unfaithfulValuePath(v) === undefined);
const jsonRecord = fc.dictionary(fc.constantFrom('a', 'b', 'cmd'), json, { noNullPrototype: true, maxKeys: 2 });
const answerPart = fc.oneof(
  fc.record({ type: fc.constant('text' as const), text: fc.string({ maxLength: 8 }) }),
  fc.record({ type: fc.constant('reasoning' as const), text: fc.string({ maxLength: 8 }) }),
  fc.record({ type: fc.constant('step-start' as const) }),
);
const answerParts = fc.array(answerPart, { maxLength: 3 });

/** `keys` of `shape` required, the others optional. */
function rec<T extends Record<string, fc.Arbitrary<unknown>>>(shape: T, required: (keyof T)[] = Object.keys(shape)): fc.Arbitrary<{ [K in keyof T]: T[K] extends fc.Arbitrary<infer U> ? U : never }> {
  return fc.record(shape, { noNullPrototype: true, requiredKeys: required as never[] }) as never;
}

const ev = <T extends CriticalEventType>(type: T, data: fc.Arbitrary<unknown>, weight = 1) => ({ weight, arbitrary: data.map((d) => ({ type, data: d }) as GeneratedEvent) });

/** Any critical event, with valid data; turns (messages, streams, tool calls) come more often than the rest. */
export const sessionEventArb: fc.Arbitrary<GeneratedEvent> = fc.oneof(
  ev(
    'user_message_sent',
    fc
      .tuple(rec({ messageId, content: text, clientMessageId: messageId, metadata: jsonRecord }, ['messageId', 'content']), fc.boolean())
      .map(([d, withParts]) => (withParts ? { ...d, parts: [{ type: 'text', text: d.content }] } : d)),
    3,
  ),
  ev('assistant_stream_started', rec({ messageId, requestMessageId: messageId, provider: fc.constantFrom('mock', 'openai'), model: text, retryOf: messageId }, ['messageId', 'requestMessageId', 'provider']), 3),
  ev(
    'assistant_response_completed',
    rec(
      {
        messageId,
        requestMessageId: messageId,
        content: fc.string({ maxLength: 12 }),
        stats: rec({ chunks: fc.nat(), durationMs: fc.nat(), inputTokens: fc.nat(), outputTokens: fc.nat(), finishReason: text }, []),
        parts: answerParts,
        stopped: fc.constant(true as const),
      },
      ['messageId', 'requestMessageId', 'content'],
    ),
    3,
  ),
  ev('stream_interrupted', rec({ messageId, requestMessageId: messageId, reason: text }), 2),
  ev('session_config_changed', rec({ key: fc.constantFrom('model', 'temperature'), oldValue: json, newValue: json }, ['key', 'newValue'])),
  ev(
    'permission_decided',
    rec(
      {
        permission,
        decision: fc.constantFrom('granted' as const, 'denied' as const),
        scope: fc.constantFrom('once' as const, 'session' as const, 'always' as const),
        reason: text,
        toolCallId,
        approvalId,
        decidedBy: rec({ tenant: text, tokenId: text }, []),
        expiresAt: fc.integer({ min: 1, max: 2_000_000_000_000 }),
      },
      ['permission', 'decision'],
    ),
    2,
  ),
  ev('mcp_server_connected', rec({ server: fc.constantFrom('files', 'web'), config: jsonRecord })),
  ev('mcp_tool_executed', rec({ executionId: messageId, server: text, tool: toolName, args: json, result: json, isError: fc.boolean(), durationMs: fc.nat() }, ['executionId', 'server', 'tool', 'args'])),
  ev('system_notice_added', rec({ noticeId: messageId, content: text, metadata: jsonRecord }, ['noticeId', 'content'])),
  ev('command_executed', rec({ commandId, command: text, args: fc.array(json, { maxLength: 3 }), result: json, error: text }, ['commandId', 'command'])),
  ev('command_started', rec({ commandId, command: text, args: fc.array(json, { maxLength: 3 }) }, ['commandId', 'command'])),
  ev(
    'command_finished',
    rec({ commandId, command: text, outcome: fc.constantFrom('ok' as const, 'error' as const, 'unknown' as const), result: json, error: text, errorCode: text, durationMs: fc.nat() }, ['commandId', 'command', 'outcome']),
  ),
  ev(
    'tool_call_started',
    rec(
      { messageId, toolCallId, tool: toolName, input: json, before: answerParts, dynamic: fc.boolean(), idempotent: fc.boolean(), grant: rec({ permission, seq: fc.integer({ min: 1, max: 40 }) }) },
      ['messageId', 'toolCallId', 'tool', 'input'],
    ),
    3,
  ),
  ev(
    'tool_call_finished',
    rec(
      {
        messageId,
        toolCallId,
        output: json,
        error: text,
        outcome: fc.constant('unknown' as const),
        refused: fc.constantFrom('denied' as const, 'repeat-refused' as const),
        tool: toolName,
        input: json,
        before: answerParts,
        dynamic: fc.boolean(),
        durationMs: fc.nat(),
      },
      ['messageId', 'toolCallId'],
    ),
    3,
  ),
  ev(
    'tool_approval_requested',
    rec(
      {
        messageId,
        toolCallId,
        approvalId,
        tool: toolName,
        input: json,
        reason: fc.constantFrom('needs-approval' as const, 'repeat-of-unknown-outcome' as const, 'repeat-in-retried-turn' as const),
        before: answerParts,
        dynamic: fc.boolean(),
      },
      ['messageId', 'toolCallId', 'approvalId', 'tool', 'input', 'reason'],
    ),
    2,
  ),
  ev('forked_from', rec({ sourceId: fc.constantFrom('src1', 'src2'), atSeq: fc.nat({ max: 50 }) })),
  ev('fork_created', rec({ forkId: fc.constantFrom('f1', 'f2'), atSeq: fc.nat({ max: 50 }) })),
);

type Step = { kind: 'run' | 'run-late' | 'ask' | 'refused'; call: string; approval: string; tool: string; input: unknown; output: unknown; error: string | undefined; before: { type: string; text?: string }[]; granted: boolean; unknown: boolean };

const stepArb: fc.Arbitrary<Step> = fc.record({
  kind: fc.constantFrom('run' as const, 'run-late' as const, 'ask' as const, 'refused' as const),
  call: toolCallId,
  approval: approvalId,
  tool: toolName,
  input: json,
  output: json,
  error: fc.option(text, { nil: undefined }),
  before: answerParts,
  granted: fc.boolean(),
  unknown: fc.boolean(),
});

/**
 * A whole turn, as the runtime journals one: the request, the answer's
 * stream, its tool steps (a call run in the turn, one finished after it, one
 * waiting for an approval decided after it, one refused), then its end
 * (completed, interrupted, or none: still in flight), then what came after.
 */
export const turnArb: fc.Arbitrary<GeneratedEvent[]> = fc
  .record({ request: messageId, answer: messageId, steps: fc.array(stepArb, { maxLength: 3 }), end: fc.constantFrom('completed', 'interrupted', 'none'), content: fc.string({ maxLength: 10 }), parts: fc.option(answerParts, { nil: undefined }) })
  .map(({ request, answer, steps, end, content, parts }) => {
    const e = (type: CriticalEventType, data: Record<string, unknown>): GeneratedEvent => ({ type, data: Object.fromEntries(Object.entries(data).filter(([, v]) => v !== undefined)) }) as GeneratedEvent;
    const during: GeneratedEvent[] = [e('user_message_sent', { messageId: request, content: `ask ${request}` }), e('assistant_stream_started', { messageId: answer, requestMessageId: request, provider: 'mock' })];
    const after: GeneratedEvent[] = [];
    for (const st of steps) {
      const before = st.before.length === 0 ? undefined : st.before;
      const finish = e('tool_call_finished', st.unknown ? { messageId: answer, toolCallId: st.call, outcome: 'unknown' } : { messageId: answer, toolCallId: st.call, output: st.error === undefined ? st.output : undefined, error: st.error });
      if (st.kind === 'refused') during.push(e('tool_call_finished', { messageId: answer, toolCallId: st.call, tool: st.tool, input: st.input, before, error: 'refused', refused: 'repeat-refused' }));
      else if (st.kind === 'ask') {
        during.push(e('tool_approval_requested', { messageId: answer, toolCallId: st.call, approvalId: st.approval, tool: st.tool, input: st.input, reason: 'needs-approval', before }));
        after.push(e('permission_decided', { permission: 'fs.read', decision: st.granted ? 'granted' : 'denied', scope: 'once', approvalId: st.approval, toolCallId: st.call }));
        if (st.granted) after.push(e('tool_call_started', { messageId: answer, toolCallId: st.call, tool: st.tool, input: st.input }), finish);
      } else {
        during.push(e('tool_call_started', { messageId: answer, toolCallId: st.call, tool: st.tool, input: st.input, before }));
        (st.kind === 'run' ? during : after).push(finish);
      }
    }
    if (end === 'completed') during.push(e('assistant_response_completed', { messageId: answer, requestMessageId: request, content, parts }));
    if (end === 'interrupted') during.push(e('stream_interrupted', { messageId: answer, requestMessageId: request, reason: 'crash' }));
    return [...during, ...after];
  });

/** The records of session `sid` for `events`: seq 1, 2, … (no gap), ts never decreasing, LSN = seq. */
export function recordsOf(sid: string, events: readonly GeneratedEvent[], tsSteps: readonly number[] = []): JournalRecord[] {
  let ts = 1_700_000_000_000;
  return events.map((e, i): JournalRecord => {
    ts += tsSteps[i] ?? 1;
    return { lsn: i + 1, sid, seq: i + 1, ts, type: e.type, v: 1, data: e.data };
  });
}

/** A session's history: up to `maxLength` events as records of `sid`, whole turns ({@link turnArb}) mixed with single events of any type. */
export function sessionHistoryArb(sid: string, maxLength = 60): fc.Arbitrary<JournalRecord[]> {
  const chunk = fc.oneof(
    sessionEventArb.map((e) => [e]),
    turnArb,
  );
  return fc.tuple(fc.array(chunk, { maxLength: Math.ceil(maxLength / 3) }), fc.array(fc.nat({ max: 3 }), { minLength: maxLength, maxLength })).map(([chunks, steps]) =>
    recordsOf(sid, chunks.flat().slice(0, maxLength), steps),
  );
}

/**
 * How a record can be refused by Arbor's reducer (or the event upcaster before
 * it): a field of the wrong type or missing, a recoverable or unknown type, a
 * version newer than the code, another session's id. Make the record with
 * {@link refusedRecord}.
 */
export const refusalArb: fc.Arbitrary<Partial<JournalRecord>> = fc.constantFrom<Partial<JournalRecord>>(
  { type: 'user_message_sent', data: { messageId: 'm9', content: 42 } },
  { type: 'tool_call_started', data: { messageId: 'm1', toolCallId: 't1', tool: 'read' } },
  { type: 'command_finished', data: { commandId: 'c1', command: 'x', outcome: 'maybe' } },
  { type: 'typing_indicator', data: { userId: 'u', typing: true } },
  { type: 'no_such_event', data: {} },
  { type: 'user_message_sent', v: 99, data: { messageId: 'm9', content: 'hi' } },
  { type: 'user_message_sent', sid: 'another-session', data: { messageId: 'm9', content: 'hi' } },
);

/** The record of `sid` at `seq` refused as `refusal` says. */
export function refusedRecord(sid: string, seq: number, refusal: Partial<JournalRecord>): JournalRecord {
  return { lsn: seq, sid, seq, ts: 1_800_000_000_000, v: 1, type: 'user_message_sent', data: {}, ...refusal };
}

/** Freezes `value` and everything reachable from it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** The path of the first object or array reachable from `value` that is not frozen, or undefined when all are. */
export function unfrozenPath(value: unknown, path = 'state', seen = new Set<unknown>()): string | undefined {
  if (typeof value !== 'object' || value === null || seen.has(value)) return undefined;
  seen.add(value);
  if (!Object.isFrozen(value)) return path;
  for (const [k, v] of Object.entries(value)) {
    const found = unfrozenPath(v, `${path}.${k}`, seen);
    if (found !== undefined) return found;
  }
  return undefined;
}
