import { ArborError, ErrorCodes } from '../core/errors.ts';
import { assertSessionId } from '../core/ids.ts';
import type { AppendInput, AppendResult } from './backend.ts';

/**
 * The checks every backend makes of an append, in one place so the file
 * journal and PostgreSQL refuse the same input with the same code and field
 * (the contract suite holds both to it).
 */

/** Checks the input's own fields; returns the event version (default 1). Nothing is written on a throw. */
export function checkAppendInput(input: AppendInput): number {
  const { sid, type, clientMessageId: cid } = input;
  const v = input.v ?? 1;
  assertSessionId(sid);
  if (typeof type !== 'string' || type.length === 0 || type.length > 200) {
    throw new ArborError(ErrorCodes.INVALID_INPUT, `type must be a non-empty string of at most 200 characters (session ${sid})`, { field: 'type', sessionId: sid });
  }
  if (!Number.isSafeInteger(v) || v < 1) throw new ArborError(ErrorCodes.INVALID_INPUT, `v must be a positive integer (session ${sid})`, { field: 'v', sessionId: sid });
  if (cid !== undefined && (typeof cid !== 'string' || cid.length === 0 || cid.length > 200)) {
    throw new ArborError(ErrorCodes.INVALID_INPUT, `clientMessageId must be a non-empty string of at most 200 characters (session ${sid})`, { field: 'clientMessageId', sessionId: sid });
  }
  return v;
}

/** A retried request: the original result (settled or in flight) marked duplicate, or undefined when the key is new. */
export function duplicateOf(cids: ReadonlyMap<string, AppendResult | Promise<AppendResult>> | undefined, cid: string | undefined): Promise<AppendResult> | undefined {
  if (cid === undefined) return undefined;
  const seen = cids?.get(cid);
  if (seen === undefined) return undefined;
  return seen instanceof Promise ? seen.then((r) => ({ ...r, duplicate: true })) : Promise.resolve({ ...seen, duplicate: true });
}

/** Checks the append against the session: not quarantined, `expectedSeq` matching, a usable `ts`. */
export function checkAppendAgainst(input: AppendInput, session: { lastSeq: number; quarantined: string | undefined }): void {
  const { sid, expectedSeq } = input;
  if (session.quarantined !== undefined) {
    throw new ArborError(ErrorCodes.SESSION_QUARANTINED, `session ${sid} is quarantined: ${session.quarantined}`, { sessionId: sid });
  }
  if (expectedSeq !== undefined && expectedSeq !== session.lastSeq) {
    throw new ArborError(ErrorCodes.SEQ_CONFLICT, `session ${sid}: expected seq ${expectedSeq}, but the last seq is ${session.lastSeq}`, { sessionId: sid, expectedSeq, actualSeq: session.lastSeq });
  }
  if (input.ts !== undefined && (typeof input.ts !== 'number' || !Number.isFinite(input.ts) || input.ts < 0)) {
    throw new ArborError(ErrorCodes.INVALID_INPUT, `ts must be a non-negative finite number (session ${sid})`, { field: 'ts', sessionId: sid });
  }
}
