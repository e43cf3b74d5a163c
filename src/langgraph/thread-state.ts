/**
 * The stored form of one LangGraph thread in one Arbor session: the events
 * `ArborSaver` appends, the pure reducer that rebuilds a thread from them, and
 * the delta encoding that keeps a thread's bytes linear in its length.
 *
 * A channel value is stored only when its version changes (the `newVersions`
 * of a `put`). An array value (a message list) is stored as a delta against
 * the value of the same channel in the checkpoint's parent: how many leading
 * items it keeps and the items it appends. Rebuilding a value walks its chain
 * of deltas back to a full one. The session's snapshots hold this state, so
 * every checkpoint of the thread is rebuilt from the newest snapshot at or
 * before it plus the deltas after.
 *
 * Nothing here does I/O or knows a backend: `ArborSaver` serializes values
 * (LangGraph's serde) and hands this module strings.
 */
import { createHash } from 'node:crypto';
import type { JournalRecord } from '../core/record.ts';
import { isSessionId } from '../core/ids.ts';

/** A serialized value: LangGraph's serde type, and its bytes as text (`s`) or base64 (`b`). */
export type Ser = [type: string, enc: 's' | 'b', payload: string];

/** One stored channel version: a full value, a list delta, or "no value" (the channel was emptied). */
export type StoredValue =
  | { f: Ser }
  | { l: Ser[]; b?: string; k?: number }
  | { e: 1 };

/** One stored checkpoint: everything but its channel values, which live in `vals` by version. */
export interface StoredCheckpoint {
  ns: string;
  id: string;
  parent?: string;
  /** the checkpoint without `channel_values`, serialized */
  cp: Ser;
  /** its metadata, serialized */
  md: Ser;
  /** channel → value key, for the channels whose value is stored */
  refs: Record<string, string>;
}

/** One pending write as stored. */
export interface StoredWrite {
  task: string;
  idx: number;
  ch: string;
  val: Ser;
  path: string;
}

/** A thread's state: what the reducer builds and snapshots hold. */
export interface ThreadState {
  /** the thread id as LangGraph spelt it (the session id may be a hash of it) */
  tid: string | undefined;
  /** checkpoints in the order they were put */
  cps: StoredCheckpoint[];
  /** value key (see `valueKey`) → stored value */
  vals: Record<string, StoredValue>;
  /** writes key (see `writesKey`) → the writes against that checkpoint */
  writes: Record<string, StoredWrite[]>;
}

/** Event types ArborSaver appends (its own namespace: these sessions are not chat sessions). */
export const LG_PUT = 'langgraph.put';
export const LG_WRITES = 'langgraph.writes';

/** A channel value a `put` stores: its version key and the stored form (a delta for lists). */
export type PutValue = [channel: string, key: string, value: StoredValue];

export interface PutEventData {
  tid: string;
  ns: string;
  id: string;
  parent?: string;
  cp: Ser;
  md: Ser;
  /** values stored by this put (the channels in newVersions) */
  vals: PutValue[];
  /** channel → value key for every channel of the checkpoint whose value is stored (this put's or an earlier one's) */
  refs: Record<string, string>;
  /** retention in force when it was put: keep the newest `keep` checkpoints of this namespace (absent: all) */
  keep?: number;
}

export interface WritesEventData {
  tid: string;
  ns: string;
  id: string;
  task: string;
  path: string;
  /** [idx, channel, value] */
  w: [number, string, Ser][];
}

/**
 * The session id of a thread: `t-<id>` when the id is a valid session id
 * short enough, else `h-<sha256 of it, base64url>`. The prefixes keep the
 * two forms apart, so the mapping is injective; no thread id is refused.
 */
export function threadSessionId(threadId: string): string {
  const plain = `t-${threadId}`;
  if (isSessionId(plain)) return plain;
  return `h-${createHash('sha256').update(threadId, 'utf8').digest('base64url')}`;
}

/** The key of one stored channel version in `vals`. NUL separators: no key can name an Object.prototype member. */
export function valueKey(ns: string, channel: string, version: number | string): string {
  return `${ns}\u0000${channel}\u0000${typeof version === 'number' ? 'n' : 's'}${version}`;
}

export function writesKey(ns: string, checkpointId: string): string {
  return `${ns}\u0000${checkpointId}`;
}

export function initialThreadState(): ThreadState {
  return { tid: undefined, cps: [], vals: {}, writes: {} };
}

function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/**
 * The items of a stored list value, rebuilt from its chain of deltas.
 * `cache` (optional) holds lists already rebuilt, by value key; the walk
 * stops at the first cached or full one. Undefined when the value is not a list.
 */
export function listItems(vals: Record<string, StoredValue>, key: string, cache?: Map<string, Ser[]>): Ser[] | undefined {
  const chain: { l: Ser[]; k: number }[] = [];
  let start: Ser[] = [];
  let at: string | undefined = key;
  const seen = new Set<string>();
  while (at !== undefined) {
    const cached = cache?.get(at);
    if (cached !== undefined) {
      start = cached;
      break;
    }
    const v: StoredValue | undefined = own(vals, at);
    if (v === undefined || !('l' in v)) {
      if (chain.length === 0) return undefined;
      throw new Error(`stored list value ${JSON.stringify(at)} is missing or not a list (a delta's base)`);
    }
    if (seen.has(at)) throw new Error(`stored list value ${JSON.stringify(at)} is its own base`);
    seen.add(at);
    chain.push({ l: v.l, k: v.b === undefined ? 0 : (v.k ?? 0) });
    at = v.b;
  }
  const out = start.slice();
  for (let i = chain.length - 1; i >= 0; i -= 1) {
    const { l, k } = chain[i]!;
    out.length = Math.min(out.length, k);
    for (const item of l) out.push(item);
  }
  return out;
}

/** Two serialized items are the same value. */
export function sameSer(a: Ser, b: Ser): boolean {
  return a === b || (a[0] === b[0] && a[1] === b[1] && a[2] === b[2]);
}

/** The delta of `items` against `base` (items of an earlier version): how many leading items it keeps, and what follows. */
export function listDelta(items: Ser[], base: Ser[] | undefined, baseKey: string | undefined): StoredValue {
  if (base === undefined || baseKey === undefined) return { l: items };
  let k = 0;
  const n = Math.min(items.length, base.length);
  while (k < n && sameSer(items[k]!, base[k]!)) k += 1;
  if (k === 0) return { l: items };
  return { l: items.slice(k), b: baseKey, k };
}

/**
 * The reducer: the thread after one of its events. It mutates and returns
 * `state` (a thread's state grows with every put; copying it per event would
 * make replay quadratic). Deterministic: replay after a crash and the live
 * saver reach the same state.
 */
export function reduceThread(state: ThreadState, event: JournalRecord): ThreadState {
  if (event.type === LG_PUT) {
    const d = event.data as PutEventData;
    state.tid ??= d.tid;
    for (const [, key, value] of d.vals) state.vals[key] = value;
    const entry: StoredCheckpoint = { ns: d.ns, id: d.id, cp: d.cp, md: d.md, refs: d.refs };
    if (d.parent !== undefined) entry.parent = d.parent;
    // A checkpoint put again under the same id replaces the earlier one.
    const same = state.cps.findIndex((c) => c.ns === d.ns && c.id === d.id);
    if (same >= 0) state.cps.splice(same, 1);
    state.cps.push(entry);
    if (d.keep !== undefined) applyRetention(state, d.ns, d.keep);
    return state;
  }
  if (event.type === LG_WRITES) {
    const d = event.data as WritesEventData;
    state.tid ??= d.tid;
    const key = writesKey(d.ns, d.id);
    const list = own(state.writes, key) ?? [];
    for (const [idx, ch, val] of d.w) {
      const at = list.findIndex((w) => w.task === d.task && w.idx === idx);
      if (at >= 0) {
        // A regular write is written once (a retried task keeps the first); special ones (negative idx) are replaced.
        if (idx >= 0) continue;
        list.splice(at, 1);
      }
      list.push({ task: d.task, idx, ch, val, path: d.path });
    }
    state.writes[key] = list;
    return state;
  }
  throw new Error(`unknown LangGraph thread event type ${JSON.stringify(event.type)} at seq ${event.seq}`);
}

/**
 * Keeps the newest `keep` checkpoints of namespace `ns` and drops the rest with
 * their writes; values no kept checkpoint reaches are dropped, and a kept
 * list whose base was dropped is rebuilt into a full value first.
 */
export function applyRetention(state: ThreadState, ns: string, keep: number): void {
  const inNs = state.cps.filter((c) => c.ns === ns);
  if (inNs.length <= keep) return;
  const dropped = new Set(inNs.slice(0, inNs.length - keep));
  state.cps = state.cps.filter((c) => !dropped.has(c));
  for (const c of dropped) delete state.writes[writesKey(c.ns, c.id)];
  const referenced = new Set<string>();
  for (const c of state.cps) for (const key of Object.values(c.refs)) referenced.add(key);
  // Flatten the referenced lists whose chain leaves the referenced set; then nothing unreferenced is needed.
  for (const key of referenced) {
    const v = own(state.vals, key);
    if (v === undefined || !('l' in v) || v.b === undefined) continue;
    if (referenced.has(v.b) && chainStaysIn(state.vals, v.b, referenced)) continue;
    state.vals[key] = { l: listItems(state.vals, key)! };
  }
  for (const key of Object.keys(state.vals)) if (!referenced.has(key)) delete state.vals[key];
}

function chainStaysIn(vals: Record<string, StoredValue>, key: string | undefined, set: Set<string>): boolean {
  let at = key;
  const seen = new Set<string>();
  while (at !== undefined && !seen.has(at)) {
    if (!set.has(at)) return false;
    seen.add(at);
    const v = own(vals, at);
    at = v !== undefined && 'l' in v ? v.b : undefined;
  }
  return true;
}

/** The hooks a backend rebuilds thread sessions with. */
export const THREAD_HOOKS = Object.freeze({
  initialState: (_sid: string): ThreadState => initialThreadState(),
  reducer: reduceThread,
  stateSchemaVersion: 1,
});
