import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ArborError, ErrorCodes } from './errors.ts';
import type { JournalRecord } from './record.ts';
import { parseEventData, upcastJournalRecord } from './events.ts';
import type { CriticalEventType } from './events.ts';
import { beginSessionDraft, initialSessionState, reduceSession, SESSION_STATE_VERSION } from './state.ts';
import type { SessionState } from './state.ts';
import { SESSION_HOOKS } from './session-hooks.ts';
import { RecoveryBuilder, SessionReplay } from '../backend/replay.ts';
import type { RecoveryHooks } from '../backend/replay.ts';
import { deepFreeze, refusalArb, refusedRecord, sessionHistoryArb, unfrozenPath } from '../../test/helpers/session-events.ts';

/**
 * Replay builds a session's state as a draft (in place: linear in its
 * events) where the live path folds the pure reducer. These tests hold the
 * draft to the fold: the same state, deep-frozen, the last good one after a
 * refused record, and no array it did not make ever changed.
 */

const SID = 's1';

/** What replay must give: the pure reducer folded over the records (upcast first, as replay does). */
function fold(records: readonly JournalRecord[], start: SessionState = initialSessionState(SID)): SessionState {
  return records.reduce((s, r) => reduceSession(s, upcastJournalRecord(r)), start);
}

/** Replays `records` through the recovery path with Arbor's own hooks (which draft). */
function replay(records: readonly JournalRecord[], snapshot?: { state: unknown; seq: number }): SessionReplay<SessionState> {
  const r = new SessionReplay<SessionState>(SESSION_HOOKS, SID, {
    stateSchemaVersion: SESSION_STATE_VERSION,
    snapshot: snapshot === undefined ? undefined : { ...snapshot, stateSchemaVersion: SESSION_STATE_VERSION },
  });
  for (const record of records) r.apply(record);
  return r;
}

test("Arbor's own hooks replay through a draft of the same reducer", () => {
  assert.equal(SESSION_HOOKS.draft.reducer, SESSION_HOOKS.reducer);
  assert.equal(SESSION_HOOKS.draft.begin, beginSessionDraft);
});

test('property: a drafted replay of a random valid history equals folding reduceSession, deep-frozen, also when its state is read on the way', () => {
  fc.assert(
    fc.property(sessionHistoryArb(SID), fc.array(fc.nat(), { maxLength: 3 }), (records, reads) => {
      // given: every generated record is valid, and nothing can be changed behind the reducer's back
      for (const r of records) parseEventData(r.type as CriticalEventType, r.data, { sessionId: SID });
      deepFreeze(records);
      const readAt = new Set(reads.map((n) => (records.length === 0 ? 0 : n % records.length)));

      // when: replayed, reading the state (sealing the draft) after some records
      const r = new SessionReplay<SessionState>(SESSION_HOOKS, SID, { stateSchemaVersion: SESSION_STATE_VERSION });
      records.forEach((record, i) => {
        r.apply(record);
        if (readAt.has(i)) {
          // then: each state handed out on the way is the fold so far, deep-frozen
          assert.deepEqual(r.state, fold(records.slice(0, i + 1)));
          assert.equal(unfrozenPath(r.state), undefined);
        }
      });

      // then
      assert.equal(r.report.status, 'recovered');
      assert.equal(r.report.seq, records.length);
      assert.deepEqual(r.state, fold(records));
      assert.equal(unfrozenPath(r.state), undefined, 'every object and array of the state is frozen');
    }),
    { numRuns: 300 },
  );
});

test('property: at a refused record the drafted replay keeps the last good state, fails naming its seq, and ignores what follows', () => {
  const arb = fc
    .tuple(sessionHistoryArb(SID, 40), sessionHistoryArb(SID, 5), fc.nat(), refusalArb)
    .map(([records, after, at, refusal]) => {
      const k = at % (records.length + 1);
      return { good: records.slice(0, k), bad: refusedRecord(SID, k + 1, refusal), after: after.map((r) => ({ ...r, seq: r.seq + k + 1, lsn: r.lsn + k + 1 })) };
    });
  fc.assert(
    fc.property(arb, ({ good, bad, after }) => {
      // given
      deepFreeze([good, bad, after]);
      const lastGood = fold(good);
      // when
      const r = replay([...good, bad, ...after]);
      // then
      assert.equal(r.report.status, 'failed');
      assert.equal(r.report.seq, good.length, 'the last seq applied is the one before the refused record');
      assert.match(r.report.error ?? '', new RegExp(`at seq ${bad.seq} \\(`));
      assert.ok(r.cause instanceof ArborError);
      assert.equal(r.cause.code, ErrorCodes.INVALID_INPUT);
      assert.deepEqual(r.state, lastGood);
      assert.equal(unfrozenPath(r.state), undefined);
    }),
    { numRuns: 300 },
  );
});

test('property: recovery of interleaved sessions (RecoveryBuilder, log order) gives each the fold of its own records', () => {
  const sids = ['a', 'b', 'c'];
  const arb = fc.record({
    histories: fc.tuple(...sids.map((sid) => sessionHistoryArb(sid, 30))),
    order: fc.array(fc.nat({ max: sids.length - 1 }), { maxLength: 90 }),
    // (a record of another session is not refused here: the log routes it to that session)
    refuse: fc.option(fc.tuple(fc.nat({ max: sids.length - 1 }), fc.nat(), refusalArb.filter((r) => r.sid === undefined)), { nil: undefined }),
  });
  fc.assert(
    fc.property(arb, ({ histories, order, refuse }) => {
      // given: one session may hold a refused record; the log interleaves the sessions in `order`
      const logs = histories.map((h) => [...h]);
      if (refuse !== undefined) {
        const [s, at, refusal] = refuse;
        const h = logs[s]!;
        const k = at % (h.length + 1);
        h.splice(k, h.length - k, refusedRecord(sids[s]!, k + 1, refusal));
      }
      deepFreeze(logs);
      const next = logs.map(() => 0);
      const log: JournalRecord[] = [];
      for (const s of [...order, ...logs.flatMap((h, s) => h.map(() => s))]) if (next[s]! < logs[s]!.length) log.push(logs[s]![next[s]!++]!);
      // when
      const builder = new RecoveryBuilder<SessionState>(SESSION_HOOKS, false);
      for (const record of log) builder.apply(record);
      // then
      for (const [s, sid] of sids.entries()) {
        const entry = builder.sessions().get(sid);
        const h = logs[s]!;
        if (h.length === 0) {
          assert.equal(entry, undefined);
          continue;
        }
        const refused = refuse !== undefined && refuse[0] === s;
        const good = refused ? h.slice(0, -1) : h;
        assert.equal(entry?.report.status, refused ? 'failed' : 'recovered', sid);
        assert.deepEqual(entry?.state, good.reduce((st, r) => reduceSession(st, r), initialSessionState(sid)), sid);
        assert.equal(unfrozenPath(entry?.state), undefined, sid);
      }
    }),
    { numRuns: 150 },
  );
});

test('property: a replay from a snapshot never changes the snapshot state (its arrays are copied, not written to)', () => {
  fc.assert(
    fc.property(sessionHistoryArb(SID), fc.nat(), (records, cut) => {
      // given: a snapshot state as decoded from a file (plain, nothing frozen) at seq k
      const k = records.length === 0 ? 0 : cut % (records.length + 1);
      const decoded = structuredClone(fold(records.slice(0, k))) as SessionState;
      const before = structuredClone(decoded);
      const before2 = structuredClone(decoded);
      // when
      const r = replay(records, { state: decoded, seq: k });
      // then
      assert.equal(r.report.status, 'recovered');
      assert.deepEqual(r.state, fold(records.slice(k), before2));
      assert.deepEqual(decoded, before, 'the snapshot state is as it was');
    }),
    { numRuns: 200 },
  );
});

/** A valid record (a user message by default) whose `ts` throws the second time it is read: after reduceSession has built its changes. */
function trappedRecord(seq: number, type = 'user_message_sent', data: unknown = { messageId: `m${seq}`, content: 'late throw' }): JournalRecord {
  let reads = 0;
  const r = { lsn: seq, sid: SID, seq, type, v: 1, data } as unknown as JournalRecord;
  Object.defineProperty(r, 'ts', {
    enumerable: true,
    get: () => {
      reads += 1;
      if (reads >= 2) throw new ArborError(ErrorCodes.INVALID_INPUT, 'ts unreadable', { field: 'ts' });
      return 1_700_000_000_000 + seq;
    },
  });
  return r;
}

const message = (seq: number): JournalRecord => ({ lsn: seq, sid: SID, seq, ts: 1_700_000_000_000 + seq, type: 'user_message_sent', v: 1, data: { messageId: `m${seq}`, content: `hello ${seq}` } });

test('a draft whose reducer throws after changing its arrays in place is left exactly as before that record', () => {
  // given a draft that owns its messages array (two records applied)
  const good = [message(1), message(2)];
  const draft = beginSessionDraft(initialSessionState(SID));
  for (const r of good) draft.apply(r);
  // when the third throws late
  let caught: unknown;
  try {
    draft.apply(trappedRecord(3));
  } catch (err) {
    caught = err;
  }
  // then
  assert.ok(caught instanceof ArborError);
  assert.equal(caught.code, ErrorCodes.INVALID_INPUT);
  const state = draft.seal();
  assert.deepEqual(state, fold(good));
  assert.equal(state.messages.length, 2);
  // and the draft goes on from there
  draft.apply(message(3));
  assert.deepEqual(draft.seal(), fold([...good, message(3)]));
});

test('a draft whose reducer throws after replacing a message in place (a tool call finished after its turn) is left as before that record', () => {
  // given an answer holding a tool call, completed: the draft owns its messages
  const at = (seq: number, type: string, data: unknown): JournalRecord => ({ lsn: seq, sid: SID, seq, ts: 1_700_000_000_000 + seq, type, v: 1, data });
  const good = [
    message(1),
    at(2, 'assistant_stream_started', { messageId: 'a1', requestMessageId: 'm1', provider: 'mock' }),
    at(3, 'tool_call_started', { messageId: 'a1', toolCallId: 't1', tool: 'read', input: {} }),
    at(4, 'assistant_response_completed', { messageId: 'a1', requestMessageId: 'm1', content: 'done' }),
  ];
  const draft = beginSessionDraft(initialSessionState(SID));
  for (const r of good) draft.apply(r);
  // when its finish throws late
  assert.throws(() => draft.apply(trappedRecord(5, 'tool_call_finished', { messageId: 'a1', toolCallId: 't1', output: 'ok' })), (err: unknown) => err instanceof ArborError && err.code === ErrorCodes.INVALID_INPUT);
  // then the tool part is as it was (input-available), and the draft goes on from there
  const state = draft.seal();
  assert.deepEqual(state, fold(good));
  const finished = at(5, 'tool_call_finished', { messageId: 'a1', toolCallId: 't1', output: 'ok' });
  draft.apply(finished);
  assert.deepEqual(draft.seal(), fold([...good, finished]));
});

test('a replay from a snapshot whose messages hold the same tool call twice updates the latest, as the fold does', () => {
  // given a snapshot state (as decoded: plain) with the call t1 in two answers
  const at = (seq: number, type: string, data: unknown): JournalRecord => ({ lsn: seq, sid: SID, seq, ts: 1_700_000_000_000 + seq, type, v: 1, data });
  const tool = { type: 'tool', toolCallId: 't1', toolName: 'read', input: {}, state: 'input-available' };
  const answer = (id: string, seq: number) => ({ id, role: 'assistant', content: '', parts: [{ ...tool }], seq, ts: 1, metadata: { requestMessageId: 'u1' } });
  const snapshot = { ...structuredClone(initialSessionState(SID)), seq: 2, createdAt: 1, updatedAt: 1, messages: [answer('a1', 1), answer('a2', 2)] };
  const records = [message(3), at(4, 'tool_call_finished', { messageId: 'a2', toolCallId: 't1', output: 'late' }), at(5, 'tool_call_finished', { messageId: 'a2', toolCallId: 't1', output: 'later' })];
  // when
  const r = replay(records, { state: structuredClone(snapshot), seq: 2 });
  // then
  assert.equal(r.report.status, 'recovered');
  const expected = fold(records, structuredClone(snapshot) as unknown as SessionState);
  assert.deepEqual(r.state, expected);
  assert.equal((r.state.messages[1]!.parts[0] as { output?: unknown }).output, 'later');
  assert.equal((r.state.messages[0]!.parts[0] as { state: string }).state, 'input-available');
});

test('SessionReplay: a record that throws late leaves the last good state and fails at its seq', () => {
  // when
  const r = replay([message(1), message(2), trappedRecord(3), message(4)]);
  // then
  assert.equal(r.report.status, 'failed');
  assert.equal(r.report.seq, 2);
  assert.match(r.report.error ?? '', /at seq 3 /);
  assert.deepEqual(r.state, fold([message(1), message(2)]));
});

test('hooks copied from Arbor\'s with another reducer fold that reducer (the draft is for reduceSession only)', () => {
  // given
  let calls = 0;
  const reducer = (s: SessionState, e: JournalRecord): SessionState => {
    calls += 1;
    return reduceSession(s, e);
  };
  const hooks: RecoveryHooks<SessionState> = { ...SESSION_HOOKS, reducer };
  const records = [message(1), message(2), message(3)];
  // when
  const r = new SessionReplay(hooks, SID, { stateSchemaVersion: SESSION_STATE_VERSION });
  for (const record of records) r.apply(record);
  // then
  assert.equal(calls, 3);
  assert.deepEqual(r.state, fold(records));
});

test('hooks with a draft of their own reducer: replay begins one draft, applies every record to it, and seals it when the state is read', () => {
  // given a counting reducer whose draft keeps the count in place
  type Count = { readonly n: number };
  const calls: string[] = [];
  const reducer = (s: Count): Count => Object.freeze({ n: s.n + 1 });
  const hooks: RecoveryHooks<Count> = {
    initialState: () => Object.freeze({ n: 0 }),
    reducer,
    draft: {
      reducer,
      begin: (start) => {
        calls.push('begin');
        const d = { n: start.n };
        return {
          apply: (e) => {
            if (e.type === 'bad') throw new ArborError(ErrorCodes.INVALID_INPUT, 'refused', { field: 'type' });
            calls.push(`apply ${e.seq}`);
            d.n += 1;
          },
          seal: () => {
            calls.push('seal');
            return Object.freeze({ ...d });
          },
        };
      },
    },
  };
  const rec = (seq: number, type = 'x'): JournalRecord => ({ lsn: seq, sid: SID, seq, ts: seq, type, v: 1, data: {} });
  // when
  const r = new SessionReplay(hooks, SID, { stateSchemaVersion: 1 });
  r.apply(rec(1));
  r.apply(rec(2));
  const mid = r.state;
  const again = r.state;
  r.apply(rec(3));
  r.apply(rec(4, 'bad'));
  r.apply(rec(5));
  // then
  assert.deepEqual(mid, { n: 2 });
  assert.equal(again, mid, 'a second read without new records seals nothing');
  assert.deepEqual(r.state, { n: 3 });
  assert.equal(r.report.status, 'failed');
  assert.equal(r.report.seq, 3);
  assert.deepEqual(calls, ['begin', 'apply 1', 'apply 2', 'seal', 'apply 3', 'seal']);
});
