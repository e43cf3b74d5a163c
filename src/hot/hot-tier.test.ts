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
  assert.deepEqual(hot.memory(), { entries: 0, approxBytes: 0 });
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

test('memory: grows with the states held and counts structure shared between sessions once', () => {
  // given
  const hot = new HotTier<State>();
  const big = state(1, 'x'.repeat(10_000));
  hot.store('a', big);
  const one = hot.memory();
  // when: a second session holds the very same state object
  hot.store('b', big);
  const two = hot.memory();
  // then: the second entry costs only its key and bookkeeping, not another 20 KB
  assert.equal(one.entries, 1);
  assert.ok(one.approxBytes > 20_000, `approxBytes ${one.approxBytes}`);
  assert.equal(two.entries, 2);
  assert.equal(two.approxBytes - one.approxBytes, 16 + 2 * 'b'.length + 8);
  // and a different large state does count in full
  hot.store('c', state(2, 'y'.repeat(10_000)));
  assert.ok(hot.memory().approxBytes - two.approxBytes > 20_000);
});
