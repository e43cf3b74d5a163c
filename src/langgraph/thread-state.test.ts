import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isSessionId } from '../core/ids.ts';
import type { JournalRecord } from '../core/record.ts';
import {
  LG_PUT,
  LG_WRITES,
  THREAD_HOOKS,
  initialThreadState,
  listDelta,
  listItems,
  reduceThread,
  threadSessionId,
  valueKey,
  writesKey,
  type PutEventData,
  type Ser,
  type ThreadState,
} from './thread-state.ts';

const item = (s: string): Ser => ['json', 's', JSON.stringify(s)];
let seq = 0;
const recorded: JournalRecord[] = [];
const rec = (type: string, data: unknown): JournalRecord => {
  const r: JournalRecord = { lsn: 0, sid: 't-x', seq: ++seq, ts: 0, type, v: 1, data: JSON.parse(JSON.stringify(data)) };
  recorded.push(r);
  return r;
};

/** Puts one checkpoint whose `messages` list is `messages`, as ArborSaver would: a delta against the previous put. */
function putList(state: ThreadState, id: string, messages: string[], prev: string | undefined, keep?: number): string {
  const key = valueKey('', 'messages', id);
  const base = prev === undefined ? undefined : listItems(state.vals, prev);
  const data: PutEventData = { tid: 'x', ns: '', id, cp: item('cp'), md: item('md'), vals: [['messages', key, listDelta(messages.map(item), base, prev)]], refs: { messages: key } };
  if (keep !== undefined) data.keep = keep;
  reduceThread(state, rec(LG_PUT, data));
  return key;
}

test('thread ids: a valid session id keeps its name behind t-; any other string maps to a session id, injectively', () => {
  assert.equal(threadSessionId('chat-42'), 't-chat-42');
  for (const odd of ['a b', 'ünï', '', '../etc', 'x'.repeat(200), '__proto__.x']) assert.ok(isSessionId(threadSessionId(odd)), odd);
  assert.notEqual(threadSessionId('a b'), threadSessionId('a  b'));
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => {
      fc.pre(a !== b);
      assert.ok(isSessionId(threadSessionId(a)));
      assert.notEqual(threadSessionId(a), threadSessionId(b));
    }),
  );
});

test('a list that grows is stored as the items it appends; every version rebuilds from its chain', () => {
  const state = initialThreadState();
  const versions: string[][] = [[], ['a'], ['a', 'b'], ['a', 'b', 'c'], ['a', 'x'], ['a', 'x', 'y', 'z']];
  let prev: string | undefined;
  const keys: string[] = [];
  for (const [i, v] of versions.entries()) keys.push((prev = putList(state, `c${i}`, v, prev)));
  // stored: only what each version adds past the prefix it shares with the one before
  const appended = keys.map((k) => (state.vals[k] as { l: Ser[] }).l.length);
  assert.deepEqual(appended, [0, 1, 1, 1, 1, 2]);
  for (const [i, k] of keys.entries()) assert.deepEqual(listItems(state.vals, k), versions[i]!.map(item), `version ${i}`);
});

test('the rebuilt list is the same with and without the cache of recent lists', () => {
  fc.assert(
    fc.property(fc.array(fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 6 }), { minLength: 1, maxLength: 12 }), (lists) => {
      const state = initialThreadState();
      let prev: string | undefined;
      const keys = lists.map((l, i) => (prev = putList(state, `c${i}`, l, prev)));
      const cache = new Map<string, Ser[]>();
      for (const [i, k] of keys.entries()) {
        assert.deepEqual(listItems(state.vals, k), lists[i]!.map(item));
        const cached = listItems(state.vals, k, cache)!;
        assert.deepEqual(cached, lists[i]!.map(item));
        cache.set(k, cached);
      }
    }),
  );
});

test('retention keeps the newest N checkpoints; a kept list whose base was dropped is rebuilt whole', () => {
  const state = initialThreadState();
  let prev: string | undefined;
  const all: string[] = [];
  for (let i = 0; i < 10; i += 1) {
    all.push(`m${i}`);
    prev = putList(state, `c${i}`, all.slice(), prev, 3);
    reduceThread(state, rec(LG_WRITES, { tid: 'x', ns: '', id: `c${i}`, task: 't', path: '', w: [[0, 'ch', item('w')]] }));
  }
  assert.deepEqual(state.cps.map((c) => c.id), ['c7', 'c8', 'c9']);
  assert.equal(Object.keys(state.vals).length, 3);
  assert.deepEqual(Object.keys(state.writes).sort(), ['c7', 'c8', 'c9'].map((id) => writesKey('', id)));
  const oldest = state.vals[valueKey('', 'messages', 'c7')] as { l: Ser[]; b?: string };
  assert.equal(oldest.b, undefined);
  assert.equal(oldest.l.length, 8);
  assert.deepEqual(listItems(state.vals, valueKey('', 'messages', 'c9')), all.map(item));
});

test('replay through the hooks, from the stored (JSON) events, reaches the state the live reducer built', () => {
  const live = initialThreadState();
  recorded.length = 0;
  let prev: string | undefined;
  const all: string[] = [];
  for (let i = 0; i < 8; i += 1) {
    all.push(`m${i}`);
    if (i === 5) all[1] = 'edited';
    prev = putList(live, `c${i}`, all.slice(), prev, 4);
  }
  let replayed = THREAD_HOOKS.initialState('t-x');
  for (const r of recorded) replayed = THREAD_HOOKS.reducer(replayed, r);
  assert.deepEqual(replayed, JSON.parse(JSON.stringify(live)));
  assert.deepEqual(listItems(replayed.vals, valueKey('', 'messages', 'c7')), all.map(item));
});

test('writes: a regular write is kept once per task and index; a special (negative index) one is replaced', () => {
  const state = initialThreadState();
  const w = (idx: number, v: string) => reduceThread(state, rec(LG_WRITES, { tid: 'x', ns: 'n', id: 'c', task: 't', path: '', w: [[idx, 'ch', item(v)]] }));
  w(0, 'first');
  w(0, 'retry');
  w(-1, 'err1');
  w(-1, 'err2');
  const stored = state.writes[writesKey('n', 'c')]!;
  assert.deepEqual(stored.map((x) => [x.idx, JSON.parse(x.val[2])]), [[0, 'first'], [-1, 'err2']]);
  assert.throws(() => reduceThread(state, rec('chat.message', {})), /unknown LangGraph thread event type/);
});
