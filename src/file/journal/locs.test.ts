import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkIndexLocs, encodeIndexLocs, Locs } from './locs.ts';

// Locs keeps records in an adopted array (or the index's bytes for it) and then in chunks of 128 records (the first one growing
// from 4): every operation must read as one flat array would, across every chunk boundary.
type Op = { kind: 'push'; count: number } | { kind: 'drop'; records: number } | { kind: 'set'; at: number; value: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('push' as const), count: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('drop' as const), records: fc.integer({ min: 0, max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer() }) },
);

test('Locs reads, writes, drops and copies exactly as a flat array of its records', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 200 }), fc.boolean(), fc.array(op, { maxLength: 40 }), (adopted, encoded, ops) => {
      const model: number[] = [];
      for (let r = 0; r < adopted; r += 1) model.push(r + 1, 7, r * 100, 100);
      // adopted as a decoded array, or as the journal index's bytes (segment position 0 = id 7)
      const locs = encoded ? adopt(encode(Array.from({ length: adopted }, (_, r) => [r + 1, 0, r * 100, 100])), [7]) : new Locs(Float64Array.from(model));
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

/** The index's bytes for locations [seq, segment position, offset, frameBytes]. */
function encode(rows: number[][]): Uint8Array {
  const positions = new Map(Array.from({ length: 8 }, (_, i) => [i, i] as [number, number]));
  const buf = encodeIndexLocs(Float64Array.from(rows.flat()), positions);
  assert.ok(buf !== undefined);
  // at an odd offset in a bigger buffer, as msgpack hands a bin out
  const outer = Buffer.alloc(buf.length + 3);
  outer.set(buf, 3);
  return outer.subarray(3);
}

/** Locs.fromIndex as the index's decoder calls it (after checking the run headers). */
function adopt(bytes: Uint8Array, segIds: number[]): Locs {
  const count = checkIndexLocs(bytes, segIds.length, new Float64Array(segIds.length));
  assert.ok(count >= 0, 'the encoded locations check out');
  return Locs.fromIndex(bytes, segIds, count);
}

function all(l: Locs): number[] {
  return Array.from({ length: l.length }, (_, i) => l.at(i));
}

test('locations adopted from the index decode on first use to what they encode, followed by those pushed since', () => {
  const segIds = [1, 500, 900];
  const l = adopt(encode([[1, 0, 32, 40], [2, 1, 72, 40], [3, 2, 112, 40]]), segIds);
  // pushes and the oldest segment do not decode them
  l.push(4, 900, 152, 40);
  assert.equal(l.firstSegment(), 1);
  assert.deepEqual(all(l), [1, 1, 32, 40, 2, 500, 72, 40, 3, 900, 112, 40, 4, 900, 152, 40]);
  l.dropFirst(8);
  assert.equal(l.firstSegment(), 900);
  assert.deepEqual(Array.from(l.head(8)), [3, 900, 112, 40, 4, 900, 152, 40]);
});

test('locations in deleted segments are dropped, encoded or not', () => {
  const segIds = [1, 500, 900];
  const rows = [[1, 0, 32, 40], [2, 1, 72, 40], [3, 2, 112, 40]];
  const lazy = adopt(encode(rows), segIds);
  lazy.dropSegments(new Set([1]));
  assert.equal(lazy.firstSegment(), 500);
  assert.deepEqual(all(lazy), [2, 500, 72, 40, 3, 900, 112, 40]);
  const pushedFirst = adopt(encode(rows), segIds);
  pushedFirst.push(4, 900, 152, 40);
  pushedFirst.dropSegments(new Set([1, 500]));
  assert.deepEqual(all(pushedFirst), [3, 900, 112, 40, 4, 900, 152, 40]);
  const decoded = new Locs(Float64Array.from([1, 1, 32, 40, 2, 500, 72, 40]));
  decoded.dropSegments(new Set([1]));
  assert.deepEqual(all(decoded), [2, 500, 72, 40]);
  const empty = adopt(encode([[1, 0, 32, 40]]), segIds);
  empty.dropSegments(new Set([1]));
  assert.equal(empty.firstSegment(), undefined);
  assert.equal(empty.length, 0);
});

test('the index encoding (version 2) gives back every location list exactly, with deleted segments left out', () => {
  const row = fc.record({ seqStep: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 2 ** 40 })), segStep: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 }) }), offStep: fc.integer({ min: -300, max: 2 ** 33 }), frame: fc.integer({ min: 0, max: 2 ** 31 }) });
  fc.assert(
    fc.property(fc.array(row, { maxLength: 60 }), fc.subarray([0, 1, 2, 3, 4, 5, 6, 7]), (steps, gone) => {
      const rows: number[][] = [];
      let seq = 0;
      let seg = 0;
      let off = 32;
      for (const s of steps) {
        seq += s.seqStep;
        if (s.segStep > 0 && seg + s.segStep < 8) {
          seg += s.segStep;
          off = 32;
        }
        off = Math.max(0, off + s.offStep);
        rows.push([seq, seg, off, s.frame]);
      }
      const segIds = [10, 20, 30, 40, 50, 60, 70, 80];
      const counts = new Float64Array(8);
      const bytes = encode(rows);
      assert.equal(checkIndexLocs(bytes, 8, counts), rows.length);
      for (let p = 0; p < 8; p += 1) assert.equal(counts[p], rows.filter((r) => r[1] === p).length);
      assert.deepEqual(all(adopt(bytes, segIds)), rows.flatMap((r) => [r[0]!, segIds[r[1]!]!, r[2]!, r[3]!]));
      const deleted = new Set(gone.map((p) => segIds[p]!));
      const kept = rows.filter((r) => !deleted.has(segIds[r[1]!]!));
      const dropped = adopt(bytes, segIds);
      dropped.dropSegments(deleted);
      assert.equal(dropped.firstSegment(), kept.length === 0 ? undefined : segIds[kept[0]![1]!]);
      assert.deepEqual(all(dropped), kept.flatMap((r) => [r[0]!, segIds[r[1]!]!, r[2]!, r[3]!]));
    }),
    { numRuns: 300, seed: 12 },
  );
});

test('encoded locations that are not well formed are refused by the run check, and decode without throwing', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      const n = checkIndexLocs(bytes, 3, new Float64Array(3));
      if (n < 0) return;
      // run headers that check out: every location decodes to a number, whatever the record bytes are
      const l = Locs.fromIndex(bytes, [1, 2, 3], n);
      for (const v of all(l)) assert.ok(Number.isFinite(v));
    }),
    { numRuns: 2000, seed: 13 },
  );
});
