import { ArborError, ErrorCodes } from './errors.ts';

/**
 * Session ids become parts of file names, so they are held to a strict
 * alphabet: ASCII letters, digits, `_` and `-`, 1–128 characters. No dots, no
 * slashes, no NUL: an id can never name a path outside the data directory.
 */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** Throws ARBOR_INVALID_SESSION_ID unless `id` is a valid session id. */
export function assertSessionId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !SESSION_ID_PATTERN.test(id)) {
    const shown = typeof id === 'string' ? JSON.stringify(id.length > 40 ? `${id.slice(0, 40)}…` : id) : typeof id;
    throw new ArborError(
      ErrorCodes.INVALID_SESSION_ID,
      `invalid session id ${shown}: use 1-128 characters of A-Z, a-z, 0-9, '_' or '-'`,
      { sessionId: typeof id === 'string' ? id.slice(0, 200) : undefined },
    );
  }
}

export function isSessionId(id: unknown): id is string {
  return typeof id === 'string' && SESSION_ID_PATTERN.test(id);
}
