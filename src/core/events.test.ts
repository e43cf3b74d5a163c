import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from './errors.ts';
import type { JournalRecord } from './record.ts';
import {
  CRITICAL_EVENT_TYPES,
  CURRENT_EVENT_VERSION,
  EventUpcasters,
  RECOVERABLE_EVENT_TYPES,
  eventUpcasters,
  isCriticalEventType,
  isEventType,
  isRecoverableEventType,
  parseEvent,
  parseEventData,
  unfaithfulValuePath,
  upcastJournalRecord,
} from './events.ts';
import type { EventType } from './events.ts';
import { thrown } from '../../test/helpers/assertions.ts';


interface BadCase {
  name: string;
  data: unknown;
  field: string;
}

interface TypeCase {
  type: EventType;
  valid: Record<string, unknown>;
  /** a second valid example with every optional field set */
  full: Record<string, unknown>;
  bad: BadCase[];
}

const CASES: TypeCase[] = [
  {
    type: 'user_message_sent',
    valid: { messageId: 'u1', content: 'hello' },
    full: { messageId: 'u1', content: 'hello', clientMessageId: 'c1', metadata: { source: 'web', n: 1, nested: { ok: [true, null] } } },
    bad: [
      { name: 'empty content', data: { messageId: 'u1', content: '' }, field: 'data.content' },
      { name: 'content over 100000 chars', data: { messageId: 'u1', content: 'x'.repeat(100_001) }, field: 'data.content' },
      { name: 'missing messageId', data: { content: 'hello' }, field: 'data.messageId' },
      { name: 'messageId over 200 chars', data: { messageId: 'm'.repeat(201), content: 'hello' }, field: 'data.messageId' },
      { name: 'empty clientMessageId', data: { messageId: 'u1', content: 'hi', clientMessageId: '' }, field: 'data.clientMessageId' },
      { name: 'metadata not a record', data: { messageId: 'u1', content: 'hi', metadata: [1] }, field: 'data.metadata' },
    ],
  },
  {
    type: 'command_executed',
    valid: { commandId: 'cmd1', command: '/clear' },
    full: { commandId: 'cmd1', command: '/model', args: ['gpt', 2], result: { ok: true }, error: 'none' },
    bad: [
      { name: 'empty command', data: { commandId: 'cmd1', command: '' }, field: 'data.command' },
      { name: 'command over 200 chars', data: { commandId: 'cmd1', command: 'c'.repeat(201) }, field: 'data.command' },
      { name: 'args not an array', data: { commandId: 'cmd1', command: '/x', args: 'a' }, field: 'data.args' },
      { name: 'error not a string', data: { commandId: 'cmd1', command: '/x', error: 5 }, field: 'data.error' },
    ],
  },
  {
    type: 'assistant_stream_started',
    valid: { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' },
    full: { messageId: 'a2', requestMessageId: 'u1', provider: 'mock', model: 'echo', retryOf: 'a1' },
    bad: [
      { name: 'missing requestMessageId', data: { messageId: 'a1', provider: 'mock' }, field: 'data.requestMessageId' },
      { name: 'missing provider', data: { messageId: 'a1', requestMessageId: 'u1' }, field: 'data.provider' },
      { name: 'empty retryOf', data: { messageId: 'a1', requestMessageId: 'u1', provider: 'mock', retryOf: '' }, field: 'data.retryOf' },
    ],
  },
  {
    type: 'assistant_response_completed',
    valid: { messageId: 'a1', requestMessageId: 'u1', content: '' },
    full: {
      messageId: 'a1',
      requestMessageId: 'u1',
      content: 'answer',
      stats: { chunks: 3, durationMs: 12.5, inputTokens: 10, outputTokens: 20, finishReason: 'stop' },
    },
    bad: [
      { name: 'content over 1000000 chars', data: { messageId: 'a1', requestMessageId: 'u1', content: 'x'.repeat(1_000_001) }, field: 'data.content' },
      { name: 'fractional stats.chunks', data: { messageId: 'a1', requestMessageId: 'u1', content: '', stats: { chunks: 1.5 } }, field: 'data.stats.chunks' },
      { name: 'negative stats.durationMs', data: { messageId: 'a1', requestMessageId: 'u1', content: '', stats: { durationMs: -1 } }, field: 'data.stats.durationMs' },
      { name: 'negative stats.outputTokens', data: { messageId: 'a1', requestMessageId: 'u1', content: '', stats: { outputTokens: -3 } }, field: 'data.stats.outputTokens' },
      { name: 'unknown key in stats', data: { messageId: 'a1', requestMessageId: 'u1', content: '', stats: { bogus: 1 } }, field: 'data.stats.bogus' },
    ],
  },
  {
    type: 'stream_interrupted',
    valid: { messageId: 'a1', requestMessageId: 'u1', reason: 'process restarted' },
    full: { messageId: 'a1', requestMessageId: 'u1', reason: 'provider error' },
    bad: [
      { name: 'missing reason', data: { messageId: 'a1', requestMessageId: 'u1' }, field: 'data.reason' },
      { name: 'messageId not a string', data: { messageId: 7, requestMessageId: 'u1', reason: 'r' }, field: 'data.messageId' },
    ],
  },
  {
    type: 'system_notice_added',
    valid: { noticeId: 'n1', content: 'restored from a backup' },
    full: { noticeId: 'n1', content: 'restored from a backup', metadata: { restored: true, backupId: 'b1' } },
    bad: [
      { name: 'empty content', data: { noticeId: 'n1', content: '' }, field: 'data.content' },
      { name: 'metadata not an object', data: { noticeId: 'n1', content: 'c', metadata: [1] }, field: 'data.metadata' },
    ],
  },
  {
    type: 'mcp_server_connected',
    valid: { server: 'files', config: {} },
    full: { server: 'files', config: { command: 'npx', args: ['server'], env: { A: '1' } } },
    bad: [
      { name: 'empty server', data: { server: '', config: {} }, field: 'data.server' },
      { name: 'server __proto__', data: { server: '__proto__', config: {} }, field: 'data.server' },
      { name: 'missing config', data: { server: 'files' }, field: 'data.config' },
      { name: 'config not JSON', data: { server: 'files', config: { at: new Date(0) } }, field: 'data.config.at' },
    ],
  },
  {
    type: 'mcp_tool_executed',
    valid: { executionId: 'x1', server: 'files', tool: 'read', args: { path: '/a' } },
    full: { executionId: 'x1', server: 'files', tool: 'read', args: null, result: ['line'], isError: false, durationMs: 3 },
    bad: [
      { name: 'missing args', data: { executionId: 'x1', server: 'files', tool: 'read' }, field: 'data.args' },
      { name: 'args undefined', data: { executionId: 'x1', server: 'files', tool: 'read', args: undefined }, field: 'data.args' },
      { name: 'negative durationMs', data: { executionId: 'x1', server: 'files', tool: 'read', args: 1, durationMs: -1 }, field: 'data.durationMs' },
      { name: 'isError not boolean', data: { executionId: 'x1', server: 'files', tool: 'read', args: 1, isError: 'no' }, field: 'data.isError' },
      { name: 'result NaN', data: { executionId: 'x1', server: 'files', tool: 'read', args: 1, result: Number.NaN }, field: 'data.result' },
    ],
  },
  {
    type: 'session_config_changed',
    valid: { key: 'model', newValue: 'echo' },
    full: { key: 'temperature', oldValue: 0.2, newValue: { value: 0.7 } },
    bad: [
      { name: 'missing newValue', data: { key: 'model' }, field: 'data.newValue' },
      { name: 'key over 200 chars', data: { key: 'k'.repeat(201), newValue: 1 }, field: 'data.key' },
      { name: 'key __proto__', data: { key: '__proto__', newValue: 1 }, field: 'data.key' },
      { name: 'newValue a function', data: { key: 'model', newValue: () => 1 }, field: 'data.newValue' },
    ],
  },
  {
    type: 'permission_decided',
    valid: { permission: 'fs.read', decision: 'granted' },
    full: { permission: 'fs.write', decision: 'denied', scope: 'always', reason: 'user said no' },
    bad: [
      { name: 'decision maybe', data: { permission: 'fs.read', decision: 'maybe' }, field: 'data.decision' },
      { name: 'scope forever', data: { permission: 'fs.read', decision: 'granted', scope: 'forever' }, field: 'data.scope' },
      { name: 'empty permission', data: { permission: '', decision: 'granted' }, field: 'data.permission' },
      { name: 'fractional expiresAt', data: { permission: 'tool:x', decision: 'granted', expiresAt: 1.5 }, field: 'data.expiresAt' },
      { name: 'decidedBy with a token', data: { permission: 'tool:x', decision: 'granted', decidedBy: { token: 'secret' } }, field: 'data.decidedBy.token' },
    ],
  },
  {
    type: 'forked_from',
    valid: { sourceId: 's1', atSeq: 3 },
    full: { sourceId: '__tAAAAAAAAAAAA_s1', atSeq: 0 },
    bad: [
      { name: 'negative atSeq', data: { sourceId: 's1', atSeq: -1 }, field: 'data.atSeq' },
      { name: 'missing sourceId', data: { atSeq: 1 }, field: 'data.sourceId' },
    ],
  },
  {
    type: 'fork_created',
    valid: { forkId: 'f1', atSeq: 3 },
    full: { forkId: 'f1', atSeq: 12 },
    bad: [
      { name: 'fractional atSeq', data: { forkId: 'f1', atSeq: 1.5 }, field: 'data.atSeq' },
      { name: 'empty forkId', data: { forkId: '', atSeq: 1 }, field: 'data.forkId' },
    ],
  },
  {
    type: 'tool_call_started',
    valid: { messageId: 'a1', toolCallId: 't1', tool: 'lookup', input: null },
    full: { messageId: 'a1', toolCallId: 't1', tool: 'lookup', input: { key: 'k' }, before: [{ type: 'step-start' }, { type: 'text', text: 'hm' }], dynamic: true, idempotent: true, grant: { permission: 'tool:lookup', seq: 3 } },
    bad: [
      { name: 'missing input', data: { messageId: 'a1', toolCallId: 't1', tool: 'lookup' }, field: 'data.input' },
      { name: 'input not JSON', data: { messageId: 'a1', toolCallId: 't1', tool: 'lookup', input: { d: new Date(0) } }, field: 'data.input' },
      { name: 'a tool part before', data: { messageId: 'a1', toolCallId: 't1', tool: 'lookup', input: 1, before: [{ type: 'tool' }] }, field: 'data.before.0.type' },
    ],
  },
  {
    type: 'tool_call_finished',
    valid: { messageId: 'a1', toolCallId: 't1' },
    full: { messageId: 'a1', toolCallId: 't1', output: { v: 1 }, error: 'boom', outcome: 'unknown', refused: 'denied', tool: 'x', input: { a: 1 }, before: [], dynamic: false, durationMs: 3.5 },
    bad: [
      { name: 'outcome maybe', data: { messageId: 'a1', toolCallId: 't1', outcome: 'maybe' }, field: 'data.outcome' },
      { name: 'refused why', data: { messageId: 'a1', toolCallId: 't1', refused: 'why' }, field: 'data.refused' },
    ],
  },
  {
    type: 'tool_approval_requested',
    valid: { messageId: 'a1', toolCallId: 't1', approvalId: 'ap1', tool: 'delete_item', input: {}, reason: 'needs-approval' },
    full: { messageId: 'a1', toolCallId: 't1', approvalId: 'ap1', tool: 'delete_item', input: { id: 'x' }, reason: 'repeat-of-unknown-outcome', before: [{ type: 'text', text: 'x' }], dynamic: true },
    bad: [{ name: 'unknown reason', data: { messageId: 'a1', toolCallId: 't1', approvalId: 'ap1', tool: 'd', input: {}, reason: 'because' }, field: 'data.reason' }],
  },
  {
    type: 'command_started',
    valid: { commandId: 'c1', command: 'charge' },
    full: { commandId: 'order-17', command: 'charge', args: [{ cents: 500 }, 'EUR'] },
    bad: [
      { name: 'commandId __proto__', data: { commandId: '__proto__', command: 'charge' }, field: 'data.commandId' },
      { name: 'args not an array', data: { commandId: 'c1', command: 'charge', args: { a: 1 } }, field: 'data.args' },
    ],
  },
  {
    type: 'command_finished',
    valid: { commandId: 'c1', command: 'charge', outcome: 'unknown' },
    full: { commandId: 'c1', command: 'charge', outcome: 'error', result: null, error: 'card declined', errorCode: 'ARBOR_INVALID_INPUT', durationMs: 1.5 },
    bad: [
      { name: 'outcome maybe', data: { commandId: 'c1', command: 'charge', outcome: 'maybe' }, field: 'data.outcome' },
      { name: 'missing outcome', data: { commandId: 'c1', command: 'charge' }, field: 'data.outcome' },
    ],
  },
  {
    type: 'llm_chunk_received',
    valid: { messageId: 'a1', index: 0, text: '' },
    full: { messageId: 'a1', index: 41, text: 'Hel' },
    bad: [
      { name: 'negative index', data: { messageId: 'a1', index: -1, text: 'x' }, field: 'data.index' },
      { name: 'fractional index', data: { messageId: 'a1', index: 0.5, text: 'x' }, field: 'data.index' },
      { name: 'text not a string', data: { messageId: 'a1', index: 0, text: 1 }, field: 'data.text' },
    ],
  },
  {
    type: 'typing_indicator',
    valid: { userId: 'alice', typing: true },
    full: { userId: 'alice', typing: false },
    bad: [
      { name: 'typing not boolean', data: { userId: 'alice', typing: 'yes' }, field: 'data.typing' },
      { name: 'missing userId', data: { typing: true }, field: 'data.userId' },
    ],
  },
  {
    type: 'ui_state_changed',
    valid: { component: 'sidebar', state: { open: true } },
    full: { component: 'sidebar', state: new Map([['open', true]]) },
    bad: [
      { name: 'empty component', data: { component: '', state: 1 }, field: 'data.component' },
      { name: 'missing state', data: { component: 'sidebar' }, field: 'data.state' },
    ],
  },
  {
    type: 'cache_updated',
    valid: { key: 'models', value: ['a'] },
    full: { key: 'models', value: ['a'], ttlMs: 60_000 },
    bad: [
      { name: 'negative ttlMs', data: { key: 'models', value: 1, ttlMs: -5 }, field: 'data.ttlMs' },
      { name: 'missing value', data: { key: 'models' }, field: 'data.value' },
    ],
  },
];

test('the test table covers every event type exactly once', () => {
  // given
  const all = [...CRITICAL_EVENT_TYPES, ...RECOVERABLE_EVENT_TYPES];
  // when
  const covered = CASES.map((c) => c.type);
  // then
  assert.deepEqual([...covered].sort(), [...all].sort());
  assert.equal(new Set(covered).size, 21);
});

for (const c of CASES) {
  for (const [label, example] of [['minimal', c.valid], ['full', c.full]] as const) {
    test(`${c.type} accepts a valid ${label} example and returns an equal fresh object`, () => {
      // given
      const data = example;
      // when
      const parsed = parseEventData(c.type, data, { sessionId: 's1' });
      // then
      assert.deepEqual(parsed, data);
      assert.notEqual(parsed, data);
    });
  }

  for (const bad of c.bad) {
    test(`${c.type} refuses ${bad.name} naming ${bad.field}`, () => {
      // given
      const data = bad.data;
      // when
      const err = thrown(() => parseEventData(c.type, data, { sessionId: 's1' }));
      // then
      assert.equal(err.code, ErrorCodes.INVALID_INPUT);
      assert.equal(err.details.field, bad.field);
      assert.equal(err.details.eventType, c.type);
      assert.equal(err.details.sessionId, 's1');
      assert.ok(Array.isArray(err.details.issues) && err.details.issues.length >= 1);
    });
  }

  test(`${c.type} refuses an unknown key naming it`, () => {
    // given
    const data = { ...c.valid, bogus: 1 };
    // when
    const err = thrown(() => parseEventData(c.type, data));
    // then
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.equal(err.details.field, 'data.bogus');
  });

  for (const whole of [null, 'text', [c.valid], undefined]) {
    test(`${c.type} refuses data ${JSON.stringify(whole) ?? 'undefined'} naming data`, () => {
      // when
      const err = thrown(() => parseEventData(c.type, whole));
      // then
      assert.equal(err.code, ErrorCodes.INVALID_INPUT);
      assert.equal(err.details.field, 'data');
    });
  }
}

test('parseEventData names the first failing field when several fail', () => {
  // given: messageId and content both wrong; messageId comes first in the schema
  const data = { messageId: '', content: '' };
  // when
  const err = thrown(() => parseEventData('user_message_sent', data, { sessionId: 's9' }));
  // then
  assert.equal(err.details.field, 'data.messageId');
  assert.deepEqual(
    (err.details.issues as { field: string }[]).map((i) => i.field),
    ['data.messageId', 'data.content'],
  );
});

test('parseEventData without a context reports sessionId undefined', () => {
  // when
  const err = thrown(() => parseEventData('typing_indicator', { userId: 'a' }));
  // then
  assert.equal(err.details.field, 'data.typing');
  assert.equal(err.details.sessionId, undefined);
});

for (const type of ['no_such_event', '', '__proto__', 'toString']) {
  test(`parseEventData refuses unknown type ${JSON.stringify(type)} naming type`, () => {
    // when
    const err = thrown(() => parseEventData(type as EventType, {}, { sessionId: 's1' }));
    // then
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.equal(err.details.field, 'type');
    assert.equal(err.details.sessionId, 's1');
  });
}

test('critical events refuse a nested undefined (JSON would drop it), recoverable ones keep any value', () => {
  // given
  const critical = { key: 'model', newValue: { a: undefined } };
  const recoverable = { component: 'c', state: { a: undefined } };
  // when
  const err = thrown(() => parseEventData('session_config_changed', critical));
  const parsed = parseEventData('ui_state_changed', recoverable);
  // then
  assert.equal(err.details.field, 'data.newValue');
  assert.deepEqual(parsed, recoverable);
});

test('parseEvent returns the typed event for a run-time type and refuses an unknown one', () => {
  // when
  const event = parseEvent('typing_indicator', { userId: 'a', typing: true });
  const err = thrown(() => parseEvent('nope', {}));
  // then
  assert.deepEqual(event, { type: 'typing_indicator', data: { userId: 'a', typing: true } });
  assert.equal(err.details.field, 'type');
});

test('critical and recoverable type lists are disjoint, frozen and classified by the guards', () => {
  // then
  // the seed's nine, system_notice_added (a visible notice from the runtime, e.g. after a restore), the fork links, the tool and the command intent logs
  assert.equal(CRITICAL_EVENT_TYPES.length, 17);
  assert.equal(RECOVERABLE_EVENT_TYPES.length, 4);
  assert.ok(Object.isFrozen(CRITICAL_EVENT_TYPES) && Object.isFrozen(RECOVERABLE_EVENT_TYPES));
  for (const t of CRITICAL_EVENT_TYPES) {
    assert.ok(isCriticalEventType(t), t);
    assert.ok(!isRecoverableEventType(t), t);
    assert.ok(isEventType(t), t);
  }
  for (const t of RECOVERABLE_EVENT_TYPES) {
    assert.ok(!isCriticalEventType(t), t);
    assert.ok(isRecoverableEventType(t), t);
  }
  for (const t of ['hasOwnProperty', 'constructor', 'nope']) assert.ok(!isEventType(t), t);
});

test('every event type has a current version, all 1 now', () => {
  // then
  for (const t of [...CRITICAL_EVENT_TYPES, ...RECOVERABLE_EVENT_TYPES]) assert.equal(CURRENT_EVENT_VERSION[t], 1, t);
  assert.equal(Object.keys(CURRENT_EVENT_VERSION).length, 21);
});

// ---------------------------------------------------------------------------
// Upcasters
// ---------------------------------------------------------------------------

function record(type: string, v: number, data: unknown): JournalRecord {
  return { lsn: 10, sid: 's1', seq: 4, ts: 1000, type, v, data };
}

/** widget v1 {name} → v2 {title} → v3 {title, size}. */
function widgetRegistry(): EventUpcasters {
  return new EventUpcasters({ currentVersions: { widget: 3, gadget: 1 } })
    .register('widget', 1, (d) => ({ title: (d as { name: string }).name }))
    .register('widget', 2, (d) => ({ ...(d as object), size: 0 }));
}

test('upcast applies the chain v1 → v2 → v3', () => {
  // given
  const r = record('widget', 1, { name: 'w' });
  // when
  const out = widgetRegistry().upcast(r);
  // then
  assert.deepEqual(out, { ...r, v: 3, data: { title: 'w', size: 0 } });
  assert.deepEqual(r, record('widget', 1, { name: 'w' }), 'input record is unchanged');
});

test('upcast applies only the remaining steps from v2', () => {
  // when
  const out = widgetRegistry().upcast(record('widget', 2, { title: 't' }));
  // then
  assert.equal(out.v, 3);
  assert.deepEqual(out.data, { title: 't', size: 0 });
});

test('upcast returns the same object when the record is current', () => {
  // given
  const r = record('widget', 3, { title: 't', size: 1 });
  // when
  const out = widgetRegistry().upcast(r);
  // then
  assert.equal(out, r);
});

test('upcast with a missing step throws INVALID_INPUT naming the version', () => {
  // given: only 1 → 2 registered
  const registry = new EventUpcasters({ currentVersions: { widget: 3 } }).register('widget', 1, (d) => d);
  // when
  const err = thrown(() => registry.upcast(record('widget', 1, {})));
  // then
  assert.equal(err.code, ErrorCodes.INVALID_INPUT);
  assert.equal(err.details.field, 'v');
  assert.equal(err.details.eventType, 'widget');
  assert.equal(err.details.missingFrom, 2);
  assert.equal(err.details.sessionId, 's1');
  assert.equal(err.details.seq, 4);
});

for (const v of [4, 99]) {
  test(`upcast of a future version ${v} throws INVALID_INPUT naming type and version`, () => {
    // when
    const err = thrown(() => widgetRegistry().upcast(record('widget', v, {})));
    // then
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.equal(err.details.field, 'v');
    assert.equal(err.details.eventType, 'widget');
    assert.equal(err.details.version, v);
  });
}

for (const v of [0, -1, 1.5]) {
  test(`upcast of an impossible version ${v} throws INVALID_INPUT`, () => {
    // when
    const err = thrown(() => widgetRegistry().upcast(record('widget', v, {})));
    // then
    assert.equal(err.details.field, 'v');
  });
}

test('upcast of an unknown type throws INVALID_INPUT naming type', () => {
  // when
  const err = thrown(() => widgetRegistry().upcast(record('sprocket', 1, {})));
  // then
  assert.equal(err.code, ErrorCodes.INVALID_INPUT);
  assert.equal(err.details.field, 'type');
  assert.equal(err.details.eventType, 'sprocket');
});

test('an upcaster that throws is wrapped with its cause', () => {
  // given
  const boom = new Error('boom');
  const registry = new EventUpcasters({ currentVersions: { widget: 2 } }).register('widget', 1, () => {
    throw boom;
  });
  // when
  const err = thrown(() => registry.upcast(record('widget', 1, {})));
  // then
  assert.equal(err.code, ErrorCodes.INVALID_INPUT);
  assert.equal(err.details.failedFrom, 1);
  assert.equal(err.cause, boom);
});

test('the validate hook checks and replaces the upcast data', () => {
  // given
  const seen: unknown[] = [];
  const registry = new EventUpcasters({
    currentVersions: { widget: 2 },
    validate: (type, data) => {
      seen.push([type, data]);
      return { checked: true };
    },
  }).register('widget', 1, () => ({ title: 't' }));
  // when
  const out = registry.upcast(record('widget', 1, {}));
  const current = registry.upcast(record('widget', 2, { x: 1 }));
  // then
  assert.deepEqual(out.data, { checked: true });
  assert.deepEqual(seen, [['widget', { title: 't' }]], 'not called for a current record');
  assert.deepEqual(current.data, { x: 1 });
});

test('register refuses programmer errors with TypeError or RangeError', () => {
  // given
  const registry = new EventUpcasters({ currentVersions: { widget: 3 } }).register('widget', 1, (d) => d);
  // then
  assert.throws(() => registry.register('sprocket', 1, (d) => d), TypeError);
  assert.throws(() => registry.register('widget', 1, (d) => d), TypeError, 'duplicate step');
  assert.throws(() => registry.register('widget', 3, (d) => d), RangeError, 'from the current version');
  assert.throws(() => registry.register('widget', 0, (d) => d), RangeError);
  assert.throws(() => registry.register('widget', 1.5, (d) => d), RangeError);
});

test('the default registry passes every current record through unchanged', () => {
  // given
  const r = record('user_message_sent', 1, { messageId: 'u1', content: 'hi' });
  // when
  const out = upcastJournalRecord(r);
  // then
  assert.equal(out, r);
  assert.equal(eventUpcasters.upcast(r), r);
});

test('the default registry refuses a version newer than the code', () => {
  // when
  const err = thrown(() => upcastJournalRecord(record('user_message_sent', 2, { messageId: 'u1', content: 'hi' })));
  // then
  assert.equal(err.code, ErrorCodes.INVALID_INPUT);
  assert.equal(err.details.field, 'v');
  assert.equal(err.details.eventType, 'user_message_sent');
});

test('parseEventData refuses exactly the data JSON would change (-0, lone surrogates in strings and keys), naming the first such field', () => {
  // JSON-like values with -0 and lone surrogates mixed in, anywhere (values and keys).
  const odd = fc.constantFrom(-0, '\ud800', 'a\udfffb', 0, 'ok');
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, odd, fc.jsonValue({ maxDepth: 1 }), fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(fc.oneof(fc.string(), fc.constantFrom('\ud800', 'k\udc00')), tie('v'), { maxKeys: 3 })),
  })).v;
  fc.assert(
    fc.property(value, (newValue) => {
      const data = { key: 'k', newValue };
      const expected = unfaithfulValuePath(data);
      let err: unknown;
      try {
        parseEventData('session_config_changed', data, { sessionId: 's1' });
      } catch (e) {
        err = e;
      }
      if (expected === undefined) assert.equal(err, undefined);
      else {
        assert.equal((err as { code?: string }).code, ErrorCodes.INVALID_INPUT);
        assert.equal((err as { details: { field: string } }).details.field, expected);
      }
    }),
    { numRuns: 1000 },
  );
});
