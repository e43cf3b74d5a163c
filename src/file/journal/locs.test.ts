import { test } from 'node:test';
import assert from 'node:assert/strict';
import { INDEX_LOC_BYTES, Locs } from './locs.ts';

/** The index's bytes for locations [seq, segment position, offset, frameBytes]. */
function encode(rows: number[][]): Uint8Array {
  const buf = Buffer.alloc(rows.length * INDEX_LOC_BYTES);
  rows.forEach((r, i) => r.forEach((v, j) => buf.writeUInt32LE(v, i * INDEX_LOC_BYTES + j * 4)));
  // at an odd offset in a bigger buffer, as msgpack hands a bin out
  const outer = Buffer.alloc(buf.length + 3);
  buf.copy(outer, 3);
  return outer.subarray(3);
}

function all(l: Locs): number[] {
  return Array.from({ length: l.length }, (_, i) => l.at(i));
}

test('locations adopted from the index decode on first use to what they encode, followed by those pushed since', () => {
  const segIds = [1, 500, 900];
  const l = Locs.fromIndex(encode([[1, 0, 32, 40], [2, 1, 72, 40], [3, 2, 112, 40]]), segIds);
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
  const lazy = Locs.fromIndex(encode(rows), segIds);
  lazy.dropSegments(new Set([1]));
  assert.equal(lazy.firstSegment(), 500);
  assert.deepEqual(all(lazy), [2, 500, 72, 40, 3, 900, 112, 40]);
  const pushedFirst = Locs.fromIndex(encode(rows), segIds);
  pushedFirst.push(4, 900, 152, 40);
  pushedFirst.dropSegments(new Set([1, 500]));
  assert.deepEqual(all(pushedFirst), [3, 900, 112, 40, 4, 900, 152, 40]);
  const decoded = new Locs(Float64Array.from([1, 1, 32, 40, 2, 500, 72, 40]));
  decoded.dropSegments(new Set([1]));
  assert.deepEqual(all(decoded), [2, 500, 72, 40]);
  const empty = Locs.fromIndex(encode([[1, 0, 32, 40]]), segIds);
  empty.dropSegments(new Set([1]));
  assert.equal(empty.firstSegment(), undefined);
  assert.equal(empty.length, 0);
});
