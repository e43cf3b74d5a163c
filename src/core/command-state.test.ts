import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { JournalRecord } from './record.ts';
import { parseEventData, type CriticalEventType, type EventData } from './events.ts';
import { commandsInFlight, initialSessionState, reduceSession, UNKNOWN_COMMAND_OUTCOME_TEXT, type SessionState } from './state.ts';

const SID = 's1';

function log() {
  let seq = 0;
  let state: SessionState = initialSessionState(SID);
  return {
    add<T extends CriticalEventType>(type: T, data: EventData<T>): SessionState {
      seq += 1;
      const r: JournalRecord = { lsn: seq, sid: SID, seq, ts: 1000 + seq, type, v: 1, data: parseEventData(type, data, { sessionId: SID }) };
      state = reduceSession(state, r);
      return state;
    },
  };
}

test('command_started puts the command in flight; command_finished moves it to commands with its outcome, args and start', () => {
  const l = log();
  const s1 = l.add('command_started', { commandId: 'c1', command: 'charge', args: [{ cents: 5 }] });
  assert.deepEqual(commandsInFlight(s1), [{ commandId: 'c1', call: { command: 'charge', args: [{ cents: 5 }], startedSeq: 1 } }]);
  assert.deepEqual(s1.commands, []);
  assert.ok(Object.isFrozen(s1.commandsInFlight) && Object.isFrozen(s1.commandsInFlight!.c1));
  const s2 = l.add('command_finished', { commandId: 'c1', command: 'charge', outcome: 'ok', result: { id: 'ch_1' }, durationMs: 2 });
  assert.deepEqual(s2.commandsInFlight, {});
  assert.deepEqual(s2.commands, [{ commandId: 'c1', command: 'charge', args: [{ cents: 5 }], result: { id: 'ch_1' }, outcome: 'ok', startedSeq: 1, durationMs: 2, seq: 2, ts: 1002 }]);
});

test("recovery's command_finished { outcome: 'unknown' } says so in the command's error; an error outcome keeps its code", () => {
  const l = log();
  l.add('command_started', { commandId: 'c1', command: 'charge' });
  l.add('command_started', { commandId: 'c2', command: 'refund' });
  l.add('command_finished', { commandId: 'c2', command: 'refund', outcome: 'error', error: 'no such charge', errorCode: 'ARBOR_INVALID_INPUT' });
  const s = l.add('command_finished', { commandId: 'c1', command: 'charge', outcome: 'unknown' });
  assert.deepEqual(s.commands.map((c) => [c.commandId, c.outcome, c.errorCode, c.error, c.startedSeq]), [['c2', 'error', 'ARBOR_INVALID_INPUT', 'no such charge', 2], ['c1', 'unknown', undefined, UNKNOWN_COMMAND_OUTCOME_TEXT, 1]]);
  assert.deepEqual(commandsInFlight(s), []);
});

test('a finish without a start (a history that lost it) still records the command, without args or start', () => {
  const s = log().add('command_finished', { commandId: 'c9', command: 'charge', outcome: 'ok' });
  assert.deepEqual(s.commands, [{ commandId: 'c9', command: 'charge', outcome: 'ok', seq: 1, ts: 1001 }]);
  assert.equal(s.commandsInFlight, undefined);
});

test('the reducer refuses a command_finished whose outcome it cannot read, naming the field', () => {
  const bad: JournalRecord = { lsn: 1, sid: SID, seq: 1, ts: 1, type: 'command_finished', v: 1, data: { commandId: 'c1', command: 'x', outcome: 'maybe' } };
  assert.throws(() => reduceSession(initialSessionState(SID), bad), (err: unknown) => (err as { code?: string; details?: { field?: string } }).code === 'ARBOR_INVALID_INPUT' && (err as { details: { field: string } }).details.field === 'data.outcome');
});
