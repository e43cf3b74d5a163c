/**
 * `ArborSaver`: a LangGraph.js checkpointer (`BaseCheckpointSaver`) on Arbor's
 * storage engine. One Arbor session per thread (every checkpoint namespace of
 * the thread in it), events for checkpoints and pending writes, snapshots of
 * the thread's state for compaction. See docs/langgraph.md.
 */
import {
  BaseCheckpointSaver,
  TASKS,
  WRITES_IDX_MAP,
  compareWritesSortKeys,
  getCheckpointId,
  maxChannelVersion,
  writesSortKey,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type PendingWrite,
  type SerializerProtocol,
} from '@langchain/langgraph-checkpoint';
import type { RunnableConfig } from '@langchain/core/runnables';
import { isDeepStrictEqual } from 'node:util';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import type { SessionBackend } from '../backend/backend.ts';
import { openBackend, type PostgresOptions, type StoreOptions } from '../backends.ts';
import {
  LG_PUT,
  LG_WRITES,
  THREAD_HOOKS,
  initialThreadState,
  listDelta,
  listItems,
  reduceThread,
  threadSessionId,
  valueKey,
  writesKey,
  type PutEventData,
  type PutValue,
  type Ser,
  type StoredCheckpoint,
  type StoredValue,
  type ThreadState,
  type WritesEventData,
} from './thread-state.ts';

/** How ArborSaver opens its storage: the file store's options (`dataDir`…), or `postgres`; plus its own. */
export interface ArborSaverOptions extends Partial<StoreOptions> {
  /** Keep the checkpoints in PostgreSQL (connectionString or pool, schema…) instead of files under `dataDir`. */
  postgres?: Omit<PostgresOptions<ThreadState>, 'unsafeDisableFencing'>;
  /** Checkpoints kept per thread and namespace for time travel: `'all'` (default) or the newest N. */
  retention?: 'all' | number;
  /** A thread's events between two snapshots of it (default 200); snapshots compact the journal. */
  snapshotEvery?: number;
  /** LangGraph's serializer (default: JsonPlusSerializer). */
  serde?: SerializerProtocol;
  /** Threads kept in memory (default 1000); beyond it the least recently used idle ones are dropped (and their PostgreSQL leases given up) and load again on their next use. */
  maxThreadsInMemory?: number;
}

interface Thread {
  sid: string;
  state: ThreadState;
  /** seq of the last event applied to `state` (appends in flight included) */
  seq: number;
  inflight: number;
  /** calls using the thread now: it is not dropped from memory while > 0 */
  users: number;
  sinceSnapshot: number;
  snapshotting: boolean;
  /** list values rebuilt or put recently, by value key (in memory only): their items and, once known, the values */
  lists: Map<string, CachedList>;
  /** bytes of serialized values appended since the last snapshot, and the size of that snapshot */
  bytesSince: number;
  lastSnapshotBytes: number;
  /** the newest list value put per namespace and channel: the delta base when the parent has none */
  lastList: Map<string, string>;
}

/** A list value held in memory: its stored items and the values they are (the array put, or the one getTuple rebuilt). */
interface CachedList {
  items: Ser[];
  values: unknown[] | undefined;
}

const LIST_CACHE_SIZE = 8;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function invalid(field: string, message: string): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, message, { field });
}

function threadIdOf(config: RunnableConfig, what: string): string {
  const tid: unknown = config?.configurable?.thread_id;
  if (tid === undefined || tid === null || tid === '') {
    throw invalid('configurable.thread_id', `${what}: the config has no configurable.thread_id (pass { configurable: { thread_id } })`);
  }
  return String(tid);
}

/** Keeps a list value in the thread's small cache of recent ones (newest last). */
function remember(t: Thread, key: string, entry: CachedList): void {
  t.lists.delete(key);
  t.lists.set(key, entry);
  if (t.lists.size > LIST_CACHE_SIZE) t.lists.delete(t.lists.keys().next().value as string);
}

/** The items of the thread's cached lists, by key (what `listItems` may start from). */
function itemCache(t: Thread): Map<string, Ser[]> {
  const m = new Map<string, Ser[]>();
  for (const [k, v] of t.lists) m.set(k, v.items);
  return m;
}

function serBytes(s: Ser): number {
  return s[0].length + s[2].length + 8;
}

export class ArborSaver extends BaseCheckpointSaver {
  readonly #backend: SessionBackend<ThreadState>;
  readonly #retention: number | undefined;
  readonly #snapshotEvery: number;
  /** threads in memory, least recently used first */
  readonly #threads = new Map<string, Promise<Thread>>();
  readonly #loaded = new Map<string, Thread>();
  readonly #maxThreads: number;
  readonly #background = new Set<Promise<unknown>>();
  /** serialized form of list items (message objects) already serialized, by identity */
  readonly #serOf = new WeakMap<object, Ser>();
  /** items already deserialized, by their stored form */
  readonly #valueOf = new WeakMap<Ser, unknown>();
  #closed = false;

  private constructor(backend: SessionBackend<ThreadState>, retention: number | undefined, snapshotEvery: number, serde: SerializerProtocol | undefined, maxThreads: number) {
    super(serde);
    this.#maxThreads = maxThreads;
    this.#backend = backend;
    this.#retention = retention;
    this.#snapshotEvery = snapshotEvery;
  }

  /** Opens the storage (files under `dataDir`, or PostgreSQL with `postgres`) and returns the saver. */
  static async open(options: ArborSaverOptions): Promise<ArborSaver> {
    const { postgres, retention = 'all', snapshotEvery = 200, serde, maxThreadsInMemory = 1000, ...store } = options ?? {};
    if (!Number.isSafeInteger(maxThreadsInMemory) || maxThreadsInMemory < 1) {
      throw invalid('maxThreadsInMemory', `maxThreadsInMemory must be a positive integer, got ${JSON.stringify(maxThreadsInMemory)}`);
    }
    if (retention !== 'all' && (!Number.isSafeInteger(retention) || retention < 1)) {
      throw invalid('retention', `retention must be 'all' or a positive integer (checkpoints kept per thread), got ${JSON.stringify(retention)}`);
    }
    if (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 1) {
      throw invalid('snapshotEvery', `snapshotEvery must be a positive integer, got ${JSON.stringify(snapshotEvery)}`);
    }
    if (postgres === undefined && store.dataDir === undefined) {
      throw invalid('dataDir', 'ArborSaver.open needs dataDir (files) or postgres (PostgreSQL)');
    }
    // The newest snapshot holds the whole thread (every kept checkpoint): older ones add nothing but a fallback.
    const backend = await openBackend<ThreadState>({ store: { maxSnapshotsPerSession: 2, ...store }, postgres }, THREAD_HOOKS);
    return new ArborSaver(backend, retention === 'all' ? undefined : retention, snapshotEvery, serde, maxThreadsInMemory);
  }

  /** 'file' or 'postgres' */
  get backendKind(): string {
    return this.#backend.kind;
  }

  /** Waits for snapshots in progress and closes the storage. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#background]);
    await Promise.allSettled([...this.#threads.values()]);
    await this.#backend.close();
  }

  // ---------------------------------------------------------------- serialization

  async #ser(value: unknown): Promise<Ser> {
    const [type, bytes] = await this.serde.dumpsTyped(value);
    if (typeof bytes === 'string') return [type, 's', bytes];
    if (type === 'json') {
      try {
        return [type, 's', utf8.decode(bytes)];
      } catch {
        // not UTF-8 after all: stored as base64 below
      }
    }
    return [type, 'b', Buffer.from(bytes).toString('base64')];
  }

  async #de(s: Ser): Promise<unknown> {
    return this.serde.loadsTyped(s[0], s[1] === 's' ? s[2] : Buffer.from(s[2], 'base64'));
  }

  /** One item of a list value; objects already seen (put before, or rebuilt by getTuple) are not serialized again. */
  async #serItem(value: unknown): Promise<Ser> {
    if (typeof value !== 'object' || value === null) return this.#ser(value);
    const known = this.#serOf.get(value);
    if (known !== undefined) return known;
    const s = await this.#ser(value);
    this.#serOf.set(value, s);
    this.#valueOf.set(s, value);
    return s;
  }

  async #deItem(s: Ser): Promise<unknown> {
    if (this.#valueOf.has(s)) return this.#valueOf.get(s);
    const value = await this.#de(s);
    if (typeof value === 'object' && value !== null) {
      this.#valueOf.set(s, value);
      this.#serOf.set(value, s);
    }
    return value;
  }

  // ---------------------------------------------------------------- threads

  #thread(sid: string): Promise<Thread> {
    if (this.#closed) return Promise.reject(new ArborError(ErrorCodes.CLOSED, 'ArborSaver is closed'));
    let p = this.#threads.get(sid);
    if (p !== undefined) {
      // most recently used last
      this.#threads.delete(sid);
      this.#threads.set(sid, p);
    } else {
      p = this.#backend.loadSession(sid).then((r) => {
        const t: Thread = {
          sid,
          state: r?.state ?? initialThreadState(),
          seq: r?.seq ?? 0,
          inflight: 0,
          users: 0,
          sinceSnapshot: 0,
          snapshotting: false,
          lists: new Map(),
          lastList: new Map(),
          bytesSince: 0,
          lastSnapshotBytes: 0,
        };
        if (this.#threads.get(sid) === p) this.#loaded.set(sid, t);
        return t;
      });
      this.#threads.set(sid, p);
      p.catch(() => {
        if (this.#threads.get(sid) === p) this.#threads.delete(sid);
      });
    }
    return p;
  }

  /** Runs `fn` with the thread loaded and held in memory. */
  async #with<T>(sid: string, fn: (t: Thread) => Promise<T>): Promise<T> {
    const t = await this.#thread(sid);
    t.users += 1;
    try {
      return await fn(t);
    } finally {
      t.users -= 1;
      this.#evictIdle();
    }
  }

  /** Drops the least recently used idle threads beyond `maxThreadsInMemory`; they load again from the backend on their next use. */
  #evictIdle(): void {
    if (this.#threads.size <= this.#maxThreads) return;
    for (const sid of [...this.#threads.keys()]) {
      if (this.#threads.size <= this.#maxThreads) return;
      const t = this.#loaded.get(sid);
      if (t === undefined || t.users > 0 || t.inflight > 0 || t.snapshotting) continue;
      this.#threads.delete(sid);
      this.#loaded.delete(sid);
      void this.#backend.release(sid).catch(() => undefined);
    }
  }

  /**
   * Applies the event to the thread now (so that the next put sees it) and
   * resolves once the backend holds it durably. On a failure the thread is
   * dropped from memory: the next call loads what is durable.
   */
  async #append(t: Thread, type: string, data: PutEventData | WritesEventData, bytes: number): Promise<void> {
    const expectedSeq = t.seq;
    t.seq += 1;
    reduceThread(t.state, { lsn: 0, sid: t.sid, seq: t.seq, ts: Date.now(), type, v: 1, data });
    t.inflight += 1;
    try {
      await this.#backend.append({ sid: t.sid, type, data, expectedSeq });
    } catch (err) {
      this.#threads.delete(t.sid);
      this.#loaded.delete(t.sid);
      throw err;
    } finally {
      t.inflight -= 1;
    }
    t.sinceSnapshot += 1;
    t.bytesSince += bytes;
    this.#maybeSnapshot(t);
  }

  /**
   * Snapshots the thread once `snapshotEvery` events and at least as many
   * bytes as its last snapshot took were appended since: a snapshot holds the
   * whole thread, so spacing them by its size keeps the work of all of them
   * linear in the thread's length.
   */
  #maybeSnapshot(t: Thread): void {
    if (t.inflight > 0 || t.snapshotting || t.sinceSnapshot < this.#snapshotEvery || t.bytesSince < t.lastSnapshotBytes || this.#closed) return;
    if (this.#backend.persistence?.snapshots === false) return;
    if (this.#threads.get(t.sid) === undefined) return;
    t.snapshotting = true;
    t.sinceSnapshot = 0;
    t.bytesSince = 0;
    // A copy: the thread goes on changing while the snapshot is written.
    const p = this.#backend
      .snapshot(t.sid, structuredClone(t.state), t.seq)
      .then((r) => {
        t.lastSnapshotBytes = r.bytes;
      })
      .catch(() => undefined)
      .finally(() => {
        t.snapshotting = false;
        this.#background.delete(p);
      });
    this.#background.add(p);
  }

  // ---------------------------------------------------------------- BaseCheckpointSaver

  async put(config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, newVersions: ChannelVersions): Promise<RunnableConfig> {
    const tid = threadIdOf(config, 'put');
    const ns: string = config.configurable?.checkpoint_ns ?? '';
    const parent: string | undefined = config.configurable?.checkpoint_id || undefined;
    const { channel_values: values, ...rest } = checkpoint;
    const channelValues = (values ?? {}) as Record<string, unknown>;
    const cp = await this.#ser(rest);
    const md = await this.#ser(metadata);
    return this.#with(threadSessionId(tid), async (t) => {
      // Serialize first (awaits); the state is read and changed below without an await in between.
      const changed: [string, string, unknown, Ser[] | Ser | undefined][] = [];
      for (const [ch, version] of Object.entries(newVersions ?? {})) {
        const key = valueKey(ns, ch, version);
        if (!Object.hasOwn(channelValues, ch) || channelValues[ch] === undefined) {
          changed.push([ch, key, undefined, undefined]);
          continue;
        }
        const value = channelValues[ch];
        if (Array.isArray(value)) {
          // The leading items that are the very objects of the newest list put or read are not serialized again.
          const recent = t.lists.get(t.lastList.get(`${ns}\u0000${ch}`) ?? '');
          const items: Ser[] = new Array(value.length);
          let i = 0;
          if (recent?.values !== undefined) {
            const n = Math.min(value.length, recent.values.length, recent.items.length);
            while (i < n && value[i] === recent.values[i] && typeof value[i] === 'object' && value[i] !== null) {
              items[i] = recent.items[i]!;
              i += 1;
            }
          }
          for (; i < value.length; i += 1) items[i] = await this.#serItem(value[i]);
          changed.push([ch, key, value, items]);
        } else {
          changed.push([ch, key, value, await this.#ser(value)]);
        }
      }
      const state = t.state;
      const parentEntry = parent === undefined ? undefined : state.cps.find((c) => c.ns === ns && c.id === parent);
      let bytes = serBytes(cp) + serBytes(md);
      const vals: PutValue[] = [];
      for (const [ch, key, value, ser] of changed) {
        if (ser === undefined) {
          vals.push([ch, key, { e: 1 }]);
        } else if (Array.isArray(value)) {
          const items = ser as Ser[];
          const baseKey = this.#baseKey(t, ns, ch, parentEntry);
          const base = baseKey === undefined ? undefined : (t.lists.get(baseKey)?.items ?? listItems(state.vals, baseKey, itemCache(t)));
          const delta = listDelta(items, base, baseKey);
          vals.push([ch, key, delta]);
          for (const item of (delta as { l: Ser[] }).l) bytes += serBytes(item);
          remember(t, key, { items, values: (value as unknown[]).slice() });
          t.lastList.set(`${ns}\u0000${ch}`, key);
        } else {
          vals.push([ch, key, { f: ser as Ser }]);
          bytes += serBytes(ser as Ser);
        }
      }
      const stored = new Set(vals.map(([, key]) => key));
      const refs: Record<string, string> = {};
      for (const [ch, version] of Object.entries(checkpoint.channel_versions ?? {})) {
        const key = valueKey(ns, ch, version);
        if (stored.has(key) || Object.hasOwn(state.vals, key)) refs[ch] = key;
      }
      const data: PutEventData = { tid, ns, id: checkpoint.id, cp, md, vals, refs };
      if (parent !== undefined) data.parent = parent;
      if (this.#retention !== undefined) data.keep = this.#retention;
      await this.#append(t, LG_PUT, data, bytes);
      return { configurable: { thread_id: tid, checkpoint_ns: ns, checkpoint_id: checkpoint.id } };
    });
  }

  /** The value a list is stored as a delta against: the parent's value of the channel, else the newest put. */
  #baseKey(t: Thread, ns: string, ch: string, parent: StoredCheckpoint | undefined): string | undefined {
    const candidates = [parent?.refs[ch], t.lastList.get(`${ns}\u0000${ch}`)];
    for (const key of candidates) {
      if (key === undefined || !Object.hasOwn(t.state.vals, key)) continue;
      if ('l' in (t.state.vals[key] as StoredValue)) return key;
    }
    return undefined;
  }

  async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath?: string): Promise<void> {
    const tid = threadIdOf(config, 'putWrites');
    const ns: string = config.configurable?.checkpoint_ns ?? '';
    const id: unknown = config.configurable?.checkpoint_id;
    if (typeof id !== 'string' || id === '') throw invalid('configurable.checkpoint_id', 'putWrites: the config has no configurable.checkpoint_id');
    const w: [number, string, Ser][] = [];
    for (let i = 0; i < writes.length; i += 1) {
      const [ch, value] = writes[i]!;
      w.push([WRITES_IDX_MAP[ch] || i, ch, await this.#ser(value)]);
    }
    await this.#with(threadSessionId(tid), (t) => this.#append(t, LG_WRITES, { tid, ns, id, task: String(taskId), path: taskPath ?? '', w }, w.reduce((n, [, , s]) => n + serBytes(s), 0)));
  }

  async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    const raw: unknown = config?.configurable?.thread_id;
    if (raw === undefined || raw === null || raw === '') return undefined;
    const ns: string = config.configurable?.checkpoint_ns ?? '';
    const id = getCheckpointId(config);
    return this.#with(threadSessionId(String(raw)), async (t) => {
      let entry: StoredCheckpoint | undefined;
      if (id) {
        entry = t.state.cps.find((c) => c.ns === ns && c.id === id);
      } else {
        for (const c of t.state.cps) if (c.ns === ns && (entry === undefined || c.id > entry.id)) entry = c;
      }
      return entry === undefined ? undefined : this.#tuple(t, entry);
    });
  }

  async *list(config: RunnableConfig, options?: CheckpointListOptions): AsyncGenerator<CheckpointTuple> {
    const { before, filter } = options ?? {};
    let limit = options?.limit;
    const raw: unknown = config?.configurable?.thread_id;
    const ns: string | undefined = config?.configurable?.checkpoint_ns;
    const onlyId: string | undefined = config?.configurable?.checkpoint_id || undefined;
    const beforeId: string | undefined = before?.configurable?.checkpoint_id || undefined;
    const sids = raw !== undefined && raw !== null && raw !== '' ? [threadSessionId(String(raw))] : (await this.#backend.listSessions()).map((s) => s.sid);
    for (const sid of sids) {
      if (limit !== undefined && limit <= 0) return;
      // One thread's tuples at a time, rebuilt while it is held in memory.
      const tuples = await this.#with(sid, async (t) => {
        const out: CheckpointTuple[] = [];
        const entries = t.state.cps
          .filter((c) => (ns === undefined || c.ns === ns) && (onlyId === undefined || c.id === onlyId) && (beforeId === undefined || c.id < beforeId))
          .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
        for (const entry of entries) {
          if (limit !== undefined && limit <= 0) break;
          if (filter !== undefined && Object.keys(filter).length > 0) {
            const metadata = (await this.#de(entry.md)) as Record<string, unknown>;
            if (!Object.entries(filter).every(([k, v]) => isDeepStrictEqual(metadata?.[k], v))) continue;
          }
          if (limit !== undefined) limit -= 1;
          out.push(await this.#tuple(t, entry));
        }
        return out;
      });
      yield* tuples;
    }
  }

  async deleteThread(threadId: string): Promise<void> {
    const sid = threadSessionId(String(threadId));
    await this.#with(sid, async (t) => {
      this.#threads.delete(sid);
      this.#loaded.delete(sid);
      if (t.seq === 0 && !(await this.#backend.exists(sid))) {
        await this.#backend.release(sid);
        return;
      }
      await this.#backend.deleteSession(sid);
    });
  }

  /** The checkpoint tuple of a stored checkpoint: its values rebuilt from the stored versions (and deltas). */
  async #tuple(t: Thread, entry: StoredCheckpoint): Promise<CheckpointTuple> {
    const state = t.state;
    const tid = state.tid ?? t.sid;
    const checkpoint = (await this.#de(entry.cp)) as Checkpoint;
    const channelValues: Record<string, unknown> = {};
    for (const [ch, key] of Object.entries(entry.refs)) {
      const stored = Object.hasOwn(state.vals, key) ? state.vals[key] : undefined;
      if (stored === undefined || 'e' in stored) continue;
      if ('f' in stored) {
        channelValues[ch] = await this.#de(stored.f);
        continue;
      }
      const cached = t.lists.get(key);
      if (cached?.values !== undefined) {
        channelValues[ch] = cached.values.slice();
        continue;
      }
      const items = cached?.items ?? listItems(state.vals, key, itemCache(t))!;
      const value: unknown[] = new Array(items.length);
      for (let i = 0; i < items.length; i += 1) value[i] = await this.#deItem(items[i]!);
      remember(t, key, { items, values: value.slice() });
      channelValues[ch] = value;
    }
    checkpoint.channel_values = channelValues;
    if (checkpoint.v < 4 && entry.parent !== undefined) {
      // Checkpoints of format < 4 kept pending sends as writes to TASKS against the parent.
      const sends = this.#orderedWrites(state, entry.ns, entry.parent).filter((w) => w.ch === TASKS);
      checkpoint.channel_values[TASKS] = await Promise.all(sends.map((w) => this.#de(w.val)));
      const versions = Object.values(checkpoint.channel_versions ?? {});
      checkpoint.channel_versions ??= {};
      checkpoint.channel_versions[TASKS] = versions.length > 0 ? maxChannelVersion(...versions) : this.getNextVersion(undefined);
    }
    const pendingWrites: CheckpointPendingWrite[] = [];
    for (const w of this.#orderedWrites(state, entry.ns, entry.id)) pendingWrites.push([w.task, w.ch, await this.#de(w.val)]);
    const tuple: CheckpointTuple = {
      config: { configurable: { thread_id: tid, checkpoint_ns: entry.ns, checkpoint_id: entry.id } },
      checkpoint,
      metadata: (await this.#de(entry.md)) as CheckpointMetadata,
      pendingWrites,
    };
    if (entry.parent !== undefined) tuple.parentConfig = { configurable: { thread_id: tid, checkpoint_ns: entry.ns, checkpoint_id: entry.parent } };
    return tuple;
  }

  #orderedWrites(state: ThreadState, ns: string, id: string) {
    const key = writesKey(ns, id);
    const list = Object.hasOwn(state.writes, key) ? state.writes[key]! : [];
    return list
      .map((w) => ({ w, k: writesSortKey(w.path, w.task, w.idx) }))
      .sort((a, b) => compareWritesSortKeys(a.k, b.k))
      .map(({ w }) => w);
  }
}
