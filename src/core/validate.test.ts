import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boolean, integer, nonNegativeInteger, positiveInteger } from './validate.ts';

const names = (name: string) => (err: unknown) => err instanceof Error && err.message.includes(name);

for (const value of [0, -1, 1.5, Number.NaN, Infinity, '3', undefined, 2 ** 53]) {
  test(`positiveInteger(${String(value)}) is a RangeError naming the option`, () => {
    assert.throws(() => positiveInteger('journalBatchSize', value), (err) => err instanceof RangeError && names('journalBatchSize')(err));
  });
}

test('positiveInteger, nonNegativeInteger and integer return the value within their bounds, inclusive', () => {
  assert.equal(positiveInteger('a', 1), 1);
  assert.equal(positiveInteger('a', 10, 10), 10);
  assert.throws(() => positiveInteger('a', 11, 10), RangeError);
  assert.equal(nonNegativeInteger('b', 0), 0);
  assert.throws(() => nonNegativeInteger('b', -1), RangeError);
  assert.equal(integer('c', 3, 3, 3), 3);
  assert.throws(() => integer('c', 4, 3, 3), RangeError);
});

test('owner prefixes the option name', () => {
  assert.throws(() => integer('leaseMs', 1, 100, 1000, 'PgBackend'), (err) => err instanceof RangeError && names('PgBackend option leaseMs')(err));
});

for (const value of ['false', 0, 1, null, undefined]) {
  test(`boolean(${JSON.stringify(value)}) is a TypeError naming the option`, () => {
    assert.throws(() => boolean('salvage', value), (err) => err instanceof TypeError && names('salvage')(err));
  });
}

test('boolean returns true and false as they are', () => {
  assert.deepEqual([boolean('x', true), boolean('x', false)], [true, false]);
});
