/**
 * Power-loss harness on the strict in-memory filesystem.
 *
 * A scenario is a deterministic workload (open, appends, rotation, snapshots,
 * segment deletion, close, reopen) that records every append it issued and
 * every acknowledgement it received. For each k, the scenario runs on a fresh
 * filesystem that freezes at fs call k (the process dies there, mid-protocol);
 * then `outcomes` crash images of that filesystem (random prefixes of the
 * pending operations, with torn sector writes) are recovered and checked:
 *
 * - recovery never throws and reports no damaged or failed session;
 * - every session's recovered history is a prefix of what was issued to it
 *   (right content, right order, no gap, no duplicate);
 * - under `fsync`, every acknowledged event is there; under `write` and
 *   `buffered`, every acknowledged event up to the journal's synced LSN at the
 *   moment of death is there (DESIGN §1's bound);
 * - on a sample of images the store is appendable again and a retried
 *   clientMessageId returns its original seq.
 */
import { openStore, type Store } from '../../src/file/store.ts';
import type { Durability } from '../../src/file/journal/journal.ts';
import type { FileHandle, FileSystem } from '../../src/storage/fs-port.ts';
import { ForwardingFileHandle, ForwardingFileSystem } from '../../src/testing/forwarding-fs.ts';
import { MemoryFileSystem, mulberry32 } from '../../src/testing/memory-fs.ts';
import type { RecoveryHooks } from '../../src/backend/replay.ts';

export interface ChatState {
  ns: readonly number[];
}

export const hooks: RecoveryHooks<ChatState> = {
  initialState: () => ({ ns: [] }),
  reducer: (state, event) => ({ ns: [...state.ns, (event.data as { n: number }).n] }),
};

/** What a scenario issued and what was acknowledged, by session. */
export class Ledger {
  readonly issued = new Map<string, number[]>();
  /** sid → [seq, lsn, cid?] of every acknowledged append */
  readonly acked = new Map<string, { seq: number; lsn: number; cid: string | undefined }[]>();
  #n = 0;

  /** Issues one append of a unique `n` and records its acknowledgement when it resolves. */
  append(store: Store<ChatState>, sid: string, withCid: boolean, pad = 0): Promise<void> {
    const n = ++this.#n;
    const cid = withCid ? `c${n}` : undefined;
    const issued = this.issued.get(sid) ?? [];
    const p = store.append({ sid, type: 'user_message_sent', data: { n, text: 'x'.repeat(pad) }, ...(cid === undefined ? {} : { clientMessageId: cid }) });
    issued.push(n);
    this.issued.set(sid, issued);
    return p.then((r) => {
      const list = this.acked.get(sid) ?? [];
      list.push({ seq: r.seq, lsn: r.lsn, cid });
      this.acked.set(sid, list);
    });
  }
}

export interface ScenarioContext {
  fs: FileSystem;
  ledger: Ledger;
  durability: Durability;
  /** set by the scenario as soon as it has a store, so the harness can read the synced LSN at death */
  store?: Store<ChatState>;
}

export interface Scenario {
  name: string;
  durability: Durability;
  run(ctx: ScenarioContext): Promise<void>;
}

const DATA = '/data';
const DEAD_PID = 2 ** 22 + 12345; // above Linux's pid_max default: never a live process

function open(ctx: ScenarioContext, extra: Record<string, unknown> = {}): Promise<Store<ChatState>> {
  return openStore({ dataDir: DATA, fs: ctx.fs, durability: ctx.durability, journalFlushIntervalMs: 3_600_000, ...extra }, hooks, { lockPid: DEAD_PID });
}

async function rounds(ctx: ScenarioContext, store: Store<ChatState>, count: number, sessions: number, perRound: number, pad: number): Promise<void> {
  for (let r = 0; r < count; r += 1) {
    const all: Promise<void>[] = [];
    for (let s = 0; s < sessions; s += 1) {
      for (let i = 0; i < perRound; i += 1) all.push(ctx.ledger.append(store, `s${s}`, (r + i) % 3 === 0, pad));
    }
    await Promise.all(all);
    if (ctx.durability !== 'fsync') await store.journal.flush();
  }
}

export const scenarios: Scenario[] = [
  {
    name: 'append+sync',
    durability: 'fsync',
    async run(ctx) {
      const store = (ctx.store = await open(ctx));
      await rounds(ctx, store, 6, 3, 2, 0);
    },
  },
  {
    name: 'segment create and rotate',
    durability: 'fsync',
    async run(ctx) {
      const store = (ctx.store = await open(ctx, { journalMaxSizeMb: 4096 / 1024 / 1024 }));
      await rounds(ctx, store, 6, 3, 2, 400);
    },
  },
  {
    name: 'snapshot write and segment deletion',
    durability: 'fsync',
    async run(ctx) {
      const store = (ctx.store = await open(ctx, { journalMaxSizeMb: 4096 / 1024 / 1024, maxSnapshotsPerSession: 1 }));
      for (let phase = 0; phase < 2; phase += 1) {
        await rounds(ctx, store, 3, 2, 2, 500);
        for (const [sid, ns] of ctx.ledger.issued) await store.snapshot(sid, { ns }, ns.length);
      }
      await rounds(ctx, store, 1, 2, 1, 0);
    },
  },
  {
    name: 'lock, close and reopen',
    durability: 'fsync',
    async run(ctx) {
      let store = (ctx.store = await open(ctx));
      await rounds(ctx, store, 2, 2, 1, 0);
      await store.close();
      store = ctx.store = await open(ctx);
      await rounds(ctx, store, 2, 2, 1, 0);
      await store.close();
    },
  },
  {
    name: 'write mode with rotation',
    durability: 'write',
    async run(ctx) {
      const store = (ctx.store = await open(ctx, { journalMaxSizeMb: 4096 / 1024 / 1024 }));
      await rounds(ctx, store, 5, 2, 2, 300);
    },
  },
  {
    name: 'buffered mode',
    durability: 'buffered',
    async run(ctx) {
      const store = (ctx.store = await open(ctx, { journalBatchSize: 3 }));
      await rounds(ctx, store, 5, 2, 2, 0);
    },
  },
];

/** Wraps a filesystem to break one durability step: the negative controls the harness must catch. */
export function breakDurability(fs: FileSystem, broken: 'skip-file-sync' | 'skip-dir-sync'): FileSystem {
  class SkippedSyncHandle extends ForwardingFileHandle {
    override datasync(): Promise<void> {
      return broken === 'skip-file-sync' ? Promise.resolve() : super.datasync();
    }
    override sync(): Promise<void> {
      return broken === 'skip-file-sync' ? Promise.resolve() : super.sync();
    }
  }
  return new (class extends ForwardingFileSystem {
    protected override wrapHandle(handle: FileHandle): FileHandle {
      return new SkippedSyncHandle(handle);
    }
    override syncDir(p: string): Promise<void> {
      return broken === 'skip-dir-sync' ? Promise.resolve() : super.syncDir(p);
    }
  })(fs);
}

export interface HarnessResult {
  scenario: string;
  crashPoints: number;
  crashStates: number;
  violations: string[];
  /** crash images whose journal index was tampered with (tamperIndex) */
  tamperedImages?: number;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i += 1) await new Promise<void>((r) => setImmediate(r));
}

/** Runs `scenario` to completion once to count its fs calls, then crashes it at every call × `outcomes` images. */
/**
 * Negative controls for the journal index: each crash image's index is, before
 * recovery, replaced by the index of another run of the same scenario (same
 * segment names, other salts: a foreign index claiming more than this journal
 * holds), has a byte flipped, or is cut short. Recovery must refuse it (not
 * `used`), report no loss, and still hold every acknowledged event.
 */
export type IndexTamper = 'foreign' | 'flip' | 'cut';
const INDEX_PATH = `${DATA}/checkpoint/journal.idx`;

async function tamperIndex(image: MemoryFileSystem, how: IndexTamper, foreign: Uint8Array | undefined, rng: () => number): Promise<boolean> {
  let bytes: Uint8Array | undefined = image.exists(INDEX_PATH) ? await image.readFile(INDEX_PATH) : undefined;
  if (how === 'foreign') bytes = foreign;
  else if (bytes !== undefined && bytes.length > 0 && how === 'flip') {
    bytes = Uint8Array.from(bytes);
    const at = Math.floor(rng() * bytes.length);
    bytes[at] = bytes[at]! ^ (1 + Math.floor(rng() * 255));
  } else if (bytes !== undefined && how === 'cut') bytes = bytes.subarray(0, Math.floor(rng() * bytes.length));
  else return false;
  if (bytes === undefined || !image.exists(`${DATA}/checkpoint`)) {
    if (bytes === undefined) return false;
    await image.mkdir(`${DATA}/checkpoint`, 0o700).catch(() => undefined);
  }
  const h = await image.open(INDEX_PATH, 'w+');
  await h.write(bytes, 0, bytes.length, 0);
  await h.close();
  return true;
}

export async function runHarness(scenario: Scenario, options: { outcomes: number; seed: number; broken?: 'skip-file-sync' | 'skip-dir-sync'; stopAfterViolations?: number; tamperIndex?: IndexTamper; maxCrashPoints?: number }): Promise<HarnessResult> {
  const full = new MemoryFileSystem();
  await scenario.run({ fs: options.broken === undefined ? full : breakDurability(full, options.broken), ledger: new Ledger(), durability: scenario.durability });
  const foreign = full.exists(INDEX_PATH) ? await full.readFile(INDEX_PATH) : undefined;
  const totalCalls = full.callCount;
  const violations: string[] = [];
  let crashStates = 0;
  let tamperedImages = 0;
  const rng = mulberry32(options.seed);
  const step = options.maxCrashPoints === undefined ? 1 : Math.max(1, Math.floor(totalCalls / options.maxCrashPoints));
  for (let k = 1; k <= totalCalls; k += step) {
    const fs = new MemoryFileSystem();
    fs.freezeAfter(k);
    const ctx: ScenarioContext = { fs: options.broken === undefined ? fs : breakDurability(fs, options.broken), ledger: new Ledger(), durability: scenario.durability };
    let finished = false;
    void scenario.run(ctx).then(() => (finished = true), (err: unknown) => violations.push(`${scenario.name} k=${k}: scenario threw ${String(err)}`));
    while (!fs.frozen && !finished) await settle();
    await settle();
    const syncedLsn = ctx.store?.journal.syncedLsn ?? 0;
    for (let o = 0; o < options.outcomes; o += 1) {
      const image = fs.crashImage(rng);
      crashStates += 1;
      const where = `${scenario.name} k=${k}/${totalCalls} outcome=${o}`;
      const tampered = options.tamperIndex !== undefined && (await tamperIndex(image, options.tamperIndex, foreign, rng));
      if (tampered) tamperedImages += 1;
      const problem = await checkImage(image, ctx.ledger, scenario.durability, syncedLsn, o % 25 === 0, tampered);
      if (problem !== undefined) {
        violations.push(`${where}: ${problem}`);
        if (violations.length >= (options.stopAfterViolations ?? 20)) return { scenario: scenario.name, crashPoints: k, crashStates, violations, tamperedImages };
      }
    }
  }
  return { scenario: scenario.name, crashPoints: options.maxCrashPoints === undefined ? totalCalls : Math.ceil(totalCalls / step), crashStates, violations, tamperedImages };
}

async function checkImage(image: MemoryFileSystem, ledger: Ledger, durability: Durability, syncedLsn: number, deep: boolean, tampered = false): Promise<string | undefined> {
  let store: Store<ChatState>;
  try {
    store = await openStore({ dataDir: DATA, fs: image, durability: 'fsync' }, hooks);
  } catch (err) {
    return `recovery threw: ${(err as Error).stack ?? String(err)}`;
  }
  try {
    const report = store.recoveryReport();
    // Power loss never takes what was synced: the high-water mark must never call it a loss.
    if (report.loss !== undefined) return `recovery reported a loss against the ${report.loss.source}'s high-water mark: ${JSON.stringify(report.loss)}`;
    if (tampered && report.journal.index?.used === true) return `a tampered journal index was used: ${JSON.stringify(report.journal.index)}`;
    if (report.counts.damaged > 0 || report.counts.failed > 0) {
      const bad = report.sessions.filter((s) => s.status === 'damaged' || s.status === 'failed');
      return `recovery reported ${JSON.stringify(bad)} journal damage ${JSON.stringify(report.journal.damage)}`;
    }
    for (const [sid, issued] of ledger.issued) {
      const ns = store.recovered.get(sid)?.state.ns ?? [];
      for (let i = 0; i < ns.length; i += 1) {
        if (ns[i] !== issued[i]) return `session ${sid}: event ${i + 1} is n=${ns[i]}, issued n=${issued[i]}`;
      }
      const mustHave = (ledger.acked.get(sid) ?? []).filter((a) => durability === 'fsync' || a.lsn <= syncedLsn);
      const needed = Math.max(0, ...mustHave.map((a) => a.seq));
      if (ns.length < needed) return `session ${sid}: ${ns.length} events recovered, but seq ${needed} was acknowledged${durability === 'fsync' ? '' : ` and synced (synced lsn ${syncedLsn})`}`;
    }
    if (deep) {
      // Appendable after repair, and dedupe of acknowledged clientMessageIds survives the crash.
      for (const [sid, acks] of ledger.acked) {
        const withCid = acks.filter((a) => a.cid !== undefined && (durability === 'fsync' || a.lsn <= syncedLsn));
        const last = withCid.at(-1);
        if (last !== undefined) {
          const again = await store.append({ sid, type: 'user_message_sent', data: { n: -1 }, clientMessageId: last.cid! });
          if (!again.duplicate || again.seq !== last.seq) return `session ${sid}: retried clientMessageId ${last.cid} gave ${JSON.stringify(again)}, expected seq ${last.seq}`;
        }
        const next = await store.append({ sid, type: 'user_message_sent', data: { n: -2 } });
        const expected = (store.recovered.get(sid)?.seq ?? 0) + 1;
        if (next.seq !== expected) return `session ${sid}: append after recovery got seq ${next.seq}, expected ${expected}`;
      }
    }
    return undefined;
  } finally {
    await store.close().catch(() => undefined);
  }
}
