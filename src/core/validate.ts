/**
 * Checks of option values, shared by every options resolver so that a bad
 * value reads the same wherever it is given. Each throws a `RangeError` (a
 * number out of range) or `TypeError` (a value of the wrong type) whose
 * message names the option and the value, and returns the value typed.
 * `owner` prefixes the option's name (e.g. `PgBackend`), for options whose
 * name alone would not say where they belong.
 */

function label(name: string, owner: string | undefined): string {
  return owner === undefined ? `option ${name}` : `${owner} option ${name}`;
}

/** `value` as a safe integer from `min` to `max` (inclusive). */
export function integer(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER, owner?: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`${label(name, owner)} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** `value` as an integer from 1 to `max`. */
export function positiveInteger(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER, owner?: string): number {
  return integer(name, value, 1, max, owner);
}

/** `value` as an integer from 0 to `max`. */
export function nonNegativeInteger(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER, owner?: string): number {
  return integer(name, value, 0, max, owner);
}

/** `value` as a boolean (no truthy strings or numbers: `"false"` is refused, not taken as true). */
export function boolean(name: string, value: unknown, owner?: string): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${label(name, owner)} must be a boolean, got ${JSON.stringify(value)}`);
  return value;
}
