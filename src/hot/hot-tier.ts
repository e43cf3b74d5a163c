/**
 * The hot tier: every live session's current state, in memory, owned by the
 * runtime rather than by session actors, so an actor that crashes is restarted
 * from here. It holds immutable values produced by the reducer; it never copies
 * or freezes them (that is the reducer's contract), it only keeps the reference.
 *
 * Nothing here is durable. Losing the table loses nothing that the journal and
 * the snapshots cannot rebuild.
 */

/** Options of a {@link HotTier}. */
export interface HotTierOptions {
  /** Entries not accessed (stored or retrieved) for this long are removed by `cleanupExpired`. Default: never. */
  idleTtlMs?: number;
  /** The clock, in ms (default `Date.now`). Tests inject their own. */
  now?: () => number;
  /**
   * How many values (objects, arrays, strings, numbers, …) one `memory()` call
   * may visit to refresh its size estimate (default {@link DEFAULT_SIZING_BUDGET}).
   * Bounds the cost of a health check however large the states held are.
   */
  sizingBudget?: number;
}

/** Values one `memory()` call visits at most by default: about a millisecond of main-thread CPU or less (bench/runtime (a'): p50 0.91 ms per call while sizing, 30–90 ns per value). */
export const DEFAULT_SIZING_BUDGET = 10_000;

/** The figures the health check reports for the hot tier. */
export interface HotTierMemory {
  entries: number;
  /**
   * An estimate of the bytes the stored states occupy (keys included), kept up
   * to date a bounded piece at a time (see {@link HotTier.memory}): the sum of
   * each entry's last size ({@link approxSizeBytes} of one state), possibly of
   * an earlier state of that session, plus, for each entry never sized yet, the
   * mean of those sized.
   */
  approxBytes: number;
  /** Entries whose part of `approxBytes` is not their current state's size: never sized (the mean stands in) or changed since sized. */
  estimated: number;
  /** Values this call visited to refresh the estimate: at most the sizing budget. */
  walked: number;
  /** States whose sizing this call finished. */
  sized: number;
}

/**
 * The idle-expiry rule: an entry last accessed at `lastAccessMs` is expired at
 * `nowMs` once it has been idle for `idleTtlMs` or longer. Without a TTL nothing
 * expires. A clock that went backwards makes the idle time negative: not expired.
 */
export function isIdleExpired(lastAccessMs: number, nowMs: number, idleTtlMs: number | undefined): boolean {
  return idleTtlMs !== undefined && nowMs - lastAccessMs >= idleTtlMs;
}

// Estimated costs, in bytes, of the values a state is made of. These are
// deliberately simple (V8's real layout depends on hidden classes, string
// representation and pointer compression): the figure tracks growth, not truth.
const STRING_HEADER_BYTES = 16;
const BYTES_PER_CHAR = 2;
const NUMBER_BYTES = 8;
const BOOLEAN_BYTES = 4;
const OBJECT_HEADER_BYTES = 16;
const PER_KEY_BYTES = 8;

function stringBytes(s: string): number {
  return STRING_HEADER_BYTES + BYTES_PER_CHAR * s.length;
}

/** What a walk remembers of the objects it has counted (a WeakSet or a Set). */
type SeenSet = { has(value: object): boolean; add(value: object): unknown };

/**
 * A structural size walk over one value that can stop after a number of
 * visited values and resume later (see {@link approxSizeBytes} for what it
 * counts). It keeps its stack and the objects it has seen between steps, so a
 * value larger than one step's budget is sized over several steps.
 */
class SizeWalk {
  readonly #stack: unknown[];
  readonly #seen: SeenSet;
  total = 0;

  constructor(value: unknown, seen: SeenSet) {
    this.#stack = [value];
    this.#seen = seen;
  }

  get done(): boolean {
    return this.#stack.length === 0;
  }

  /**
   * Visits at most `limit` values (each popped value counts one, whatever its
   * type; the children of the last object visited are pushed at once) and
   * returns how many it visited.
   */
  step(limit: number): number {
    const stack = this.#stack;
    const seen = this.#seen;
    let total = this.total;
    let visited = 0;
    while (stack.length > 0 && visited < limit) {
      const v = stack.pop();
      visited++;
      switch (typeof v) {
        case 'string':
          total += stringBytes(v);
          continue;
        case 'number':
          total += NUMBER_BYTES;
          continue;
        case 'boolean':
          total += BOOLEAN_BYTES;
          continue;
        case 'bigint':
          total += 16;
          continue;
        case 'object':
          break;
        default:
          // undefined, symbols and functions: nothing a state should own.
          continue;
      }
      if (v === null || seen.has(v)) continue;
      seen.add(v);
      if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
        total += OBJECT_HEADER_BYTES + v.byteLength;
        continue;
      }
      if (v instanceof Date) {
        total += OBJECT_HEADER_BYTES + NUMBER_BYTES;
        continue;
      }
      total += OBJECT_HEADER_BYTES;
      if (Array.isArray(v)) {
        total += PER_KEY_BYTES * v.length;
        for (const item of v) stack.push(item);
      } else if (v instanceof Map) {
        for (const [k, item] of v) {
          total += 2 * PER_KEY_BYTES;
          stack.push(k, item);
        }
      } else if (v instanceof Set) {
        for (const item of v) {
          total += PER_KEY_BYTES;
          stack.push(item);
        }
      } else {
        for (const key of Object.keys(v)) {
          total += PER_KEY_BYTES;
          stack.push((v as Record<string, unknown>)[key]);
        }
      }
    }
    this.total = total;
    return visited;
  }
}

/**
 * A structural estimate of the memory `value` occupies: strings 2 bytes per char
 * + 16, numbers 8, booleans 4, bigints 16, objects and arrays 16 + 8 per key or
 * element plus their contents, binary buffers their byte length + 16. Each object
 * is counted once across calls sharing `seen`, so structure shared within a
 * value (or cycles) is not double-counted. Walks iteratively: a deep state
 * cannot overflow the stack. O(size of the value): the hot tier runs it a
 * bounded piece at a time (see {@link HotTier.memory}).
 */
export function approxSizeBytes(value: unknown, seen: WeakSet<object> = new WeakSet()): number {
  const walk = new SizeWalk(value, seen);
  walk.step(Number.POSITIVE_INFINITY);
  return walk.total;
}

interface Entry<S> {
  state: Readonly<S>;
  lastAccessMs: number;
  /** Bytes of this entry's last sized state (this one when `fresh`, an earlier one otherwise); -1: never sized. */
  bytes: number;
  /** Whether `bytes` is the size of `state` itself. */
  fresh: boolean;
}

/** Bytes counted per entry besides its state: the key and the access time. */
function keyBytes(sessionId: string): number {
  return stringBytes(sessionId) + NUMBER_BYTES;
}

/**
 * An in-memory table `sessionId → Readonly<S>` (the seed's HotStorage).
 *
 * `store` and `retrieve` count as an access for idle expiry; `peek`, `has`,
 * `keys` and `entries` do not, so housekeeping never keeps an entry alive.
 * Expiry is never automatic: the owner calls `cleanupExpired` (e.g. from its
 * passivation sweep), which keeps this class free of timers.
 *
 * `memory()` never walks the whole table: each entry remembers the size of the
 * state it was last sized for, the entries stored since then wait in a queue
 * (first stored, first sized), and each call sizes from that queue within its
 * budget of visited values (`sizingBudget`), resuming a large state where the
 * previous call stopped.
 */
export class HotTier<S> {
  readonly #entries = new Map<string, Entry<S>>();
  readonly #idleTtlMs: number | undefined;
  readonly #now: () => number;
  readonly #sizingBudget: number;
  /** Ids of the entries whose state is not the one they were sized for (or never sized), in the order they became so. */
  readonly #unsized = new Set<string>();
  /** The state being sized across calls, if a call's budget ran out in its middle. */
  #walk: { sessionId: string; entry: Entry<S>; state: Readonly<S>; walk: SizeWalk } | undefined;
  /** Sum of keyBytes over the entries. */
  #keyBytes = 0;
  /** Sum of `bytes` over the entries sized at least once, and their count. */
  #sizedBytes = 0;
  #sizedCount = 0;

  constructor(options: HotTierOptions = {}) {
    const { idleTtlMs, now, sizingBudget } = options;
    if (idleTtlMs !== undefined && (typeof idleTtlMs !== 'number' || !Number.isFinite(idleTtlMs) || idleTtlMs <= 0)) {
      throw new RangeError(`option idleTtlMs must be a positive number of ms, got ${String(idleTtlMs)}`);
    }
    if (now !== undefined && typeof now !== 'function') {
      throw new TypeError(`option now must be a function returning ms, got ${typeof now}`);
    }
    if (sizingBudget !== undefined && (typeof sizingBudget !== 'number' || !Number.isInteger(sizingBudget) || sizingBudget < 1)) {
      throw new RangeError(`option sizingBudget must be a positive integer (values visited per memory() call), got ${String(sizingBudget)}`);
    }
    this.#idleTtlMs = idleTtlMs;
    this.#now = now ?? Date.now;
    this.#sizingBudget = sizingBudget ?? DEFAULT_SIZING_BUDGET;
  }

  /** Puts `state` for `sessionId` at `nowMs`: the entry is updated in place, or added; either way it waits to be sized. */
  #put(sessionId: string, state: Readonly<S>, nowMs: number): void {
    const entry = this.#entries.get(sessionId);
    if (entry === undefined) {
      this.#entries.set(sessionId, { state, lastAccessMs: nowMs, bytes: -1, fresh: false });
      this.#keyBytes += keyBytes(sessionId);
      this.#unsized.add(sessionId);
      return;
    }
    entry.state = state;
    entry.lastAccessMs = nowMs;
    if (entry.fresh) {
      entry.fresh = false;
      this.#unsized.add(sessionId);
    }
  }

  /** Removes `entry` (held under `sessionId`) and its share of the size figures. */
  #remove(sessionId: string, entry: Entry<S>): void {
    this.#entries.delete(sessionId);
    this.#unsized.delete(sessionId);
    this.#keyBytes -= keyBytes(sessionId);
    if (entry.bytes >= 0) {
      this.#sizedBytes -= entry.bytes;
      this.#sizedCount--;
    }
    if (this.#walk?.entry === entry) this.#walk = undefined;
  }

  /** The TTL this table expires idle entries after, if any. */
  get idleTtlMs(): number | undefined {
    return this.#idleTtlMs;
  }

  /** Number of sessions held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Puts (or replaces) the state of `sessionId`; counts as an access. */
  store(sessionId: string, state: Readonly<S>): void {
    if (typeof sessionId !== 'string') throw new TypeError(`sessionId must be a string, got ${typeof sessionId}`);
    this.#put(sessionId, state, this.#now());
  }

  /** Puts every `[sessionId, state]` pair (later pairs win on a repeated id); returns how many pairs were stored. */
  storeMany(entries: Iterable<readonly [string, Readonly<S>]>): number {
    const nowMs = this.#now();
    let count = 0;
    for (const [sessionId, state] of entries) {
      if (typeof sessionId !== 'string') throw new TypeError(`sessionId must be a string, got ${typeof sessionId}`);
      this.#put(sessionId, state, nowMs);
      count++;
    }
    return count;
  }

  /** The state of `sessionId`, or undefined; counts as an access (postpones idle expiry). */
  retrieve(sessionId: string): Readonly<S> | undefined {
    const entry = this.#entries.get(sessionId);
    if (entry === undefined) return undefined;
    entry.lastAccessMs = this.#now();
    return entry.state;
  }

  /** The state of `sessionId`, or undefined, without counting as an access. */
  peek(sessionId: string): Readonly<S> | undefined {
    return this.#entries.get(sessionId)?.state;
  }

  /** Whether `sessionId` is held (not an access). */
  has(sessionId: string): boolean {
    return this.#entries.has(sessionId);
  }

  /** Removes `sessionId`; true if it was held. */
  delete(sessionId: string): boolean {
    const entry = this.#entries.get(sessionId);
    if (entry === undefined) return false;
    this.#remove(sessionId, entry);
    return true;
  }

  /**
   * Removes every entry idle for `idleTtlMs` or longer at `nowMs` (default: the
   * injected clock) and returns their ids. Without a TTL it removes nothing.
   */
  cleanupExpired(nowMs: number = this.#now()): string[] {
    const expired: string[] = [];
    // Fast path: without a TTL nothing can expire; do not walk the table.
    if (this.#idleTtlMs === undefined) return expired;
    for (const [sessionId, entry] of this.#entries) {
      if (isIdleExpired(entry.lastAccessMs, nowMs, this.#idleTtlMs)) {
        // Deleting the current key while iterating a Map is well defined.
        this.#remove(sessionId, entry);
        expired.push(sessionId);
      }
    }
    return expired;
  }

  /**
   * Entry count and an estimate of their bytes (keys included), refreshed by
   * at most `sizingBudget` visited values per call, whatever the table holds:
   * cheap enough for every health check and metrics scrape.
   *
   * How approximate: each entry counts the size of the state it was last
   * sized for. An entry stored since then (a session that grew) counts its
   * earlier size until its turn in the queue comes; an entry never sized
   * (e.g. just after a restart) counts the mean of the entries sized so far
   * (0 before any is). Calls keep sizing the queue in the order entries
   * changed, so with nothing stored meanwhile the figure reaches the sum of
   * every entry's own size after about (values in all states ÷ budget) calls.
   * Each state is sized on its own: structure shared by the states of two
   * sessions counts once per session.
   */
  memory(): HotTierMemory {
    const budget = this.#sizingBudget;
    let walked = 0;
    let sized = 0;
    while (walked < budget) {
      let current = this.#walk;
      if (current === undefined) {
        const next = this.#unsized.values().next();
        if (next.done === true) break;
        const sessionId = next.value;
        const entry = this.#entries.get(sessionId)!;
        current = { sessionId, entry, state: entry.state, walk: new SizeWalk(entry.state, new Set<object>()) };
        this.#walk = current;
      }
      walked += current.walk.step(budget - walked);
      if (!current.walk.done) break;
      this.#walk = undefined;
      sized++;
      const { sessionId, entry, state, walk } = current;
      if (entry.bytes < 0) {
        this.#sizedCount++;
        this.#sizedBytes += walk.total;
      } else {
        this.#sizedBytes += walk.total - entry.bytes;
      }
      entry.bytes = walk.total;
      this.#unsized.delete(sessionId);
      // Stored again while it was being sized: the figure is of an earlier state; back to the end of the queue.
      if (entry.state === state) entry.fresh = true;
      else this.#unsized.add(sessionId);
    }
    const unsizedEntries = this.#entries.size - this.#sizedCount;
    const mean = this.#sizedCount === 0 ? 0 : this.#sizedBytes / this.#sizedCount;
    const approxBytes = Math.round(this.#keyBytes + this.#sizedBytes + unsizedEntries * mean);
    return { entries: this.#entries.size, approxBytes, estimated: this.#unsized.size, walked, sized };
  }

  /** The session ids held, in the order first stored (a live view: deleting while iterating is safe). */
  keys(): IterableIterator<string> {
    return this.#entries.keys();
  }

  /** `[sessionId, state]` pairs, e.g. for a whole-table checkpoint; not an access. */
  *entries(): IterableIterator<[string, Readonly<S>]> {
    for (const [sessionId, entry] of this.#entries) yield [sessionId, entry.state];
  }

  /** Removes everything. */
  clear(): void {
    this.#entries.clear();
    this.#unsized.clear();
    this.#walk = undefined;
    this.#keyBytes = 0;
    this.#sizedBytes = 0;
    this.#sizedCount = 0;
  }
}
