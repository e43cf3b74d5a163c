import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Locs } from './locs.ts';

// Locs keeps records in an adopted array and then in chunks of 128 records (the first one growing
// from 4): every operation must read as one flat array would, across every chunk boundary.
type Op = { kind: 'push'; count: number } | { kind: 'drop'; records: number } | { kind: 'set'; at: number; value: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('push' as const), count: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('drop' as const), records: fc.integer({ min: 0, max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer() }) },
);

test('Locs reads, writes, drops and copies exactly as a flat array of its records', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 200 }), fc.array(op, { maxLength: 40 }), (adopted, ops) => {
      const model: number[] = [];
      for (let r = 0; r < adopted; r += 1) model.push(r + 1, 7, r * 100, 100);
      const locs = new Locs(Float64Array.from(model));
      let next = adopted + 1;
      for (const o of ops) {
        if (o.kind === 'push') {
          for (let k = 0; k < o.count; k += 1, next += 1) {
            locs.push(next, 9, next * 10, 10 + (next % 7));
            model.push(next, 9, next * 10, 10 + (next % 7));
          }
        } else if (o.kind === 'drop') {
          const n = Math.min(o.records, model.length / 4) * 4;
          locs.dropFirst(n);
          model.splice(0, n);
        } else if (model.length > 0) {
          const i = o.at % model.length;
          locs.set(i, o.value);
          model[i] = o.value;
        }
        assert.equal(locs.length, model.length);
        const cut = Math.floor(model.length / 8) * 4;
        assert.deepEqual([...locs.head(cut)], model.slice(0, cut));
      }
      assert.deepEqual([...locs.head(model.length)], model);
      for (let i = 0; i < model.length; i += 1) assert.equal(locs.at(i), model[i]);
    }),
    { numRuns: 300, seed: 11 },
  );
});
