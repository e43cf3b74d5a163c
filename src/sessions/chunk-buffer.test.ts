import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ChunkBuffer, type Chunk } from './chunk-buffer.ts';

type Op = { kind: 'push'; message: number; skip: boolean } | { kind: 'forget'; message: number } | { kind: 'since'; message: number; from: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('push' as const), message: fc.nat(2), skip: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('forget' as const), message: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('since' as const), message: fc.nat(2), from: fc.nat(12) }) },
);

test('ChunkBuffer keeps the newest maxChunks chunks over interleaved messages, gives those of a message from an index on, and forgets a message (against a list of chunk objects, property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 80 }), (max, ops) => {
      const buffer = new ChunkBuffer(max);
      let model: Chunk[] = [];
      const next = [0, 0, 0];
      for (const o of ops) {
        const messageId = `m${o.message}`;
        if (o.kind === 'push') {
          // A gap in the indexes (a chunk the buffer never saw) starts a new run.
          if (o.skip) next[o.message]! += 1;
          const chunk = { messageId, index: next[o.message]!, text: `${messageId}.${next[o.message]}` };
          next[o.message]! += 1;
          buffer.push(chunk.messageId, chunk.index, chunk.text);
          model.push(chunk);
          if (model.length > max) model = model.slice(model.length - max);
        } else if (o.kind === 'forget') {
          buffer.forget(messageId);
          model = model.filter((c) => c.messageId !== messageId);
        } else {
          assert.deepEqual(buffer.since(messageId, o.from), model.filter((c) => c.messageId === messageId && c.index >= o.from));
        }
      }
      for (const m of ['m0', 'm1', 'm2']) assert.deepEqual(buffer.since(m), model.filter((c) => c.messageId === m));
    }),
    { numRuns: 1000 },
  );
});
