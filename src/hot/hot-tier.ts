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
}

/** The figures the health check reports for the hot tier. */
export interface HotTierMemory {
  entries: number;
  /** A structural estimate of the bytes the stored states occupy; see {@link approxSizeBytes}. */
  approxBytes: number;
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

/**
 * A structural estimate of the memory `value` occupies: strings 2 bytes per char
 * + 16, numbers 8, booleans 4, bigints 16, objects and arrays 16 + 8 per key or
 * element plus their contents, binary buffers their byte length + 16. Each object
 * is counted once across calls sharing `seen`, so structure shared between
 * states (or cycles) is not double-counted. Walks iteratively: a deep state
 * cannot overflow the stack. O(size of the value) — meant for rare health checks.
 */
export function approxSizeBytes(value: unknown, seen: WeakSet<object> = new WeakSet()): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
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
  return total;
}

interface Entry<S> {
  state: Readonly<S>;
  lastAccessMs: number;
}

/**
 * An in-memory table `sessionId → Readonly<S>` (the seed's HotStorage).
 *
 * `store` and `retrieve` count as an access for idle expiry; `peek`, `has`,
 * `keys` and `entries` do not, so housekeeping never keeps an entry alive.
 * Expiry is never automatic: the owner calls `cleanupExpired` (e.g. from its
 * passivation sweep), which keeps this class free of timers.
 */
export class HotTier<S> {
  readonly #entries = new Map<string, Entry<S>>();
  readonly #idleTtlMs: number | undefined;
  readonly #now: () => number;

  constructor(options: HotTierOptions = {}) {
    const { idleTtlMs, now } = options;
    if (idleTtlMs !== undefined && (typeof idleTtlMs !== 'number' || !Number.isFinite(idleTtlMs) || idleTtlMs <= 0)) {
      throw new RangeError(`option idleTtlMs must be a positive number of ms, got ${String(idleTtlMs)}`);
    }
    if (now !== undefined && typeof now !== 'function') {
      throw new TypeError(`option now must be a function returning ms, got ${typeof now}`);
    }
    this.#idleTtlMs = idleTtlMs;
    this.#now = now ?? Date.now;
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
    this.#entries.set(sessionId, { state, lastAccessMs: this.#now() });
  }

  /** Puts every `[sessionId, state]` pair (later pairs win on a repeated id); returns how many pairs were stored. */
  storeMany(entries: Iterable<readonly [string, Readonly<S>]>): number {
    const nowMs = this.#now();
    let count = 0;
    for (const [sessionId, state] of entries) {
      if (typeof sessionId !== 'string') throw new TypeError(`sessionId must be a string, got ${typeof sessionId}`);
      this.#entries.set(sessionId, { state, lastAccessMs: nowMs });
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
    return this.#entries.delete(sessionId);
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
        this.#entries.delete(sessionId);
        expired.push(sessionId);
      }
    }
    return expired;
  }

  /** Entry count and an estimate of their bytes (keys included). Walks every state: call it rarely. */
  memory(): HotTierMemory {
    const seen = new WeakSet<object>();
    let approxBytes = 0;
    for (const [sessionId, entry] of this.#entries) {
      approxBytes += stringBytes(sessionId) + NUMBER_BYTES + approxSizeBytes(entry.state, seen);
    }
    return { entries: this.#entries.size, approxBytes };
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
  }
}
