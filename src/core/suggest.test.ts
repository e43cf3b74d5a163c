import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closestName, editDistance } from './suggest.ts';

test('editDistance counts insertions, deletions and substitutions, ignoring case', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('PORT', 'port'), 0);
});

test('closestName suggests a near miss and nothing for an unrelated name', () => {
  assert.equal(closestName('ARBOR_DATADIR', ['ARBOR_DATA_DIR', 'ARBOR_PORT']), 'ARBOR_DATA_DIR');
  assert.equal(closestName('sessionIdleTimeout', ['sessionIdleTimeoutMs', 'llm']), 'sessionIdleTimeoutMs');
  assert.equal(closestName('zzzzzzzzzz', ['llm', 'commands']), undefined);
});
