import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createArbor, MockProvider, type Arbor } from '../src/index.ts';
import { parseLastEventId, planReplay } from '../src/server/app.ts';
import { StreamIndex } from '../src/server/stream-index.ts';
import { tempDir } from './helpers/tmp.ts';

// What a reconnecting SSE client is sent (planReplay), on a real runtime, for the positions the e2e tests do not reach.

async function withArbor(options: Parameters<typeof createArbor>[0], fn: (arbor: Arbor) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-replay-');
  const arbor = await createArbor({ dataDir: join(dir, 'data'), llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), ...options });
  try {
    await fn(arbor);
  } finally {
    await arbor.close();
    cleanup();
  }
}

test('Last-Event-ID parsing: a seq, a chunk id, nothing; anything else is ARBOR_INVALID_INPUT naming the header', () => {
  assert.deepEqual(parseLastEventId(undefined), { kind: 'fresh' });
  assert.deepEqual(parseLastEventId(''), { kind: 'fresh' });
  assert.deepEqual(parseLastEventId('42'), { kind: 'seq', seq: 42 });
  assert.deepEqual(parseLastEventId('abc-1:7'), { kind: 'chunk', messageId: 'abc-1', index: 7 });
  for (const bad of ['-1', '1.5', 'abc', 'a:b', '../x:1', `${'9'.repeat(20)}`]) {
    assert.throws(() => parseLastEventId(bad), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'Last-Event-ID', bad);
  }
});

test('a client ahead of the session (another data directory) starts over from the state', async () => {
  await withArbor({}, async (arbor) => {
    const s = arbor.session('ahead');
    await s.changeConfig('k', 1);
    const plan = await planReplay(s, { kind: 'seq', seq: 99 }, new StreamIndex());
    assert.equal(plan.reset?.seq, 1);
    assert.equal(plan.clientSeq, 1);
    assert.deepEqual(plan.updates, []);
  });
});

test('a client behind events a snapshot released starts over from the state; one within the journal gets exactly the missing events', async () => {
  await withArbor({ snapshotEveryEvents: 1000 }, async (arbor) => {
    const s = arbor.session('old');
    // given events 1..6 released by a snapshot (passivation takes one, at once, not in the background)
    for (let i = 1; i <= 6; i += 1) await s.changeConfig('k', i);
    assert.equal(await arbor.passivate('old'), true);
    // and events 7..12 after it, still in the journal
    for (let i = 7; i <= 12; i += 1) await s.changeConfig('k', i);
    const retained = await s.events({ fromSeq: 1 });
    assert.deepEqual(retained.map((e) => e.seq), [7, 8, 9, 10, 11, 12], 'the snapshot released exactly the first six events');
    // when a client at seq 0 reconnects: a reset
    const behind = await planReplay(s, { kind: 'seq', seq: 0 }, new StreamIndex());
    assert.equal(behind.reset?.seq, 12);
    // when a client within what is retained reconnects: exactly the events after its position
    const from = retained[0]!.seq;
    const within = await planReplay(s, { kind: 'seq', seq: from }, new StreamIndex());
    assert.equal(within.reset, undefined);
    assert.deepEqual(within.updates.map((u) => (u.kind === 'event' ? u.event.seq : -1)), Array.from({ length: 12 - from }, (_, i) => from + 1 + i));
  });
});
