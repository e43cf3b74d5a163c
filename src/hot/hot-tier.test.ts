import { test } from 'node:test';
import assert from 'node:assert/strict';
import { approxSizeBytes, HotTier, isIdleExpired } from './hot-tier.ts';

interface State {
  seq: number;
  messages: readonly string[];
}

/** A clock the test moves by hand. */
function manualClock(start = 1_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function state(seq: number, ...messages: string[]): State {
  return Object.freeze({ seq, messages: Object.freeze(messages) });
}

test('isIdleExpired: expired exactly at the TTL, not one ms before', () => {
  assert.equal(isIdleExpired(1000, 1000 + 4999, 5000), false);
  assert.equal(isIdleExpired(1000, 1000 + 5000, 5000), true);
  assert.equal(isIdleExpired(1000, 1000 + 9999, 5000), true);
});

test('isIdleExpired: without a TTL nothing expires, and a clock that went backwards does not expire', () => {
  assert.equal(isIdleExpired(0, Number.MAX_SAFE_INTEGER, undefined), false);
  assert.equal(isIdleExpired(10_000, 1_000, 5000), false);
});

test('store then retrieve returns the same reference; peek and has see it; unknown ids are undefined', () => {
  // given
  const hot = new HotTier<State>();
  const s = state(1, 'hi');
  // when
  hot.store('s1', s);
  // then
  assert.equal(hot.retrieve('s1'), s);
  assert.equal(hot.peek('s1'), s);
  assert.equal(hot.has('s1'), true);
  assert.equal(hot.has('nope'), false);
  assert.equal(hot.retrieve('nope'), undefined);
  assert.equal(hot.peek('nope'), undefined);
  assert.equal(hot.size, 1);
});

test('store replaces the previous state of the same session', () => {
  const hot = new HotTier<State>();
  hot.store('s1', state(1));
  const newer = state(2, 'x');
  hot.store('s1', newer);
  assert.equal(hot.retrieve('s1'), newer);
  assert.equal(hot.size, 1);
});

test('delete removes one entry and says whether it was there', () => {
  const hot = new HotTier<State>();
  hot.store('a', state(1));
  hot.store('b', state(1));
  assert.equal(hot.delete('a'), true);
  assert.equal(hot.delete('a'), false);
  assert.equal(hot.has('a'), false);
  assert.deepEqual([...hot.keys()], ['b']);
});

test('storeMany stores every pair, later pairs win, and returns the number of pairs', () => {
  const hot = new HotTier<State>();
  const last = state(3);
  const n = hot.storeMany([
    ['a', state(1)],
    ['b', state(2)],
    ['a', last],
  ]);
  assert.equal(n, 3);
  assert.equal(hot.size, 2);
  assert.equal(hot.peek('a'), last);
});

test('storeMany accepts any iterable, including a generator', () => {
  const hot = new HotTier<State>();
  function* pairs(): Generator<readonly [string, State]> {
    for (let i = 0; i < 5; i++) yield [`s${i}`, state(i)];
  }
  assert.equal(hot.storeMany(pairs()), 5);
  assert.deepEqual([...hot.keys()], ['s0', 's1', 's2', 's3', 's4']);
});

test('cleanupExpired(ttl=1000): removes entries idle for the TTL and returns their ids', () => {
  // given
  const clock = manualClock();
  const hot = new HotTier<State>({ idleTtlMs: 1000, now: clock.now });
  hot.store('old', state(1));
  clock.advance(600);
  hot.store('young', state(1));
  clock.advance(400); // old idle 1000, young idle 400
  // when
  const expired = hot.cleanupExpired();
  // then
  assert.deepEqual(expired, ['old']);
  assert.equal(hot.has('old'), false);
  assert.equal(hot.has('young'), true);
});

test('cleanupExpired: retrieve counts as an access, peek and has do not', () => {
  // given
  const clock = manualClock();
  const hot = new HotTier<State>({ idleTtlMs: 1000, now: clock.now });
  hot.store('read', state(1));
  hot.store('peeked', state(1));
  clock.advance(900);
  // when
  hot.retrieve('read');
  hot.peek('peeked');
  hot.has('peeked');
  clock.advance(100);
  // then
  assert.deepEqual(hot.cleanupExpired(), ['peeked']);
  assert.deepEqual(hot.cleanupExpired(clock.now() + 899), []);
  assert.deepEqual(hot.cleanupExpired(clock.now() + 900), ['read']);
});

test('cleanupExpired: an explicit now overrides the clock', () => {
  const clock = manualClock(0);
  const hot = new HotTier<State>({ idleTtlMs: 50, now: clock.now });
  hot.store('a', state(1));
  assert.deepEqual(hot.cleanupExpired(49), []);
  assert.deepEqual(hot.cleanupExpired(50), ['a']);
});

test('cleanupExpired without a TTL removes nothing, however old', () => {
  const clock = manualClock();
  const hot = new HotTier<State>({ now: clock.now });
  hot.store('a', state(1));
  clock.advance(365 * 24 * 3600 * 1000);
  assert.deepEqual(hot.cleanupExpired(), []);
  assert.equal(hot.size, 1);
});

test('storeMany stamps every entry with one access time, read once', () => {
  // given: a clock that moves on every read
  let t = 0;
  const hot = new HotTier<State>({ idleTtlMs: 100, now: () => t++ });
  // when
  hot.storeMany([
    ['a', state(1)],
    ['b', state(1)],
    ['c', state(1)],
  ]);
  // then: all three were stamped 0, so all expire together at 100
  assert.deepEqual(hot.cleanupExpired(99), []);
  assert.deepEqual(hot.cleanupExpired(100).sort(), ['a', 'b', 'c']);
});

test('constructor: a non-positive or non-finite idleTtlMs is a RangeError, a non-function now a TypeError', () => {
  for (const idleTtlMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new HotTier({ idleTtlMs }), RangeError, `idleTtlMs=${idleTtlMs}`);
  }
  assert.throws(() => new HotTier({ now: 5 as unknown as () => number }), TypeError);
  assert.equal(new HotTier({ idleTtlMs: 1 }).idleTtlMs, 1);
});

test('store with a non-string session id is a TypeError', () => {
  const hot = new HotTier<State>();
  assert.throws(() => hot.store(42 as unknown as string, state(1)), TypeError);
  assert.throws(() => hot.storeMany([[undefined as unknown as string, state(1)]]), TypeError);
});

test('keys is a live view that tolerates deletion while iterating; entries pairs ids with states', () => {
  const hot = new HotTier<State>();
  hot.storeMany([
    ['a', state(1)],
    ['b', state(2)],
    ['c', state(3)],
  ]);
  for (const key of hot.keys()) if (key !== 'b') hot.delete(key);
  assert.deepEqual([...hot.keys()], ['b']);
  assert.deepEqual(
    [...hot.entries()].map(([k, s]) => [k, s.seq]),
    [['b', 2]],
  );
});

test('clear removes everything', () => {
  const hot = new HotTier<State>();
  hot.storeMany([
    ['a', state(1)],
    ['b', state(2)],
  ]);
  hot.clear();
  assert.equal(hot.size, 0);
  const memory = hot.memory();
  assert.deepEqual([memory.entries, memory.approxBytes, memory.estimated], [0, 0, 0]);
});

test('approxSizeBytes: strings 2/char + 16, numbers 8, booleans 4, objects 16 + 8 per key', () => {
  assert.equal(approxSizeBytes('abcd'), 16 + 8);
  assert.equal(approxSizeBytes(''), 16);
  assert.equal(approxSizeBytes(3.5), 8);
  assert.equal(approxSizeBytes(true), 4);
  assert.equal(approxSizeBytes(null), 0);
  assert.equal(approxSizeBytes(undefined), 0);
  assert.equal(approxSizeBytes({}), 16);
  assert.equal(approxSizeBytes({ a: 1, b: 'xy' }), 16 + 8 + 8 + 8 + (16 + 4));
  assert.equal(approxSizeBytes([1, 2, 3]), 16 + 3 * 8 + 3 * 8);
  assert.equal(approxSizeBytes(new Uint8Array(100)), 16 + 100);
});

test('approxSizeBytes: a shared object is counted once, and a cycle terminates', () => {
  const shared = { text: 'x'.repeat(1000) };
  const sharedSize = approxSizeBytes(shared);
  const twice = { a: shared, b: shared };
  assert.equal(approxSizeBytes(twice), 16 + 2 * 8 + sharedSize);

  const cyclic: { self?: unknown; n: number } = { n: 1 };
  cyclic.self = cyclic;
  assert.equal(approxSizeBytes(cyclic), 16 + 8 + 8 + 8);
});

test('approxSizeBytes: a 100,000-deep chain does not overflow the stack', () => {
  let chain: { next: unknown } = { next: null };
  for (let i = 0; i < 100_000; i++) chain = { next: chain };
  assert.equal(approxSizeBytes(chain), 100_001 * (16 + 8));
});

test('memory: grows with the states held; a state object held by two sessions counts for each', () => {
  // given
  const hot = new HotTier<State>();
  const big = state(1, 'x'.repeat(10_000));
  hot.store('a', big);
  const one = hot.memory();
  // when: a second session holds the very same state object
  hot.store('b', big);
  const two = hot.memory();
  // then: each state is sized on its own (structure shared between sessions is no longer counted once)
  assert.equal(one.entries, 1);
  assert.ok(one.approxBytes > 20_000, `approxBytes ${one.approxBytes}`);
  assert.equal(two.entries, 2);
  assert.equal(two.approxBytes - one.approxBytes, keyBytes('b') + approxSizeBytes(big));
  // and a different large state counts in full
  hot.store('c', state(2, 'y'.repeat(10_000)));
  assert.ok(hot.memory().approxBytes - two.approxBytes > 20_000);
});

/** What memory() counts per entry besides its state: the key (16 + 2 per char) and the access time (8). */
function keyBytes(sessionId: string): number {
  return 16 + 2 * sessionId.length + 8;
}

/** The figure of a walk over every state, each on its own: what the estimate converges to. */
function fullWalk(hot: HotTier<unknown>): number {
  let total = 0;
  for (const [sessionId, s] of hot.entries()) total += keyBytes(sessionId) + approxSizeBytes(s);
  return total;
}

interface Chat {
  seq: number;
  messages: readonly { id: string; role: string; parts: readonly { type: string; text: string }[]; at: number }[];
}

/** A chat state of `n` messages: 3 + 8n values (the state, seq, the array; per message the object, id, role, parts, part, type, text, at). */
function chat(seq: number, n: number, text = 'hello there'): Chat {
  const messages = Array.from({ length: n }, (_, i) => Object.freeze({ id: `m${i}`, role: i % 2 === 0 ? 'user' : 'assistant', parts: Object.freeze([Object.freeze({ type: 'text', text: `${text} ${i}` })]), at: 1_700_000_000_000 + i }));
  return Object.freeze({ seq, messages: Object.freeze(messages) });
}

test('memory: each call visits at most sizingBudget values, however large the table (2,000 sessions × 100 messages)', () => {
  // given: about 1.6 million values in all, 80 times the budget
  const budget = 20_000;
  const hot = new HotTier<Chat>({ sizingBudget: budget });
  for (let i = 0; i < 2_000; i++) hot.store(`s${i}`, chat(i, 100));
  // when / then: every call stays within the budget, and finishes some states
  for (let call = 0; call < 20; call++) {
    const m = hot.memory();
    assert.ok(m.walked <= budget, `call ${call}: walked ${m.walked} > budget ${budget}`);
    assert.ok(m.walked > 0 && m.sized > 0, `call ${call}: walked ${m.walked}, sized ${m.sized}`);
    assert.equal(m.entries, 2_000);
    assert.ok(m.estimated > 0, 'not every state is sized after 20 calls');
  }
});

test('memory: a state larger than the budget is sized across calls, each within the budget', () => {
  // given: one session of 5,000 messages (40,003 values) and a budget of 1,000
  const hot = new HotTier<Chat>({ sizingBudget: 1_000 });
  const huge = chat(1, 5_000);
  hot.store('huge', huge);
  // when
  const calls: number[] = [];
  let m = hot.memory();
  calls.push(m.walked);
  while (m.estimated > 0) {
    assert.equal(m.sized, 0);
    m = hot.memory();
    calls.push(m.walked);
    assert.ok(calls.length < 1_000, 'the walk never finished');
  }
  // then
  assert.ok(calls.every((w) => w <= 1_000), `walked per call: max ${Math.max(...calls)}`);
  assert.equal(calls.length, 41, 'calls for 40,003 values');
  assert.equal(m.sized, 1);
  assert.equal(m.approxBytes, keyBytes('huge') + approxSizeBytes(huge));
});

test('memory: with nothing stored, the estimate converges to the full walk, and tracks it from the first call', () => {
  // given: 500 sessions of similar size, a budget that sizes a few dozen per call
  const hot = new HotTier<Chat>({ sizingBudget: 30_000 });
  for (let i = 0; i < 500; i++) hot.store(`s${i}`, chat(i, 90 + (i % 20)));
  const full = fullWalk(hot);
  // when
  const first = hot.memory();
  let m = first;
  let calls = 1;
  while (m.estimated > 0 && calls < 100) {
    m = hot.memory();
    calls++;
  }
  // then: the first call sized a part and estimated the rest from its mean
  assert.ok(first.sized > 0 && first.sized < 500, `first call sized ${first.sized}`);
  assert.equal(first.estimated, 500 - first.sized);
  assert.ok(Math.abs(first.approxBytes - full) / full < 0.1, `first estimate ${first.approxBytes} vs full walk ${full}`);
  // and the figure is the full walk's once every entry is sized, in about values ÷ budget calls
  assert.equal(m.estimated, 0);
  assert.equal(m.approxBytes, full);
  assert.ok(calls <= Math.ceil((500 * (3 + 8 * 110)) / 30_000) + 1, `${calls} calls`);
  // and further calls walk nothing and change nothing
  assert.deepEqual(hot.memory(), { entries: 500, approxBytes: full, estimated: 0, walked: 0, sized: 0 });
});

/** Calls memory() until nothing waits to be sized; returns the last figures. */
function settle(hot: HotTier<Chat>): ReturnType<HotTier<Chat>['memory']> {
  let m = hot.memory();
  for (let i = 0; m.estimated > 0; i++) {
    assert.ok(i < 10_000, 'the estimate never settled');
    m = hot.memory();
  }
  return m;
}

test('memory: follows a session that grows, and one that is removed', () => {
  // given: a settled table
  const hot = new HotTier<Chat>({ sizingBudget: 5_000 });
  for (let i = 0; i < 100; i++) hot.store(`s${i}`, chat(i, 50));
  const before = settle(hot).approxBytes;
  assert.equal(before, fullWalk(hot));
  // when: one session grows from 50 to 2,000 messages
  const grown = chat(2, 2_000, 'a longer answer than before');
  hot.store('s7', grown);
  // then: it waits to be sized, and once sized the figure is the full walk's again
  assert.equal(hot.memory().estimated, 1);
  const after = settle(hot).approxBytes;
  assert.equal(after, fullWalk(hot));
  assert.equal(after - before, approxSizeBytes(grown) - approxSizeBytes(chat(7, 50)));
  // when: sessions go (deleted, expired by clear of one), the figure drops by their share at once
  hot.delete('s7');
  assert.equal(hot.memory().approxBytes, fullWalk(hot));
});

test('memory: a state replaced while it is being sized counts its old size, then is sized again', () => {
  // given: a budget smaller than the state, so its walk spans calls
  const hot = new HotTier<Chat>({ sizingBudget: 1_000 });
  const old = chat(1, 500);
  hot.store('s', old);
  assert.equal(hot.memory().sized, 0);
  // when: the session moves on mid-walk
  const newer = chat(2, 800);
  hot.store('s', newer);
  // then: the walk of the old state finishes (its size stands in), and the new state is sized next
  let m = hot.memory();
  while (m.sized === 0) m = hot.memory();
  assert.equal(m.approxBytes, keyBytes('s') + approxSizeBytes(old));
  assert.equal(m.estimated, 1);
  assert.equal(settle(hot).approxBytes, keyBytes('s') + approxSizeBytes(newer));
});

test('memory: deleting the session being sized, or clearing, leaves figures of what is held', () => {
  const hot = new HotTier<Chat>({ sizingBudget: 1_000 });
  hot.store('a', chat(1, 500));
  hot.store('b', chat(1, 10));
  assert.equal(hot.memory().sized, 0); // a's walk is under way
  assert.equal(hot.delete('a'), true);
  assert.equal(settle(hot).approxBytes, fullWalk(hot));
  hot.clear();
  hot.store('c', chat(1, 10));
  assert.equal(settle(hot).approxBytes, fullWalk(hot));
});

test('constructor: sizingBudget must be a positive integer', () => {
  for (const sizingBudget of [0, -5, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new HotTier({ sizingBudget }), RangeError, `sizingBudget=${sizingBudget}`);
  }
});
