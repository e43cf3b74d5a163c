import assert from 'node:assert/strict';
import { ArborError, isArborError, type ErrorCode } from '../../src/core/errors.ts';

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

/**
 * Awaits `promise`, which must reject with an ArborError of `code` (and, when
 * given, those `details`); returns the error for further checks.
 */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, details: Record<string, unknown> = {}): Promise<ArborError> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(isArborError(caught), `expected an ArborError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, `expected ${code}, got ${caught.code}: ${caught.message}`);
  for (const [key, value] of Object.entries(details)) assert.deepEqual(caught.details[key], value, `details.${key} of ${code}`);
  return caught;
}
