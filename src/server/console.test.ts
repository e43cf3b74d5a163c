import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatencyRing } from './console.ts';

test('LatencyRing: one sample per window, mean and max per kind, idle windows as zero counts, only the newest `keep` windows', () => {
  let now = 1_000_000;
  const ring = new LatencyRing({ windowMs: 10_000, keep: 3, now: () => now });
  ring.add('journal', 2);
  ring.add('journal', 4);
  ring.add('ack', 10);
  now += 10_000; // the next window stays empty
  now += 10_000;
  ring.add('ack', 1);
  const s = ring.samples();
  assert.deepEqual(
    s.map((x) => [x.t, x.journal, x.ack]),
    [
      [1_000_000, { count: 2, avgMs: 3, maxMs: 4 }, { count: 1, avgMs: 10, maxMs: 10 }],
      [1_010_000, { count: 0, avgMs: 0, maxMs: 0 }, { count: 0, avgMs: 0, maxMs: 0 }],
      [1_020_000, { count: 0, avgMs: 0, maxMs: 0 }, { count: 1, avgMs: 1, maxMs: 1 }],
    ],
  );
  // far later: the old windows are gone, every window idle
  now += 1_000_000;
  ring.add('journal', 7);
  assert.deepEqual(ring.samples().map((x) => x.journal.count), [0, 0, 1]);
});
