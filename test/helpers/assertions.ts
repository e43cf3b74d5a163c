import assert from 'node:assert/strict';
import { ArborError } from '../../src/errors.ts';

/** Runs `fn`, which must throw an ArborError; returns it so the caller can check its code and details. */
export function thrown(fn: () => unknown): ArborError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ArborError, `expected an ArborError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a throw');
}
