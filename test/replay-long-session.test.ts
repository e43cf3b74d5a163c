/**
 * A restart replays long sessions (thousands of events, no snapshot) to the
 * same state the pure reducer gives, through the public API: createArbor on
 * the data directory, a session loaded on access and one by the background
 * pass. Replay builds each state in place (a draft); these sessions hold every
 * kind of event, tool calls finished and approved after their turn included.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createArbor, initialSessionState, type Arbor, reduceSession, type JournalRecord, type SessionState, type Store } from '../src/index.ts';
import { recordsOf, sessionEventArb, turnArb, type GeneratedEvent } from './helpers/session-events.ts';
import { tempDir } from './helpers/tmp.ts';

/** Many events of every kind, then what ends every turn, call and command left open (so a restart repairs nothing). */
function longHistory(sid: string, seed: number, turns: number): GeneratedEvent[] {
  const chunks = fc.sample(fc.oneof({ weight: 4, arbitrary: turnArb }, { weight: 1, arbitrary: sessionEventArb.map((e) => [e]) }), { seed, numRuns: turns });
  // Ids of their own for most turns (a long session has thousands of tool calls), shared by every tenth.
  const events = chunks.flatMap((chunk, c) => (c % 10 === 0 ? chunk : chunk.map((e) => ({ ...e, data: ownIds(e.data, c) }) as GeneratedEvent))).filter((e) => e.type !== 'forked_from' && e.type !== 'fork_created');
  // Close what is open in the fold of them: a stream, tool calls and commands in flight.
  const state = recordsOf(sid, events).reduce(reduceSession, initialSessionState(sid));
  for (const [toolCallId, call] of Object.entries(state.toolCallsInFlight ?? {})) events.push({ type: 'tool_call_finished', data: { messageId: call.messageId, toolCallId, output: 'closed' } });
  for (const [commandId, call] of Object.entries(state.commandsInFlight ?? {})) events.push({ type: 'command_finished', data: { commandId, command: call.command, outcome: 'ok' } });
  if (state.stream.status === 'streaming') events.push({ type: 'assistant_response_completed', data: { messageId: state.stream.messageId, requestMessageId: state.stream.requestMessageId, content: 'closed' } });
  // A last answered request: no request before it is left waiting for an answer.
  events.push(
    { type: 'user_message_sent', data: { messageId: `${sid}-last`, content: 'one more' } },
    { type: 'assistant_stream_started', data: { messageId: `${sid}-last-answer`, requestMessageId: `${sid}-last`, provider: 'mock' } },
    { type: 'assistant_response_completed', data: { messageId: `${sid}-last-answer`, requestMessageId: `${sid}-last`, content: 'done' } },
  );
  return events;
}

const ID_KEYS = new Set(['messageId', 'requestMessageId', 'toolCallId', 'approvalId', 'commandId', 'executionId', 'noticeId']);

/** `data` with its ids suffixed by `c`. */
function ownIds(data: object, c: number): object {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, ID_KEYS.has(k) && typeof v === 'string' ? `${v}-${c}` : v]));
}

function assertFrozenLists(state: SessionState, sid: string): void {
  assert.ok(Object.isFrozen(state) && Object.isFrozen(state.messages) && Object.isFrozen(state.toolExecutions) && Object.isFrozen(state.commands), `${sid}: state and lists frozen`);
  for (const m of state.messages) assert.ok(Object.isFrozen(m) && Object.isFrozen(m.parts), `${sid}: message ${m.id} frozen`);
}

test('sessions of thousands of events come back after a restart with the state the pure reducer gives (on access and by the background pass)', { timeout: 120_000 }, async (t) => {
  const { dir, cleanup } = tempDir('arbor-replay-long-');
  let arbor: Arbor | undefined;
  t.after(async () => {
    await arbor?.close();
    cleanup();
  });
  // given: two long sessions written to the journal, no snapshot (the events bypass the session actors)
  const sids = ['long-a', 'long-b'];
  const histories = sids.map((sid, i) => longHistory(sid, 1000 + i, 900));
  const first = await createArbor({ dataDir: dir, snapshotEveryEvents: 1_000_000_000 });
  const store = first.backend as Store<SessionState>;
  const records: JournalRecord[][] = sids.map(() => []);
  // Interleaved, as a busy server's log is; all in flight at once (each session's in call order).
  const order = Array.from({ length: Math.max(...histories.map((h) => h.length)) }, (_, k) => sids.map((sid, i) => ({ sid, i, e: histories[i]![k] }))).flat();
  const results = await Promise.all(order.map(({ sid, e }) => (e === undefined ? undefined : store.append({ sid, type: e.type, data: e.data }))));
  for (const [k, { sid, i, e }] of order.entries()) {
    const r = results[k];
    if (e !== undefined && r !== undefined) records[i]!.push({ lsn: r.lsn, sid, seq: r.seq, ts: r.ts, type: e.type, v: 1, data: e.data });
  }
  await first.close();
  for (const h of histories) assert.ok(h.length >= 2_000, `a long history (${h.length} events)`);
  const expected = sids.map((sid, i) => records[i]!.reduce(reduceSession, initialSessionState(sid)));

  // when: restarted; the first session is loaded on access, the other by the background pass
  const restarted = await createArbor({ dataDir: dir, snapshotEveryEvents: 1_000_000_000 });
  arbor = restarted;
  const onAccess = await restarted.session(sids[0]!).load();
  const report = await restarted.whenRecovered();

  // then
  assert.deepEqual(onAccess, expected[0]);
  for (const [i, sid] of sids.entries()) {
    const state = restarted.session(sid).state;
    assert.deepEqual(state, expected[i], sid);
    assert.equal(state.seq, histories[i]!.length, `${sid}: nothing repaired, nothing lost`);
    assertFrozenLists(state, sid);
    const r = report.sessions.find((x) => x.sid === sid);
    assert.equal(r?.status, 'recovered', sid);
    assert.equal(r?.snapshotSeq, 0, `${sid}: replayed from the journal, no snapshot`);
    assert.equal(r?.replayed, histories[i]!.length, sid);
  }
  // the histories hold what makes replay long: tool calls in messages, finished after their turn
  assert.ok(expected[0]!.messages.some((m) => m.parts.some((p) => p.type === 'tool' && p.state === 'output-available')));
});
