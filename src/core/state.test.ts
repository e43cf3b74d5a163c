import { test } from 'node:test';
import v8 from 'node:v8';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCodes } from './errors.ts';
import type { JournalRecord } from './record.ts';
import { RecoveryBuilder } from '../backend/replay.ts';
import { decodeSnapshot, encodeSnapshot } from '../backend/snapshot-codec.ts';
import type { Reducer } from '../backend/replay.ts';
import { parseEventData, unfaithfulValuePath, upcastJournalRecord } from './events.ts';
import type { CriticalEventType, EventData } from './events.ts';
import {
  INTERRUPTED_NOTICE_CONTENT,
  findMessage,
  historyStamp,
  initialSessionState,
  interruptedNoticeId,
  interruptedNoticeMetadata,
  interruptionEventData,
  pendingInterruption,
  reduceSession,
  reduceSessionValidated,
  SESSION_STATE_VERSION,
  appendStreamParts,
  updateToolPart,
  upcastSessionState,
} from './state.ts';
import type { ToolPart } from './state.ts';
import { toUIMessage } from './ui-message.ts';
import type { SessionState } from './state.ts';
import { thrown } from '../../test/helpers/assertions.ts';

// Compile-time: the reducer fits the recovery hook.
const asHook: Reducer<SessionState> = reduceSession;
void asHook;

const SID = 's1';

/** Builds records for SID with seq 1, 2, … and ts 1000, 1001, … */
class Log {
  #seq = 0;
  readonly records: JournalRecord[] = [];

  add<T extends CriticalEventType>(type: T, data: EventData<T>): JournalRecord {
    this.#seq += 1;
    const r: JournalRecord = { lsn: this.#seq, sid: SID, seq: this.#seq, ts: 1000 + this.#seq, type, v: 1, data };
    this.records.push(r);
    return r;
  }
}

function reduceAll(records: readonly JournalRecord[], state: SessionState = initialSessionState(SID)): SessionState {
  return records.reduce(reduceSession, state);
}


function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Asserts every object and array reachable from `value` is frozen, except
 * under paths the reducer shares with the record (matching `shared`).
 */
function assertFrozenTree(value: unknown, shared: RegExp, path = 'state'): void {
  if (typeof value !== 'object' || value === null) return;
  if (shared.test(path)) return;
  assert.ok(Object.isFrozen(value), `${path} is not frozen`);
  for (const [k, v] of Object.entries(value)) assertFrozenTree(v, shared, `${path}.${k}`);
}

/** Values typed `unknown` that come from event data as they are. */
const SHARED_PATHS = /^state\.(config\.[^.]+|toolExecutions\.\d+\.(args|result)|commands\.\d+\.(args\.\d+|result)|mcpServers\.[^.]+\.config\.[^.]+|messages\.\d+\.metadata\.(?!stats$|originalRequest$)[^.]+)/;

// ---------------------------------------------------------------------------
// Each event's effect
// ---------------------------------------------------------------------------

test('initialSessionState is empty, idle, at seq 0 and frozen', () => {
  // when
  const s = initialSessionState('abc');
  // then
  assert.deepEqual(s, {
    id: 'abc',
    seq: 0,
    messages: [],
    config: {},
    permissions: {},
    mcpServers: {},
    toolExecutions: [],
    commands: [],
    stream: { status: 'idle' },
    createdAt: 0,
    updatedAt: 0,
  });
  assertFrozenTree(s, SHARED_PATHS);
  assert.equal(pendingInterruption(s), undefined);
});

test('user_message_sent appends a user message with seq and ts', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hello' });
  log.add('user_message_sent', { messageId: 'u2', content: 'again', clientMessageId: 'c2', metadata: { lang: 'en' } });
  // when
  const s = reduceAll(log.records);
  // then
  assert.equal(s.seq, 2);
  assert.deepEqual(s.messages, [
    { id: 'u1', role: 'user', content: 'hello', parts: [{ type: 'text', text: 'hello' }], seq: 1, ts: 1001 },
    { id: 'u2', role: 'user', content: 'again', parts: [{ type: 'text', text: 'again' }], seq: 2, ts: 1002, metadata: { lang: 'en', clientMessageId: 'c2' } },
  ]);
});

test('assistant_stream_started puts the stream in flight', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi' });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock', model: 'echo' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.stream, { status: 'streaming', messageId: 'a1', requestMessageId: 'u1', provider: 'mock', model: 'echo', startedSeq: 2, parts: [] });
  assert.equal(pendingInterruption(s), s.stream);
  assert.deepEqual(interruptionEventData(s, 'restart'), { messageId: 'a1', requestMessageId: 'u1', reason: 'restart' });
  assert.equal(s.messages.length, 1, 'no message until the answer completes');
});

test('assistant_response_completed appends the answer with stats and request, and goes idle', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi' });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock', model: 'echo' });
  log.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: 'hello!', stats: { chunks: 2, outputTokens: 3 } });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.messages[1], {
    id: 'a1',
    role: 'assistant',
    content: 'hello!',
    parts: [{ type: 'text', text: 'hello!' }],
    seq: 3,
    ts: 1003,
    metadata: { requestMessageId: 'u1', stats: { chunks: 2, outputTokens: 3 }, provider: 'mock', model: 'echo', usage: { outputTokens: 3 } },
  });
  assert.deepEqual(s.stream, { status: 'idle' });
  assert.equal(pendingInterruption(s), undefined);
  assert.equal(interruptionEventData(s, 'restart'), undefined);
});

test('assistant_response_completed without a start still appends the answer', () => {
  // given
  const log = new Log();
  log.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: '' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.messages, [{ id: 'a1', role: 'assistant', content: '', parts: [], seq: 1, ts: 1001, metadata: { requestMessageId: 'u1' } }]);
  assert.deepEqual(s.stream, { status: 'idle' });
});

test('an end for another message leaves the stream in flight', () => {
  // given
  const log = new Log();
  log.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u2', provider: 'mock' });
  log.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: 'late' });
  log.add('stream_interrupted', { messageId: 'a0', requestMessageId: 'u0', reason: 'old' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.equal(pendingInterruption(s)?.messageId, 'a2');
  assert.equal(s.messages.length, 2);
});

test('a second start replaces the stream in flight', () => {
  // given
  const log = new Log();
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  log.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u1', provider: 'other' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(pendingInterruption(s), { status: 'streaming', messageId: 'a2', requestMessageId: 'u1', provider: 'other', startedSeq: 2, parts: [] });
});

test('session_config_changed sets config[key] to newValue', () => {
  // given
  const log = new Log();
  log.add('session_config_changed', { key: 'model', newValue: 'a' });
  log.add('session_config_changed', { key: 'temperature', newValue: 0.5 });
  log.add('session_config_changed', { key: 'model', oldValue: 'a', newValue: { name: 'b' } });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.config, { model: { name: 'b' }, temperature: 0.5 });
});

test('permission_decided records the latest decision per permission', () => {
  // given
  const log = new Log();
  log.add('permission_decided', { permission: 'fs.read', decision: 'granted', scope: 'session' });
  log.add('permission_decided', { permission: 'fs.write', decision: 'granted' });
  log.add('permission_decided', { permission: 'fs.read', decision: 'denied', reason: 'no' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.permissions, {
    'fs.read': { decision: 'denied', seq: 3 },
    'fs.write': { decision: 'granted', seq: 2 },
  });
});

test('mcp_server_connected records the server config and seq', () => {
  // given
  const log = new Log();
  log.add('mcp_server_connected', { server: 'files', config: { command: 'npx' } });
  log.add('mcp_server_connected', { server: 'web', config: {} });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.mcpServers, { files: { config: { command: 'npx' }, connectedSeq: 1 }, web: { config: {}, connectedSeq: 2 } });
});

test('mcp_tool_executed appends an execution', () => {
  // given
  const log = new Log();
  log.add('mcp_tool_executed', { executionId: 'x1', server: 'files', tool: 'read', args: { path: '/a' }, result: 'text', durationMs: 4 });
  log.add('mcp_tool_executed', { executionId: 'x2', server: 'files', tool: 'rm', args: null, isError: true });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.toolExecutions, [
    { executionId: 'x1', server: 'files', tool: 'read', args: { path: '/a' }, result: 'text', durationMs: 4, seq: 1, ts: 1001 },
    { executionId: 'x2', server: 'files', tool: 'rm', args: null, isError: true, seq: 2, ts: 1002 },
  ]);
});

test('command_executed appends a command', () => {
  // given
  const log = new Log();
  log.add('command_executed', { commandId: 'c1', command: '/model', args: ['b'], result: 'ok' });
  log.add('command_executed', { commandId: 'c2', command: '/bad', error: 'unknown command' });
  // when
  const s = reduceAll(log.records);
  // then
  assert.deepEqual(s.commands, [
    { commandId: 'c1', command: '/model', args: ['b'], result: 'ok', seq: 1, ts: 1001 },
    { commandId: 'c2', command: '/bad', error: 'unknown command', seq: 2, ts: 1002 },
  ]);
});

// ---------------------------------------------------------------------------
// Interrupted stream and retry
// ---------------------------------------------------------------------------

test('interrupted flow: started → interrupted leaves a notice with the original request, then a retry completes', () => {
  // given: a stream in flight when the process died
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'explain recursion' });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  const beforeCrash = reduceAll(log.records);
  const data = interruptionEventData(beforeCrash, 'process restarted');
  assert.ok(data !== undefined);

  // when: recovery journals the interruption
  log.add('stream_interrupted', data);
  const interrupted = reduceAll(log.records);

  // then
  assert.equal(pendingInterruption(interrupted), undefined);
  const notice = interrupted.messages[1];
  assert.deepEqual(notice, {
    id: interruptedNoticeId('a1'),
    role: 'system',
    content: INTERRUPTED_NOTICE_CONTENT,
    parts: [{ type: 'text', text: INTERRUPTED_NOTICE_CONTENT }],
    seq: 3,
    ts: 1003,
    metadata: {
      interrupted: true,
      retryEnabled: true,
      interruptedMessageId: 'a1',
      reason: 'process restarted',
      originalRequest: { messageId: 'u1', content: 'explain recursion' },
    },
  });
  assert.equal(notice.id, 'a1:interrupted');
  assert.equal(interruptedNoticeMetadata(notice)?.originalRequest.content, 'explain recursion');

  // when: the user retries
  log.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u1', provider: 'mock', retryOf: 'a1' });
  const retrying = reduceAll(log.records);
  log.add('assistant_response_completed', { messageId: 'a2', requestMessageId: 'u1', content: 'a function that calls itself' });
  const done = reduceAll(log.records);

  // then
  assert.equal(pendingInterruption(retrying)?.retryOf, 'a1');
  assert.equal(pendingInterruption(done), undefined);
  assert.deepEqual(
    done.messages.map((m) => [m.id, m.role]),
    [['u1', 'user'], ['a1:interrupted', 'system'], ['a2', 'assistant']],
  );
  assert.deepEqual(done.messages[2]?.metadata, { requestMessageId: 'u1', provider: 'mock', retryOf: 'a1' });
});

test('an interruption whose request is not in the state has a notice without content', () => {
  // given
  const log = new Log();
  log.add('stream_interrupted', { messageId: 'a1', requestMessageId: 'gone', reason: 'r' });
  // when
  const s = reduceAll(log.records);
  // then
  const notice = s.messages[0];
  assert.ok(notice !== undefined);
  assert.deepEqual(interruptedNoticeMetadata(notice)?.originalRequest, { messageId: 'gone' });
});

test('interruptedNoticeMetadata is undefined for ordinary messages', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi', metadata: { interrupted: true } });
  // when
  const s = reduceAll(log.records);
  // then
  const m = findMessage(s, 'u1');
  assert.ok(m !== undefined);
  assert.equal(interruptedNoticeMetadata(m), undefined);
  assert.equal(findMessage(s, 'nope'), undefined);
});

// ---------------------------------------------------------------------------
// Purity and immutability
// ---------------------------------------------------------------------------

function everyKindLog(): Log {
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi', clientMessageId: 'c1', metadata: { tags: ['x'] } });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  log.add('stream_interrupted', { messageId: 'a1', requestMessageId: 'u1', reason: 'crash' });
  log.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u1', provider: 'mock', retryOf: 'a1' });
  log.add('assistant_response_completed', { messageId: 'a2', requestMessageId: 'u1', content: 'ok', stats: { chunks: 1 } });
  log.add('session_config_changed', { key: 'model', newValue: { name: 'm' } });
  log.add('permission_decided', { permission: 'fs.read', decision: 'granted', scope: 'once' });
  log.add('mcp_server_connected', { server: 'files', config: { env: { A: '1' } } });
  log.add('mcp_tool_executed', { executionId: 'x1', server: 'files', tool: 'read', args: { p: 1 }, result: { lines: [] } });
  log.add('command_executed', { commandId: 'c1', command: '/x', args: [{ a: 1 }], result: { ok: true } });
  log.add('assistant_stream_started', { messageId: 'a3', requestMessageId: 'u1', provider: 'mock' });
  return log;
}

test('the reducer never mutates its input state or record', () => {
  // given
  const log = everyKindLog();
  let state = initialSessionState(SID);
  for (const record of log.records) {
    const stateBefore = structuredClone(state);
    const recordBefore = structuredClone(record);
    // when
    const nextState = reduceSession(state, record);
    // then
    assert.deepEqual(state, stateBefore, `state changed by ${record.type}`);
    assert.deepEqual(record, recordBefore, `record changed by ${record.type}`);
    assert.notEqual(nextState, state);
    assert.ok(!Object.isFrozen(record.data), `${record.type} data was frozen in place`);
    state = nextState;
  }
});

test('the reducer works on deep-frozen inputs (it writes to nothing it was given)', () => {
  // given
  const records = deepFreeze(everyKindLog().records);
  // when
  const s = reduceAll(records, deepFreeze(initialSessionState(SID)));
  // then
  assert.equal(s.seq, records.length);
});

test('every object and array the reducer creates is frozen', () => {
  // given
  const log = everyKindLog();
  // when / then: after every event
  let state = initialSessionState(SID);
  for (const record of log.records) {
    state = reduceSession(state, record);
    assertFrozenTree(state, SHARED_PATHS);
  }
});

test('a new state shares what did not change', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi' });
  const s1 = reduceAll(log.records);
  // when
  const s2 = reduceSession(s1, log.add('session_config_changed', { key: 'k', newValue: 1 }));
  // then
  assert.equal(s2.messages, s1.messages);
  assert.equal(s2.permissions, s1.permissions);
  assert.notEqual(s2.config, s1.config);
});

test('a state survives a JSON round trip unchanged (no undefined properties)', () => {
  // given
  const s = reduceAll(everyKindLog().records);
  // when
  const back: unknown = JSON.parse(JSON.stringify(s));
  // then
  assert.deepEqual(back, s);
});

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

function rec(over: Partial<JournalRecord>): JournalRecord {
  return { lsn: 1, sid: SID, seq: 1, ts: 1, type: 'user_message_sent', v: 1, data: { messageId: 'u1', content: 'hi' }, ...over };
}

const REFUSALS: { name: string; record: JournalRecord; field: string }[] = [
  { name: 'an unknown type', record: rec({ type: 'nope' }), field: 'type' },
  { name: 'an inherited property name as type', record: rec({ type: 'toString' }), field: 'type' },
  { name: 'a recoverable type', record: rec({ type: 'llm_chunk_received', data: { messageId: 'a', index: 0, text: '' } }), field: 'type' },
  { name: 'an old version', record: rec({ v: 0 }), field: 'v' },
  { name: 'a newer version', record: rec({ v: 2 }), field: 'v' },
  { name: "another session's record", record: rec({ sid: 'other' }), field: 'sid' },
  { name: 'seq 0', record: rec({ seq: 0 }), field: 'seq' },
  { name: 'data null', record: rec({ data: null }), field: 'data' },
  { name: 'data an array', record: rec({ data: [] }), field: 'data' },
  { name: 'content a number', record: rec({ data: { messageId: 'u1', content: 5 } }), field: 'data.content' },
  { name: 'metadata a string', record: rec({ data: { messageId: 'u1', content: 'x', metadata: 'm' } }), field: 'data.metadata' },
  { name: 'stream without provider', record: rec({ type: 'assistant_stream_started', data: { messageId: 'a', requestMessageId: 'u' } }), field: 'data.provider' },
  { name: 'answer without content', record: rec({ type: 'assistant_response_completed', data: { messageId: 'a', requestMessageId: 'u' } }), field: 'data.content' },
  { name: 'stats a number', record: rec({ type: 'assistant_response_completed', data: { messageId: 'a', requestMessageId: 'u', content: '', stats: 3 } }), field: 'data.stats' },
  { name: 'interruption without reason', record: rec({ type: 'stream_interrupted', data: { messageId: 'a', requestMessageId: 'u' } }), field: 'data.reason' },
  { name: 'config change without newValue', record: rec({ type: 'session_config_changed', data: { key: 'k' } }), field: 'data.newValue' },
  { name: 'decision maybe', record: rec({ type: 'permission_decided', data: { permission: 'p', decision: 'maybe' } }), field: 'data.decision' },
  { name: 'server config null', record: rec({ type: 'mcp_server_connected', data: { server: 's', config: null } }), field: 'data.config' },
  { name: 'tool without tool name', record: rec({ type: 'mcp_tool_executed', data: { executionId: 'x', server: 's', args: 1 } }), field: 'data.tool' },
  { name: 'command args a string', record: rec({ type: 'command_executed', data: { commandId: 'c', command: '/x', args: 'a' } }), field: 'data.args' },
];

for (const r of REFUSALS) {
  test(`reduceSession refuses ${r.name} naming ${r.field}`, () => {
    // given
    const state = initialSessionState(SID);
    // when
    const err = thrown(() => reduceSession(state, r.record));
    // then
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.equal(err.details.field, r.field);
    assert.equal(err.details.sessionId, r.record.sid);
  });
}

test('reduceSession refuses a seq that does not move forward', () => {
  // given
  const s = reduceSession(initialSessionState(SID), rec({ seq: 5 }));
  // when
  const same = thrown(() => reduceSession(s, rec({ seq: 5, data: { messageId: 'u2', content: 'x' } })));
  const back = thrown(() => reduceSession(s, rec({ seq: 4, data: { messageId: 'u2', content: 'x' } })));
  // then
  assert.equal(same.details.field, 'seq');
  assert.equal(back.details.field, 'seq');
});

test('reduceSession accepts a seq gap (a salvaged history)', () => {
  // given
  const s = reduceSession(initialSessionState(SID), rec({ seq: 1 }));
  // when
  const after = reduceSession(s, rec({ seq: 7, data: { messageId: 'u7', content: 'x' } }));
  // then
  assert.equal(after.seq, 7);
});

test('reduceSession trusts details the schema checks at write time; reduceSessionValidated refuses them', () => {
  // given: an unknown key and an over-long id pass the reducer's guards but not the schema
  const unknownKey = rec({ data: { messageId: 'u1', content: 'hi', bogus: 1 } });
  const longId = rec({ data: { messageId: 'm'.repeat(201), content: 'hi' } });
  const state = initialSessionState(SID);
  // when
  const trusted = reduceSession(state, unknownKey);
  const errKey = thrown(() => reduceSessionValidated(state, unknownKey));
  const errLong = thrown(() => reduceSessionValidated(state, longId));
  // then
  assert.equal(trusted.messages.length, 1);
  assert.equal(errKey.code, ErrorCodes.INVALID_INPUT);
  assert.equal(errKey.details.field, 'data.bogus');
  assert.equal(errLong.details.field, 'data.messageId');
});

test('reduceSessionValidated gives the same state as reduceSession for valid records', () => {
  // given
  const records = everyKindLog().records;
  // when
  const validated = records.reduce(reduceSessionValidated, initialSessionState(SID));
  // then
  assert.deepEqual(validated, reduceAll(records));
});

test('reduceSessionValidated refuses a recoverable type naming type', () => {
  // when
  const err = thrown(() => reduceSessionValidated(initialSessionState(SID), rec({ type: 'typing_indicator', data: { userId: 'a', typing: true } })));
  // then
  assert.equal(err.details.field, 'type');
});

test('recovery with these hooks reports a session whose record the reducer refuses as failed', () => {
  // given
  const builder = new RecoveryBuilder<SessionState>(
    { reducer: reduceSession, initialState: initialSessionState, upcastEvent: upcastJournalRecord },
    false,
  );
  const good = rec({ sid: 'good', seq: 1 });
  const bad = rec({ sid: 'bad', seq: 1 });
  const badNext = rec({ sid: 'bad', seq: 2, data: { messageId: 'u2', content: 42 } });
  // when
  for (const r of [good, bad, badNext]) builder.apply(r);
  const sessions = builder.sessions();
  // then
  assert.equal(sessions.get('good')?.report.status, 'recovered');
  assert.equal(sessions.get('bad')?.report.status, 'failed');
  assert.equal(sessions.get('bad')?.state.seq, 1, 'state is the last good one');
});

// ---------------------------------------------------------------------------
// Property: random valid histories
// ---------------------------------------------------------------------------

const idArb = fc.constantFrom('m1', 'm2', 'm3', 'm4');
const textArb = fc.string({ minLength: 1, maxLength: 12 });
// Through a JSON round trip: fc.jsonValue() makes -0 (and keys may hold lone surrogates), which the
// schemas refuse because the journal and snapshots could not give them back.
const jsonArb = fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown).filter((v) => unfaithfulValuePath(v) === undefined);
const optional = { requiredKeys: [] as never[], noNullPrototype: true };

type Gen = { [T in CriticalEventType]: { type: T; data: EventData<T> } }[CriticalEventType];

const eventArb: fc.Arbitrary<Gen> = fc.oneof(
  fc.record({
    type: fc.constant('user_message_sent' as const),
    data: fc.record(
      { messageId: idArb, content: textArb, clientMessageId: idArb, metadata: fc.dictionary(fc.constantFrom('a', 'b'), jsonArb, { noNullPrototype: true }) },
      { noNullPrototype: true, requiredKeys: ['messageId', 'content'] },
    ),
  }),
  fc.record({
    type: fc.constant('assistant_stream_started' as const),
    data: fc.record(
      { messageId: idArb, requestMessageId: idArb, provider: fc.constantFrom('mock', 'openai'), model: textArb, retryOf: idArb },
      { noNullPrototype: true, requiredKeys: ['messageId', 'requestMessageId', 'provider'] },
    ),
  }),
  fc.record({
    type: fc.constant('assistant_response_completed' as const),
    data: fc.record(
      {
        messageId: idArb,
        requestMessageId: idArb,
        content: fc.string({ maxLength: 12 }),
        stats: fc.record({ chunks: fc.nat(), durationMs: fc.double({ min: 0, max: 1e6, noNaN: true }), finishReason: textArb }, optional),
      },
      { noNullPrototype: true, requiredKeys: ['messageId', 'requestMessageId', 'content'] },
    ),
  }),
  fc.record({
    type: fc.constant('stream_interrupted' as const),
    data: fc.record({ messageId: idArb, requestMessageId: idArb, reason: textArb }, { noNullPrototype: true }),
  }),
  fc.record({
    type: fc.constant('session_config_changed' as const),
    data: fc.record({ key: fc.constantFrom('model', 'temperature'), oldValue: jsonArb, newValue: jsonArb }, { noNullPrototype: true, requiredKeys: ['key', 'newValue'] }),
  }),
  fc.record({
    type: fc.constant('permission_decided' as const),
    data: fc.record(
      {
        permission: fc.constantFrom('fs.read', 'net'),
        decision: fc.constantFrom('granted' as const, 'denied' as const),
        scope: fc.constantFrom('once' as const, 'session' as const, 'always' as const),
      },
      { noNullPrototype: true, requiredKeys: ['permission', 'decision'] },
    ),
  }),
  fc.record({
    type: fc.constant('mcp_server_connected' as const),
    data: fc.record({ server: fc.constantFrom('files', 'web'), config: fc.dictionary(fc.constantFrom('cmd', 'env'), jsonArb, { noNullPrototype: true }) }, { noNullPrototype: true }),
  }),
  fc.record({
    type: fc.constant('mcp_tool_executed' as const),
    data: fc.record(
      { executionId: idArb, server: textArb, tool: textArb, args: jsonArb, result: jsonArb, isError: fc.boolean(), durationMs: fc.nat() },
      { noNullPrototype: true, requiredKeys: ['executionId', 'server', 'tool', 'args'] },
    ),
  }),
  fc.record({
    type: fc.constant('command_executed' as const),
    data: fc.record(
      { commandId: idArb, command: textArb, args: fc.array(jsonArb, { maxLength: 3 }), result: jsonArb, error: textArb },
      { noNullPrototype: true, requiredKeys: ['commandId', 'command'] },
    ),
  }),
) as fc.Arbitrary<Gen>;

/** Records for SID: seq 1…n (or with gaps), ts never decreasing. */
const historyArb = fc
  .array(fc.tuple(eventArb, fc.integer({ min: 1, max: 3 }), fc.nat({ max: 5 })), { maxLength: 40 })
  .map((items) => {
    let seq = 0;
    let ts = 1_700_000_000_000;
    return items.map(([e, seqStep, tsStep]): JournalRecord => {
      seq += seqStep;
      ts += tsStep;
      return { lsn: seq, sid: SID, seq, ts, type: e.type, v: 1, data: e.data };
    });
  });

test('property: reducing random valid histories is deterministic, pure and counts messages', () => {
  fc.assert(
    fc.property(historyArb, (records) => {
      // given: the generator only makes valid data
      for (const r of records) parseEventData(r.type as CriticalEventType, r.data, { sessionId: SID });
      const inputCopy = structuredClone(records);
      deepFreeze(records);

      // when: reduce twice, keeping every intermediate state and a copy taken before the next step
      const states: SessionState[] = [initialSessionState(SID)];
      const copies: SessionState[] = [structuredClone(states[0] as SessionState)];
      for (const r of records) {
        const s = reduceSession(states[states.length - 1] as SessionState, r);
        states.push(s);
        copies.push(structuredClone(s));
      }
      const final = states[states.length - 1] as SessionState;
      const again = reduceAll(records);

      // then: deterministic
      assert.deepEqual(again, final);
      // seq is the last record's
      assert.equal(final.seq, records.length === 0 ? 0 : records[records.length - 1]?.seq);
      // one message per user message, completed answer and interruption
      const count = (t: string) => records.filter((r) => r.type === t).length;
      assert.equal(final.messages.length, count('user_message_sent') + count('assistant_response_completed') + count('stream_interrupted'));
      // no input was changed: neither the records nor any earlier state
      assert.deepEqual(records, inputCopy);
      for (const [i, s] of states.entries()) assert.deepEqual(s, copies[i], `state ${i} was mutated`);
      // the stream matches a simple model: the last start not yet ended by its own end
      let streaming: string | undefined;
      for (const r of records) {
        const d = r.data as { messageId?: string };
        if (r.type === 'assistant_stream_started') streaming = d.messageId;
        else if ((r.type === 'assistant_response_completed' || r.type === 'stream_interrupted') && d.messageId === streaming) streaming = undefined;
      }
      assert.equal(pendingInterruption(final)?.messageId, streaming);
      // the top-level state and its lists are frozen
      assert.ok(Object.isFrozen(final) && Object.isFrozen(final.messages) && Object.isFrozen(final.stream));
    }),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------
// createdAt / updatedAt (state version 2) and the state upcaster
// ---------------------------------------------------------------------------

test('createdAt is the ts of the first event and updatedAt of the last, for every event type that moves seq', () => {
  // given a history whose first event is not a message
  const log = new Log();
  log.add('session_config_changed', { key: 'model', newValue: 'm' });
  log.add('user_message_sent', { messageId: 'u1', content: 'hello' });
  log.add('permission_decided', { permission: 'fs', decision: 'granted' });
  // when
  const states = log.records.map((_, i) => reduceAll(log.records.slice(0, i + 1)));
  // then
  assert.deepEqual(states.map((s) => [s.createdAt, s.updatedAt]), [[1001, 1001], [1001, 1002], [1001, 1003]]);
});

/** A state as version 1 stored it: today's state without the version 2 fields. */
function asV1(state: SessionState): Record<string, unknown> {
  const { createdAt: _c, updatedAt: _u, ...v1 } = JSON.parse(JSON.stringify(state)) as SessionState;
  return v1;
}

test('upcastSessionState v1 → v2 takes createdAt/updatedAt from the earliest and latest timestamps the state holds', () => {
  // given a v1 state with messages, a command and a tool execution
  const log = new Log();
  log.add('session_config_changed', { key: 'model', newValue: 'm' });
  log.add('user_message_sent', { messageId: 'u1', content: 'hello' });
  log.add('command_executed', { commandId: 'c1', command: 'clear' });
  log.add('mcp_tool_executed', { executionId: 'x1', server: 'fs', tool: 'read', args: {} });
  log.add('permission_decided', { permission: 'fs', decision: 'granted' });
  const today = reduceAll(log.records);
  // when
  const up = upcastSessionState(asV1(today), 1);
  // then everything else is as it was; the times are what the v1 state could tell (no ts for config or permission)
  assert.deepEqual({ ...up, createdAt: 0, updatedAt: 0 }, { ...today, createdAt: 0, updatedAt: 0 });
  assert.deepEqual([up.createdAt, up.updatedAt], [1002, 1004]);
  assert.ok(Object.isFrozen(up));
  // and the next event sets updatedAt exactly
  const next = reduceSession(up, { lsn: 6, sid: SID, seq: 6, ts: 2000, type: 'user_message_sent', v: 1, data: { messageId: 'u2', content: 'more' } });
  assert.deepEqual([next.createdAt, next.updatedAt], [1002, 2000]);
});

test('upcastSessionState v1 → v2 of a state with no timestamp gives 0 and 0; the next event sets both', () => {
  // given a v1 state with only a config change
  const log = new Log();
  log.add('session_config_changed', { key: 'model', newValue: 'm' });
  // when
  const up = upcastSessionState(asV1(reduceAll(log.records)), 1);
  const next = reduceSession(up, { lsn: 2, sid: SID, seq: 2, ts: 3000, type: 'user_message_sent', v: 1, data: { messageId: 'u1', content: 'hi' } });
  // then
  assert.deepEqual([up.createdAt, up.updatedAt], [0, 0]);
  assert.deepEqual([next.createdAt, next.updatedAt], [3000, 3000]);
});

for (const version of [0, SESSION_STATE_VERSION + 1, 1.5]) {
  test(`upcastSessionState refuses state version ${version} with ARBOR_INVALID_INPUT naming stateSchemaVersion`, () => {
    // when
    const err = thrown(() => upcastSessionState(asV1(initialSessionState(SID)), version));
    // then
    assert.equal(err.code, ErrorCodes.INVALID_INPUT);
    assert.equal(err.details.field, 'stateSchemaVersion');
    assert.equal(err.details.sessionId, SID);
  });
}

test('upcastSessionState refuses a state that is not an object, naming state', () => {
  const err = thrown(() => upcastSessionState(null, 1));
  assert.equal(err.code, ErrorCodes.INVALID_INPUT);
  assert.equal(err.details.field, 'state');
});

// ---------------------------------------------------------------------------
// Message parts (state version 3)
// ---------------------------------------------------------------------------

test('user_message_sent with parts keeps them; an answer with reasoning, usage and stopped keeps its parts and metadata', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hi there', clientMessageId: 'ui-1', parts: [{ type: 'text', text: 'hi ' }, { type: 'text', text: 'there' }] });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  log.add('assistant_response_completed', {
    messageId: 'a1',
    requestMessageId: 'u1',
    content: 'Hel',
    parts: [{ type: 'reasoning', text: 'think' }, { type: 'text', text: 'Hel' }],
    stats: { chunks: 2, finishReason: 'stop', inputTokens: 5, outputTokens: 2, totalTokens: 7 },
    stopped: true,
  });
  // when
  const s = reduceAll(log.records.map((r) => ({ ...r, data: parseEventData(r.type as CriticalEventType, r.data) })));
  // then
  assert.deepEqual(s.messages[0]!.parts, [{ type: 'text', text: 'hi ' }, { type: 'text', text: 'there' }]);
  assert.deepEqual(s.messages[1]!.parts, [{ type: 'reasoning', text: 'think' }, { type: 'text', text: 'Hel' }]);
  assert.deepEqual(
    [s.messages[1]!.metadata?.finishReason, s.messages[1]!.metadata?.usage, s.messages[1]!.metadata?.stopped],
    ['stop', { inputTokens: 5, outputTokens: 2, totalTokens: 7 }, true],
  );
  assertFrozenTree(s, SHARED_PATHS);
  // and as UIMessages, the user message keeps its client id
  assert.deepEqual(toUIMessage(s.messages[0]!).id, 'ui-1');
  assert.deepEqual(toUIMessage(s.messages[1]!).parts, [{ type: 'reasoning', text: 'think', state: 'done' }, { type: 'text', text: 'Hel', state: 'done' }]);
});

test('parts journaled during a turn come first in the answer; a tool part is updated in the stream, then in its message', () => {
  // given a turn that journaled text and a tool call before completing
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'weather?' });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  let s = reduceAll(log.records);
  const call: ToolPart = { type: 'tool', toolCallId: 'c1', toolName: 'weather', input: { city: 'Oslo' }, state: 'input-available' };
  s = { ...s, ...appendStreamParts(s, 'a1', [{ type: 'text', text: 'Let me look. ' }, call]) };
  assert.equal(appendStreamParts(s, 'other', [call]), undefined);
  s = { ...s, ...updateToolPart(s, 'c1', (p) => ({ ...p, state: 'output-available', output: { c: 3 } })) };
  // when the answer completes without parts of its own
  s = reduceSession(s, { lsn: 3, sid: SID, seq: 3, ts: 1003, type: 'assistant_response_completed', v: 1, data: { messageId: 'a1', requestMessageId: 'u1', content: 'Let me look. 3 degrees.' } });
  // then the earlier parts come first and the completion adds only the rest of the text
  assert.deepEqual(s.messages[1]!.parts, [
    { type: 'text', text: 'Let me look. ' },
    { type: 'tool', toolCallId: 'c1', toolName: 'weather', input: { city: 'Oslo' }, state: 'output-available', output: { c: 3 } },
    { type: 'text', text: '3 degrees.' },
  ]);
  // and a later update (e.g. recovery) reaches the part in the message
  const after = { ...s, ...updateToolPart(s, 'c1', (p) => ({ ...p, state: 'output-error', output: undefined, errorText: 'unknown', outcome: 'unknown' })) };
  assert.deepEqual(toUIMessage(after.messages[1]!).parts[1], { type: 'tool-weather', toolCallId: 'c1', state: 'output-error', input: { city: 'Oslo' }, errorText: 'unknown' });
  assert.equal(updateToolPart(s, 'nope', (p) => p), undefined);
});

test('stream_interrupted keeps an answer that journaled parts, before its notice', () => {
  // given
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'go' });
  log.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  let s = reduceAll(log.records);
  s = { ...s, ...appendStreamParts(s, 'a1', [{ type: 'tool', toolCallId: 'c1', toolName: 'rm', dynamic: true, input: {}, state: 'input-available' }]) };
  // when
  s = reduceSession(s, { lsn: 3, sid: SID, seq: 3, ts: 1003, type: 'stream_interrupted', v: 1, data: { messageId: 'a1', requestMessageId: 'u1', reason: 'restart' } });
  // then
  assert.deepEqual(s.messages.map((m) => [m.id, m.role, m.parts.length]), [['u1', 'user', 1], ['a1', 'assistant', 1], ['a1:interrupted', 'system', 1]]);
  assert.equal(s.messages[1]!.metadata?.interrupted, true);
  assert.deepEqual(toUIMessage(s.messages[1]!).parts[0], { type: 'dynamic-tool', toolName: 'rm', toolCallId: 'c1', state: 'input-available', input: {} });
  assert.equal(s.stream.status, 'idle');
});

/** A state as version 2 stored it: today's state without `parts`. */
function asV2(state: SessionState): Record<string, unknown> {
  const plain = JSON.parse(JSON.stringify(state)) as Record<string, unknown> & { messages: Record<string, unknown>[]; stream: Record<string, unknown> };
  for (const m of plain.messages) delete m.parts;
  delete plain.stream.parts;
  return plain;
}

test('upcastSessionState v2 → v3 gives every message one text part of its content (none when empty) and a stream in flight no parts', () => {
  // given a v2 state with a user message, an empty answer, a notice and a stream in flight
  const log = new Log();
  log.add('user_message_sent', { messageId: 'u1', content: 'hello', clientMessageId: 'c1' });
  log.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: '' });
  log.add('system_notice_added', { noticeId: 'n1', content: 'restored' });
  log.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u1', provider: 'mock' });
  const today = reduceAll(log.records);
  // when
  const up = upcastSessionState(asV2(today), 2);
  // then it is the state today's reducer builds
  assert.deepEqual(up, today);
  assert.ok(Object.isFrozen(up) && up.messages.every((m) => Object.isFrozen(m) && Object.isFrozen(m.parts)));
});

test('a live history carries its stamp where no copy, encoding or comparison sees it, and a state reduced twice from one state gives two lineages', async () => {
  // given: two user messages reduced live, then a second successor of the first state
  const first = reduceSession(initialSessionState(SID), rec({ seq: 1, data: { messageId: 'u1', content: 'one' } }));
  const second = reduceSession(first, rec({ seq: 2, data: { messageId: 'u2', content: 'two' } }));
  const other = reduceSession(first, rec({ seq: 2, data: { messageId: 'u3', content: 'three' } }));
  // then: the arrays look like plain frozen arrays of messages
  const plain = [...second.messages];
  assert.deepEqual(second.messages, plain);
  assert.deepEqual(Object.keys(second.messages), ['0', '1']);
  assert.equal(JSON.stringify(second.messages), JSON.stringify(plain));
  assert.deepEqual(structuredClone(second.messages), plain);
  assert.deepEqual(v8.deserialize(v8.serialize(second)), JSON.parse(JSON.stringify(second)));
  // the snapshot codec (msgpack) writes the same bytes as for the plain copy, and reads back the plain state
  const meta = { sid: SID, seq: 2, lsn: 2, ts: 2, stateSchemaVersion: 3, dedupe: [] };
  const encoded = await encodeSnapshot({ ...meta, state: second });
  assert.deepEqual(encoded, await encodeSnapshot({ ...meta, state: { ...second, messages: plain } }));
  const decoded = await decodeSnapshot(encoded);
  assert.ok(typeof decoded !== 'string', String(decoded));
  assert.deepEqual(decoded.state, JSON.parse(JSON.stringify(second)));
  assert.ok(Object.isFrozen(second.messages));
  // and: the first successor continues the lineage, the second starts its own
  assert.equal(historyStamp(second.messages)?.lineage, historyStamp(first.messages)?.lineage);
  assert.notEqual(historyStamp(other.messages)?.lineage, historyStamp(first.messages)?.lineage);
  assert.equal(historyStamp(second.messages)?.length, 2);
});
