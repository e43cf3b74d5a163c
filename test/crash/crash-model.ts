/**
 * What the SIGKILL crash child (`kill-child.ts`) and its parent
 * (`kill-harness.ts`) agree on: the session state and reducer both open the
 * store with, the event shape, which appends carry a clientMessageId or an
 * expectedSeq. The kill points and the PRNG come from `arbor-runtime/testing`.
 */
import type { JournalRecord } from '../../src/file/journal/format.ts';
import type { RecoveryHooks } from '../../src/backend/replay.ts';

export const EVENT_TYPE = 'user_message_sent';
export const TEXT_MIN = 10;
export const TEXT_MAX = 300;

/** The data of every event the child appends: `n` is the seq the child expects the event to get. */
export interface CrashEventData {
  n: number;
  text: string;
}

/**
 * A session's state. With every event carrying `n === seq`, a correct history
 * 1..lastSeq has `count === lastSeq`, `sumN === lastSeq * (lastSeq + 1) / 2`
 * and `bad === 0`; a lost, repeated, reordered or altered event breaks one of them.
 */
export interface CrashState {
  lastSeq: number;
  /** events applied */
  count: number;
  /** sum of data.n over the events applied */
  sumN: number;
  /** events that were not the next seq, had n !== seq, the wrong type or a malformed text */
  bad: number;
}

export function initialCrashState(): CrashState {
  return { lastSeq: 0, count: 0, sumN: 0, bad: 0 };
}

export function crashReducer(state: CrashState, event: Pick<JournalRecord, 'seq' | 'type' | 'data'>): CrashState {
  const data = event.data as Partial<CrashEventData> | null;
  const ok =
    event.seq === state.lastSeq + 1 &&
    event.type === EVENT_TYPE &&
    typeof data === 'object' &&
    data !== null &&
    data.n === event.seq &&
    typeof data.text === 'string' &&
    data.text.length >= TEXT_MIN &&
    data.text.length <= TEXT_MAX;
  return { lastSeq: event.seq, count: state.count + 1, sumN: state.sumN + (typeof data?.n === 'number' ? data.n : 0), bad: state.bad + (ok ? 0 : 1) };
}

export const crashHooks: RecoveryHooks<CrashState> = {
  initialState: () => initialCrashState(),
  reducer: crashReducer,
};

/** Problems with a recovered state, given the seq recovery reports for it (empty when it is consistent). */
export function checkCrashState(state: CrashState, seq: number): string[] {
  const problems: string[] = [];
  if (state.lastSeq !== seq) problems.push(`state.lastSeq ${state.lastSeq} !== recovered seq ${seq}`);
  if (state.count !== seq) problems.push(`state.count ${state.count} !== recovered seq ${seq} (events lost or applied twice)`);
  if (state.sumN !== (seq * (seq + 1)) / 2) problems.push(`state.sumN ${state.sumN} !== ${(seq * (seq + 1)) / 2} (event content differs from the seqs 1..${seq})`);
  if (state.bad !== 0) problems.push(`state.bad = ${state.bad}: events out of order or with n !== seq`);
  return problems;
}

export function sessionId(i: number): string {
  return `s${String(i).padStart(3, '0')}`;
}

/** Every third event carries an idempotency key derived from its n. */
export function cidFor(sid: string, n: number): string | undefined {
  return n % 3 === 0 ? `${sid}-m${n}` : undefined;
}

/** Every fourth event is appended with `expectedSeq: n - 1` (optimistic concurrency). */
export function usesExpectedSeq(n: number): boolean {
  return n % 4 === 1;
}

/** mulberry32, the seeded PRNG the in-memory filesystem's crash images use too. */
export { mulberry32 as prng, randInt, KILL_POINTS, type KillPoint } from '../../src/testing.ts';
