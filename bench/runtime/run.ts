/**
 * Arbor runtime benchmark: the hot tier, sendMessage under streaming load,
 * restart after SIGKILL, bytes on disk of a long chat, a tool step and the
 * replay cost of long sessions — each figure beside its baseline from the
 * same run. See bench/README.md.
 *
 *   node --import tsx bench/runtime/run.ts [--tiny] [--peers] [--json] [--seconds S] [--load-full] [--health-only]
 *
 * Targets are reported as PASS/MISS/INFO lines and never fail the run: the exit
 * code is non-zero only when the benchmark itself breaks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { monitorEventLoopDelay, performance, PerformanceObserver, type IntervalHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { constants as zc, brotliCompressSync } from 'node:zlib';
import { createArbor, initialSessionState, MockProvider, NodeFileSystem, type Arbor, type ChatTurn, type FileHandle, type LlmProvider, type OpenFlags, type SessionState, type StreamRequest } from '../../src/index.ts';
import { ForwardingFileHandle, ForwardingFileSystem } from '../../src/testing.ts';
import { DEFAULT_SIZING_BUDGET, HotTier } from '../../src/hot/hot-tier.ts';
import { mulberry32 } from '../../src/testing/memory-fs.ts';
import { benchUsage, parseBenchArgs, readConfig, runMain, type BaseConfig } from '../lib/cli.ts';
import { loadLangGraphModules } from '../lib/peers.ts';
import { maybeGc, progress, runInterleaved, sleep, type Phase } from '../lib/phases.ts';
import { benchMeta, bytesShort, fmt, fmtInt, headline, kib, mib, printResults, startRun, table, targetLines, type BenchMeta, type Target } from '../lib/report.ts';
import { median, Samples } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';
import { renderReplay, replayConfig, replayFigures, type ReplayResults } from './replay.ts';

// ---- configuration -----------------------------------------------------------

const USAGE = benchUsage(
  'bench/runtime/run.ts',
  'also store the chat through LangGraph.js SqliteSaver (needs: npm install --prefix bench)',
  'measured seconds of each load figure (default 5; 0.5 with --tiny); hot-tier figures get S/5',
);

interface Config extends BaseConfig {
  /** (a) keys in the hot tier and the Map */
  hotKeys: number;
  /** (a) sessions per storeMany call */
  storeManyEntries: number;
  /** (a) health(): sessions × events of the large hot tier, and sessions of the small one (same events each) */
  healthSessions: number;
  healthEvents: number;
  healthSmallSessions: number;
  /** --health-only: run (a)'s health() figure alone */
  healthOnly: boolean;
  /** (b) concurrent sessions */
  loadSessions: number;
  mockChunks: number;
  mockChunkDelayMs: number;
  /** (c) sessions × events written before the SIGKILL */
  restartSessions: number;
  restartEvents: number;
  /** (c) restarts measured (each beside an empty-directory start) */
  restartRounds: number;
  /** (d) turns of the chat, and how often its bytes are reported */
  chatTurns: number;
  chatReportEvery: number;
  /** (d) turns of the StateGraph variant (it writes 3 full checkpoints per turn: quadratic, slow) */
  stateGraphTurns: number;
  /** (f) the replay figure at its --tiny scale */
  replayTiny: boolean;
}

function parseConfig(argv: string[]): Config {
  // --load-full: (b) at full scale, every other figure at its --tiny scale (a quick run of the load figures alone).
  const loadFull = argv.includes('--load-full');
  // --health-only: (a)'s health() figure alone, at full scale (or --tiny's), nothing else.
  const healthOnly = argv.includes('--health-only');
  const base = parseBenchArgs(
    argv.filter((a) => a !== '--load-full' && a !== '--health-only'),
    USAGE,
  );
  const tiny = base.tiny || loadFull;
  return {
    ...base,
    hotKeys: tiny ? 1_000 : 10_000,
    storeManyEntries: 1_000,
    healthSessions: base.tiny ? 1_000 : 10_000,
    healthEvents: base.tiny ? 20 : 100,
    healthSmallSessions: 100,
    healthOnly,
    loadSessions: base.tiny ? 100 : 1_000,
    mockChunks: 8,
    mockChunkDelayMs: 20,
    restartSessions: tiny ? 200 : 10_000,
    restartEvents: tiny ? 20 : 100,
    restartRounds: tiny ? 1 : 3,
    chatTurns: tiny ? 100 : 1_000,
    chatReportEvery: tiny ? 10 : 100,
    stateGraphTurns: tiny ? 20 : 200,
    replayTiny: tiny,
  };
}

// ---- helpers -------------------------------------------------------------------

/** Sum of the sizes of every file under `dir` (apparent bytes, and allocated 512-byte blocks). */
async function dirBytes(dir: string): Promise<{ bytes: number; allocatedBytes: number; files: number }> {
  let bytes = 0;
  let allocatedBytes = 0;
  let files = 0;
  const walk = async (d: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = await stat(p);
      } catch {
        continue; // a temp file renamed away meanwhile
      }
      if (st.isDirectory()) await walk(p);
      else {
        bytes += st.size;
        allocatedBytes += st.blocks * 512;
        files += 1;
      }
    }
  };
  await walk(dir);
  return { bytes, allocatedBytes, files };
}

/** Times the journal's fdatasync calls while `recording` and counts snapshot files written; everything else is forwarded. */
class SyncTimingFileSystem extends ForwardingFileSystem {
  readonly datasync = new Samples();
  datasyncs = 0;
  snapshotsWritten = 0;
  recording = false;

  override open(path: string, flags: OpenFlags, mode?: number): Promise<FileHandle> {
    if (path.includes('/snapshots/') && flags !== 'r') this.snapshotsWritten += 1;
    return super.open(path, flags, mode);
  }

  protected override wrapHandle(handle: FileHandle, path: string): FileHandle {
    const fs = this;
    if (!path.includes('/journals/')) return handle;
    return new (class extends ForwardingFileHandle {
      override async datasync(): Promise<void> {
        fs.datasyncs += 1;
        if (!fs.recording) return super.datasync();
        const t0 = performance.now();
        await super.datasync();
        fs.datasync.push(performance.now() - t0);
      }
    })(handle);
  }
}

// ---- (a) the hot tier ------------------------------------------------------------

interface OpResult {
  name: string;
  /** per call, each timed on its own with performance.now() (timer overhead included) */
  p50Ns: number;
  p99Ns: number;
  maxNs: number;
  samples: number;
  /** per call, amortised over untimed runs of 10,000 calls */
  meanNs: number;
}

/** Calls `op(i)` over a shuffled key order: batches of 1,000 timed one by one, then 10,000 timed as a whole. */
class OpPhase implements Phase {
  readonly label: string;
  readonly #name: string;
  readonly #op: (i: number) => void;
  readonly #keys: number;
  readonly #order: Uint32Array;
  readonly #lat = new Samples();
  #amortNs = 0;
  #amortOps = 0;
  #at = 0;

  constructor(name: string, keys: number, order: Uint32Array, op: (i: number) => void) {
    this.#name = name;
    this.label = `hot tier: ${name}`;
    this.#keys = keys;
    this.#order = order;
    this.#op = op;
  }

  #next(): number {
    const i = this.#order[this.#at]!;
    this.#at = (this.#at + 1) % this.#order.length;
    return i;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const op = this.#op;
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) for (let k = 0; k < 1000; k += 1) op(this.#next());
    const end = performance.now() + measureMs;
    while (performance.now() < end) {
      for (let k = 0; k < 1000; k += 1) {
        const i = this.#next();
        const t0 = performance.now();
        op(i);
        this.#lat.push((performance.now() - t0) * 1e6);
      }
      const t0 = performance.now();
      for (let k = 0; k < 10_000; k += 1) op(this.#next());
      this.#amortNs += (performance.now() - t0) * 1e6;
      this.#amortOps += 10_000;
      // Let timers and I/O run now and then, like a server's loop would.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    void this.#keys;
  }

  result(): OpResult {
    const s = this.#lat.summary();
    return { name: this.#name, p50Ns: s.p50, p99Ns: s.p99, maxNs: s.max, samples: this.#lat.count, meanNs: this.#amortNs / Math.max(1, this.#amortOps) };
  }

  async close(): Promise<void> {}
}

interface BulkResult {
  name: string;
  entries: number;
  calls: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

/** Times `run()` (one bulk call) repeatedly. */
class BulkPhase implements Phase {
  readonly label: string;
  readonly #name: string;
  readonly #entries: number;
  readonly #run: () => void;
  readonly #lat = new Samples();

  constructor(name: string, entries: number, run: () => void) {
    this.#name = name;
    this.label = `hot tier: ${name}`;
    this.#entries = entries;
    this.#run = run;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) this.#run();
    const end = performance.now() + measureMs;
    let k = 0;
    while (performance.now() < end) {
      const t0 = performance.now();
      this.#run();
      this.#lat.push((performance.now() - t0) * 1000);
      if (++k % 20 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  result(): BulkResult {
    const s = this.#lat.summary();
    return { name: this.#name, entries: this.#entries, calls: this.#lat.count, p50Us: s.p50, p99Us: s.p99, maxUs: s.max };
  }

  async close(): Promise<void> {}
}

interface HotResults {
  keys: number;
  ops: { hotStore: OpResult; mapSet: OpResult; hotRetrieve: OpResult; mapGet: OpResult; timerOnly: OpResult };
  storeMany: { hot: BulkResult; map: BulkResult };
}

/** A pseudo-random permutation of 0..n-1 (fixed seed). */
function shuffled(n: number, seed: number): Uint32Array {
  const rand = mulberry32(seed);
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i += 1) a[i] = i;
  for (let i = n - 1; i > 0; i -= 1) {
    const j = Math.floor(rand() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

async function hotTierFigures(cfg: Config): Promise<HotResults> {
  const n = cfg.hotKeys;
  const ids = Array.from({ length: n }, (_, i) => `sess-${String(i).padStart(6, '0')}`);
  const states = ids.map((id) => ({ ...initialSessionState(id), seq: 1 }) as SessionState);
  const hot = new HotTier<SessionState>();
  const map = new Map<string, SessionState>();
  for (let i = 0; i < n; i += 1) {
    hot.store(ids[i]!, states[i]!);
    map.set(ids[i]!, states[i]!);
  }
  const order = shuffled(n, 7);
  let sink = 0;
  const opSeconds = cfg.seconds / 5;
  const hotStore = new OpPhase('HotTier.store', n, order, (i) => hot.store(ids[i]!, states[i]!));
  const mapSet = new OpPhase('Map.set', n, order, (i) => void map.set(ids[i]!, states[i]!));
  const timerOnly = new OpPhase('(timer only)', n, order, (i) => void (sink += i));
  await runInterleaved(cfg, [hotStore, mapSet, timerOnly], opSeconds);
  const hotRetrieve = new OpPhase('HotTier.retrieve', n, order, (i) => void (sink += hot.retrieve(ids[i]!)!.seq));
  const mapGet = new OpPhase('Map.get', n, order, (i) => void (sink += map.get(ids[i]!)!.seq));
  await runInterleaved(cfg, [hotRetrieve, mapGet], opSeconds);

  const m = cfg.storeManyEntries;
  const entries: [string, SessionState][] = Array.from({ length: m }, (_, i) => [ids[i % n]!, states[i % n]!]);
  // Each call fills an empty table, as the runtime does with every recovered session at start.
  const many = new BulkPhase(`HotTier.storeMany(${m})`, m, () => void (sink += new HotTier<SessionState>().storeMany(entries)));
  const mapMany = new BulkPhase(`new Map + ${m} × Map.set`, m, () => {
    const mm = new Map<string, SessionState>();
    for (const [k, v] of entries) mm.set(k, v);
    sink += mm.size;
  });
  await runInterleaved(cfg, [many, mapMany], opSeconds);
  if (sink === -1) progress('unreachable');
  return {
    keys: n,
    ops: { hotStore: hotStore.result(), mapSet: mapSet.result(), hotRetrieve: hotRetrieve.result(), mapGet: mapGet.result(), timerOnly: timerOnly.result() },
    storeMany: { hot: many.result(), map: mapMany.result() },
  };
}

interface HealthTier {
  sessions: number;
  eventsPerSession: number;
  /** the settled estimate (every state sized), and the process's heap with both tiers in memory */
  approxBytes: number;
  /** per-call figures are process CPU time (process.cpuUsage around each call), not wall time */
  /** the first health() call after every session was recovered (nothing sized yet) */
  firstCallMs: number;
  /** calls until hot.estimated reached 0 (each sizing at most the budget), and their per-call cost */
  sizingCalls: number;
  sizingP50Ms: number;
  sizingMaxMs: number;
  /** calls once every state is sized (no sizing work left): per call, over batches of 50 (median and worst batch) */
  steadyP50Ms: number;
  steadyMaxMs: number;
  steadyCalls: number;
}

interface HealthResults {
  /** values one health() call may visit to size states (HotTier's default budget) */
  budgetValues: number;
  large: HealthTier;
  small: HealthTier;
  ratios: { firstCall: number; sizingP50: number; steadyP50: number };
  heapUsedBytes: number;
  /** 1 / 5 / 15 min, when the calls were measured */
  loadAverage: number[];
}

/** Process CPU time (user + system, µs resolution) since `c0`, in ms: unlike wall time, barely moved by a busy machine. */
function cpuMs(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1000;
}

/** A hot tier recovered from a journal a child wrote: `sessions` × `events` (complete turns), every session in memory. */
async function recoveredArbor(root: string, cfg: Config, sessions: number, events: number): Promise<Arbor> {
  const dir = await mkdtemp(join(root, 'health-'));
  progress(`health(): a child writes ${sessions.toLocaleString('en-US')} sessions × ${events} events; recovered here, every session in memory`);
  const w = await spawnUntil(['write', '--data-dir', dir, '--sessions', String(sessions), '--events', String(events)], 'ready', cfg.tiny ? 60_000 : 300_000);
  await killAndWait(w.child);
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 8, chunkDelayMs: 20 }) });
  await arbor.whenRecovered();
  // Not through health(): its first call is the figure.
  const inMemory = arbor.sessionsInMemory().length;
  if (inMemory !== sessions) throw new Error(`health(): ${inMemory} sessions in memory, expected ${sessions}`);
  return arbor;
}

/**
 * (a) The cost of one `arbor.health()` call (what every /health probe, scrape
 * and OpenTelemetry collection pays) with a large hot tier beside a small one,
 * both recovered in this process: calls alternate between the two, each timed
 * on its own, from the first call after recovery (nothing sized yet) until both
 * estimates settle, then in the steady state. Each call is measured in process
 * CPU time (`process.cpuUsage()`, µs resolution): a shared machine's load moves
 * it far less than wall time.
 */
async function healthFigures(root: string, cfg: Config): Promise<HealthResults> {
  const large = await recoveredArbor(root, cfg, cfg.healthSessions, cfg.healthEvents);
  const small = await recoveredArbor(root, cfg, cfg.healthSmallSessions, cfg.healthEvents);
  try {
    // Warm-up, so that neither tier's first call pays for compiling the code: health() on an empty runtime,
    // and the hot tier's sizing over copies of the small tier's states in a table of their own.
    const warm = await createArbor({ dataDir: await mkdtemp(join(root, 'health-warm-')) });
    for (let k = 0; k < 200; k += 1) warm.health();
    await warm.close();
    const copies = new HotTier<SessionState>({ sizingBudget: 1_000 });
    for (let k = 0; k < 3; k += 1) {
      for (const sid of small.sessionsInMemory()) copies.store(sid, small.session(sid).state);
      while (copies.memory().estimated > 0);
      copies.clear();
    }
    maybeGc();
    const heapUsedBytes = process.memoryUsage().heapUsed;
    const loadAverage = loadavg();
    progress('health(): timing calls, alternating the large and the small hot tier');
    const tiers = [large, small].map((arbor) => ({ arbor, first: 0, sizing: new Samples(), steady: new Samples(), calls: 0, settled: false, approxBytes: 0 }));
    // Until both estimates settle: every call of a tier still sizing walks up to the budget.
    for (let round = 0; !tiers.every((t) => t.settled); round += 1) {
      if (round > 100_000) throw new Error('health(): the hot-tier estimate never settled');
      for (const t of tiers) {
        if (t.settled) continue;
        const c0 = process.cpuUsage();
        const h = t.arbor.health();
        const ms = cpuMs(c0);
        if (t.calls === 0) t.first = ms;
        t.calls += 1;
        t.sizing.push(ms);
        if (h.hot.estimated === 0) {
          t.settled = true;
          t.approxBytes = h.hot.approxBytes;
        }
      }
      if (round % 20 === 19) await sleep(0);
    }
    // Settled: a call costs microseconds, below cpuUsage's resolution, so batches of 50 calls are timed, alternating.
    const batches = cfg.tiny ? 4 : 20;
    for (let k = 0; k < batches; k += 1) {
      for (const t of tiers) {
        const c0 = process.cpuUsage();
        for (let c = 0; c < 50; c += 1) t.arbor.health();
        t.steady.push(cpuMs(c0) / 50);
      }
      await sleep(0);
    }
    const steadyCalls = batches * 50;
    const tier = (t: (typeof tiers)[number], sessions: number): HealthTier => {
      const sizing = t.sizing.summary();
      const steady = t.steady.summary();
      return { sessions, eventsPerSession: cfg.healthEvents, approxBytes: t.approxBytes, firstCallMs: t.first, sizingCalls: t.calls, sizingP50Ms: sizing.p50, sizingMaxMs: sizing.max, steadyP50Ms: steady.p50, steadyMaxMs: steady.max, steadyCalls };
    };
    const l = tier(tiers[0]!, cfg.healthSessions);
    const s = tier(tiers[1]!, cfg.healthSmallSessions);
    return {
      budgetValues: DEFAULT_SIZING_BUDGET,
      large: l,
      small: s,
      ratios: { firstCall: l.firstCallMs / s.firstCallMs, sizingP50: l.sizingP50Ms / s.sizingP50Ms, steadyP50: l.steadyP50Ms / s.steadyP50Ms },
      heapUsedBytes,
      loadAverage,
    };
  } finally {
    await large.close();
    await small.close();
  }
}

function renderHealth(x: HealthResults): string[] {
  const out: string[] = [];
  out.push(`(a') One arbor.health() call (each /health probe, scrape, OpenTelemetry collection), a large hot tier beside a small one recovered in the same process, calls alternating; sizing budget ${fmtInt(x.budgetValues)} values per call; heap ${mib(x.heapUsedBytes)} with both; load average ${x.loadAverage.map((v) => fmt(v, 2)).join(' / ')}`);
  const row = (name: string, t: HealthTier): string[] => [name, fmt(t.firstCallMs, 3), fmtInt(t.sizingCalls), fmt(t.sizingP50Ms, 3), fmt(t.sizingMaxMs, 3), fmt(t.steadyP50Ms, 4), fmt(t.steadyMaxMs, 3), bytesShort(t.approxBytes)];
  out.push(
    table(
      ['hot tier', 'first call CPU ms', 'calls to settle', 'p50 ms', 'max ms', 'settled p50 ms', 'max ms', 'approxBytes'],
      [row(`${fmtInt(x.large.sessions)} sessions × ${x.large.eventsPerSession} events`, x.large), row(`${fmtInt(x.small.sessions)} sessions × ${x.small.eventsPerSession} events (baseline)`, x.small), ['large ÷ small', `${fmt(x.ratios.firstCall, 2)}×`, '', `${fmt(x.ratios.sizingP50, 2)}×`, '', `${fmt(x.ratios.steadyP50, 2)}×`, '', '']],
    ),
  );
  out.push('   CPU ms per call (process.cpuUsage around each call). first call: right after recovery, nothing sized yet; calls to settle: until hot.estimated is 0 (each sizes ≤ the budget); settled: every state sized, no sizing work left (per call over batches of 50: median and worst batch)');
  return out;
}

function healthTargets(x: HealthResults): Target[] {
  const la = x.loadAverage.map((v) => fmt(v, 2)).join(' / ');
  const detail = (what: string, ratio: number, l: number, s: number): string => `${what}: ${fmt(l, 3)} ms with ${fmtInt(x.large.sessions)} sessions vs ${fmt(s, 3)} ms with ${fmtInt(x.small.sessions)} (${fmt(ratio, 2)}×); load average ${la}`;
  return [
    { name: `health() while sizing ≤ 2× its cost on a ${fmtInt(x.small.sessions)}-session hot tier (bounded work per call)`, status: x.ratios.sizingP50 <= 2 ? 'PASS' : 'MISS', actual: x.ratios.sizingP50, target: 2, detail: detail('p50 per call until settled', x.ratios.sizingP50, x.large.sizingP50Ms, x.small.sizingP50Ms) },
    { name: 'health(): first call after recovery, large ÷ small', status: 'INFO', actual: x.ratios.firstCall, target: null, detail: detail('first call', x.ratios.firstCall, x.large.firstCallMs, x.small.firstCallMs) },
    { name: 'health(): settled (no sizing left), large ÷ small', status: 'INFO', actual: x.ratios.steadyP50, target: null, detail: detail('p50 per call', x.ratios.steadyP50, x.large.steadyP50Ms, x.small.steadyP50Ms) },
  ];
}

// ---- (b) sendMessage under streaming load ----------------------------------------

interface LoopDelay {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  samples: number;
}

/**
 * Event-loop delay with perf_hooks.monitorEventLoopDelay (1 ms sampling
 * interval), over several measured windows. Each window gets a fresh monitor:
 * a re-enabled one would record the whole pause between windows as one delay.
 * Windows are merged through 2,000 evenly spaced quantiles of each (weighted
 * by its sample count), so the merged p50/p99 are exact to 0.05 percentile.
 */
class LoopDelaySampler {
  static readonly QUANTILES = 2000;
  readonly #windows: { values: Float64Array; weight: number }[] = [];
  #max = 0;
  #count = 0;
  #h: IntervalHistogram | undefined;

  start(): void {
    this.#h = monitorEventLoopDelay({ resolution: 1 });
    this.#h.enable();
  }

  stop(): void {
    const h = this.#h;
    if (h === undefined) return;
    h.disable();
    this.#h = undefined;
    if (h.count === 0) return;
    const k = LoopDelaySampler.QUANTILES;
    const values = new Float64Array(k);
    for (let i = 0; i < k; i += 1) values[i] = h.percentile(((i + 0.5) / k) * 100) / 1e6;
    this.#windows.push({ values, weight: h.count / k });
    this.#max = Math.max(this.#max, h.max / 1e6);
    this.#count += h.count;
  }

  summary(): LoopDelay {
    const points: [number, number][] = [];
    for (const w of this.#windows) for (const v of w.values) points.push([v, w.weight]);
    points.sort((a, b) => a[0] - b[0]);
    const total = points.reduce((a, p) => a + p[1], 0);
    const quantile = (q: number): number => {
      let acc = 0;
      for (const [v, weight] of points) {
        acc += weight;
        if (acc >= q * total) return v;
      }
      return points.at(-1)?.[0] ?? Number.NaN;
    };
    return { p50Ms: quantile(0.5), p99Ms: quantile(0.99), maxMs: this.#count === 0 ? Number.NaN : this.#max, samples: this.#count };
  }
}

/** Nothing runs: the event-loop delay of this process at rest (Arbor is open, its sessions quiet). */
class IdlePhase implements Phase {
  readonly label = 'idle (event-loop delay baseline)';
  readonly delay = new LoopDelaySampler();
  async slice(warmMs: number, measureMs: number): Promise<void> {
    await sleep(warmMs);
    this.delay.start();
    await sleep(measureMs);
    this.delay.stop();
  }
  async close(): Promise<void> {}
}

interface LoadResult {
  sessions: number;
  windowMs: number;
  /** answers completed per second */
  messagesPerSec: number;
  /** user messages acknowledged per second */
  acksPerSec: number;
  ackP50Ms: number;
  ackP99Ms: number;
  ackMaxMs: number;
  loopDelay: LoopDelay;
  /** process CPU / wall time */
  cpuCores: number;
  eventLoopUtilization: number;
  journalDatasyncP50Ms: number;
  journalDatasyncP99Ms: number;
  /** the journal's fdatasync calls per second */
  datasyncsPerSec: number;
  /** snapshot files written per second (each: write, fdatasync, rename, directory sync) */
  snapshotsPerSec: number;
  /** process CPU time (every thread) per completed answer, µs */
  cpuUsPerAnswer: number;
  /** main-thread busy time (event-loop utilisation, GC included) per completed answer, µs */
  mainUsPerAnswer: number;
  /** garbage-collection pauses (perf_hooks 'gc' entries) in the measured windows: share of wall time, count, longest */
  gcShare: number;
  gcPauses: number;
  gcMaxMs: number;
}

/**
 * `sessions` closed loops, each: `sendMessage` (timed to its durable
 * acknowledgement), then `await session.idle()` until the mock's answer
 * completed, then the next. Starts are staggered over one answer's duration.
 * With `arbor` undefined it is the baseline: the same loops consuming the same
 * MockProvider's streams directly, without Arbor.
 */
class LoadPhase implements Phase {
  readonly label: string;
  readonly delay = new LoopDelaySampler();
  readonly #cfg: Config;
  readonly #arbor: Arbor | undefined;
  readonly #fs: SyncTimingFileSystem | undefined;
  readonly #provider: MockProvider;
  readonly #acks = new Samples();
  #completed = 0;
  #acked = 0;
  #windowMs = 0;
  #cpuUs = 0;
  #eluActive = 0;
  #eluIdle = 0;
  #datasyncs = 0;
  #snapshots = 0;
  #gcMs = 0;
  #gcCount = 0;
  #gcMaxMs = 0;
  readonly #content: string;

  constructor(cfg: Config, provider: MockProvider, arbor?: { arbor: Arbor; fs: SyncTimingFileSystem }) {
    this.#cfg = cfg;
    this.#provider = provider;
    this.#arbor = arbor?.arbor;
    this.#fs = arbor?.fs;
    this.label = arbor === undefined ? `MockProvider streams alone, ${cfg.loadSessions} concurrent (no Arbor)` : `Arbor: ${cfg.loadSessions} sessions, sendMessage → idle() loops`;
    this.#content = 'Could you summarise the three options we discussed yesterday and tell me which one is cheapest over a year? Keep it short please.';
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    let measuring = false;
    let stopping = false;
    let mStart = Number.POSITIVE_INFINITY;
    let failure: unknown;
    const turnMs = this.#cfg.mockChunks * this.#cfg.mockChunkDelayMs;
    const arbor = this.#arbor;
    const provider = this.#provider;
    const content = this.#content;
    const loop = async (i: number): Promise<void> => {
      await sleep((i / this.#cfg.loadSessions) * turnMs);
      const sid = `load-${String(i).padStart(5, '0')}`;
      const session = arbor?.session(sid);
      while (!stopping) {
        try {
          if (session !== undefined) {
            const t0 = performance.now();
            await session.sendMessage({ content });
            if (measuring) {
              this.#acked += 1;
              if (t0 >= mStart) this.#acks.push(performance.now() - t0);
            }
            await session.idle();
          } else {
            const messages: ChatTurn[] = [{ role: 'user', content }];
            const signal = new AbortController().signal;
            for await (const chunk of provider.stream({ sessionId: sid, messageId: randomUUID(), messages, signal })) void chunk;
          }
        } catch (err) {
          failure ??= err;
          stopping = true;
          return;
        }
        if (measuring) this.#completed += 1;
      }
    };
    const loops = Array.from({ length: this.#cfg.loadSessions }, (_, i) => loop(i));
    await sleep(warmMs + turnMs);
    const cpu0 = process.cpuUsage();
    const elu0 = performance.eventLoopUtilization();
    const syncs0 = this.#fs?.datasyncs ?? 0;
    const snaps0 = this.#fs?.snapshotsWritten ?? 0;
    mStart = performance.now();
    measuring = true;
    if (this.#fs !== undefined) this.#fs.recording = true;
    // GC pauses in the window: what part of the loop delay is the collector's.
    const gc = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (!measuring) continue;
        this.#gcMs += e.duration;
        this.#gcCount += 1;
        this.#gcMaxMs = Math.max(this.#gcMaxMs, e.duration);
      }
    });
    gc.observe({ entryTypes: ['gc'] });
    this.delay.start();
    await sleep(measureMs);
    this.delay.stop();
    gc.disconnect();
    measuring = false;
    if (this.#fs !== undefined) this.#fs.recording = false;
    this.#windowMs += performance.now() - mStart;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    this.#datasyncs += (this.#fs?.datasyncs ?? 0) - syncs0;
    this.#snapshots += (this.#fs?.snapshotsWritten ?? 0) - snaps0;
    this.#cpuUs += cpu.user + cpu.system;
    this.#eluActive += elu.active;
    this.#eluIdle += elu.idle;
    stopping = true;
    await Promise.all(loops);
    if (failure !== undefined) throw failure;
  }

  result(): LoadResult {
    const s = this.#acks.summary();
    const d = this.#fs?.datasync.summary();
    return {
      sessions: this.#cfg.loadSessions,
      windowMs: this.#windowMs,
      messagesPerSec: (this.#completed * 1000) / this.#windowMs,
      acksPerSec: (this.#acked * 1000) / this.#windowMs,
      ackP50Ms: s.p50,
      ackP99Ms: s.p99,
      ackMaxMs: s.max,
      loopDelay: this.delay.summary(),
      cpuCores: this.#cpuUs / 1000 / this.#windowMs,
      eventLoopUtilization: this.#eluActive / Math.max(1e-9, this.#eluActive + this.#eluIdle),
      journalDatasyncP50Ms: d?.p50 ?? Number.NaN,
      journalDatasyncP99Ms: d?.p99 ?? Number.NaN,
      datasyncsPerSec: (this.#datasyncs * 1000) / this.#windowMs,
      snapshotsPerSec: (this.#snapshots * 1000) / this.#windowMs,
      cpuUsPerAnswer: this.#cpuUs / Math.max(1, this.#completed),
      mainUsPerAnswer: (this.#eluActive * 1000) / Math.max(1, this.#completed),
      gcShare: this.#gcMs / this.#windowMs,
      gcPauses: this.#gcCount,
      gcMaxMs: this.#gcMaxMs,
    };
  }

  async close(): Promise<void> {}
}

/** The floor of any durable acknowledgement on this disk: one small write + fdatasync, in a closed loop. */
class RawSyncPhase implements Phase {
  readonly label = 'raw write+fdatasync of one record (durable-ack floor)';
  readonly #root: string;
  readonly #lat = new Samples();
  #dir: string | undefined;
  #fh: Awaited<ReturnType<typeof open>> | undefined;
  #position = 0;
  readonly #buffer = Buffer.alloc(300, 0x61);

  constructor(root: string) {
    this.#root = root;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    if (this.#fh === undefined) {
      this.#dir = await mkdtemp(join(this.#root, 'raw-'));
      this.#fh = await open(join(this.#dir, 'raw.log'), 'w+', 0o600);
    }
    const fh = this.#fh;
    const once = async (): Promise<void> => {
      await fh.write(this.#buffer, 0, this.#buffer.length, this.#position);
      this.#position += this.#buffer.length;
      await fh.datasync();
    };
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) await once();
    const end = performance.now() + measureMs;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) break;
      await once();
      this.#lat.push(performance.now() - t0);
    }
  }

  result(): { p50Ms: number; p99Ms: number; syncs: number } {
    const s = this.#lat.summary();
    return { p50Ms: s.p50, p99Ms: s.p99, syncs: this.#lat.count };
  }

  async close(): Promise<void> {
    await this.#fh?.close();
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }
}

interface LoadResults {
  mock: { chunks: number; chunkDelayMs: number };
  idle: LoopDelay;
  arbor: LoadResult;
  mockOnly: LoadResult;
  rawSync: { p50Ms: number; p99Ms: number; syncs: number };
  /** sessions / (chunks × delay): the most answers per second the mock's pacing allows */
  ceilingMessagesPerSec: number;
  arborHealth: { crashes: number; stopped: number; journalBytes: number };
}

async function loadFigures(root: string, cfg: Config): Promise<LoadResults> {
  const dir = await mkdtemp(join(root, 'load-'));
  const fs = new SyncTimingFileSystem(new NodeFileSystem());
  const provider = new MockProvider({ chunks: cfg.mockChunks, chunkDelayMs: cfg.mockChunkDelayMs });
  const arbor = await createArbor({ dataDir: dir, fs, llm: provider });
  const idle = new IdlePhase();
  const arborPhase = new LoadPhase(cfg, provider, { arbor, fs });
  const mockOnly = new LoadPhase(cfg, provider);
  const raw = new RawSyncPhase(root);
  try {
    await runInterleaved(cfg, [idle, mockOnly, arborPhase, raw]);
    const h = arbor.health();
    return {
      mock: { chunks: cfg.mockChunks, chunkDelayMs: cfg.mockChunkDelayMs },
      idle: idle.delay.summary(),
      arbor: arborPhase.result(),
      mockOnly: mockOnly.result(),
      rawSync: raw.result(),
      ceilingMessagesPerSec: (cfg.loadSessions * 1000) / (cfg.mockChunks * cfg.mockChunkDelayMs),
      arborHealth: { crashes: h.sessions.crashes, stopped: h.sessions.stopped.length, journalBytes: h.journal.bytes },
    };
  } finally {
    await arbor.close();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- (c) restart after SIGKILL -------------------------------------------------------

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./restart-child.ts', import.meta.url));
const children = new Set<ChildProcess>();

function restartSessionId(i: number): string {
  return `r${String(i).padStart(7, '0')}`;
}

/** Spawns the child, resolves with the first stdout line starting with `prefix` and the wall time since spawn. */
function spawnUntil(args: string[], prefix: string, timeoutMs: number): Promise<{ child: ChildProcess; payload: Record<string, unknown>; wallMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`restart child (${args[0]}) printed no '${prefix}' line within ${timeoutMs} ms\n${err}`)), timeoutMs);
    const finish = (e: Error | undefined, payload?: Record<string, unknown>, wallMs?: number): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (e !== undefined) {
        child.kill('SIGKILL');
        reject(e);
      } else resolve({ child, payload: payload!, wallMs: wallMs! });
    };
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (line.startsWith(`${prefix} `)) {
          const wallMs = performance.now() - t0;
          try {
            finish(undefined, JSON.parse(line.slice(prefix.length + 1)) as Record<string, unknown>, wallMs);
          } catch (e) {
            finish(e as Error);
          }
        }
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => finish(e));
    child.on('exit', (code, signal) => {
      children.delete(child);
      finish(new Error(`restart child (${args[0]}) exited (code ${code}, signal ${signal}) before '${prefix}'\n${err}`));
    });
  });
}

function killAndWait(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

interface RestartRun {
  /** parent's wall clock, spawn → `served` line */
  spawnToServedMs: number;
  /** the child's own timeline, ms since its process started */
  modulesLoadedMs: number;
  createArborMs: number;
  /** createArbor call → first request served */
  firstRequestFromCreateMs: number;
  firstServedSinceStartMs: number;
  /** createArbor call → the background pass done (every session recovered) */
  allRecoveredFromCreateMs: number;
  /** CPU of the whole process (main thread, thread pool, GC threads) from the createArbor call to the first request served */
  firstRequestCpuMs: number;
  /** the same, to the background pass done */
  allRecoveredCpuMs: number;
  /** sessions the background pass had not reached when the first request was answered */
  pendingAtFirstServed: number;
  storeOpenMs: number;
  hotSessions: number;
  /** events createArbor itself appended before resolving (notices for interrupted or unanswered requests) */
  appendedByCreate: number;
  recovered: number;
  notRecovered: number;
  sampleOk: boolean;
  rssMiB: number;
  heapUsedMiB: number;
}

interface RestartResults {
  /** the realistic variant: every session snapshotted before the checkpoint, as on default options */
  realistic: boolean;
  sessions: number;
  eventsPerSession: number;
  events: number;
  write: { ms: number; eventsPerSec: number; journalBytes: number; segments: number };
  runs: RestartRun[];
  empty: RestartRun[];
  /** medians over the runs */
  recovery: RestartRun;
  emptyStart: RestartRun;
  rawRead: { bytes: number; ms: number; mibPerSec: number };
}

function toRun(p: Record<string, unknown>, wallMs: number, expectSessions: number, expectSample: boolean): RestartRun {
  const num = (k: string): number => Number(p[k]);
  const counts = (p.recoveredCounts ?? {}) as Record<string, number>;
  const recovered = counts.recovered ?? 0;
  const notRecovered = Object.entries(counts).reduce((a, [k, v]) => (k === 'recovered' ? a : a + v), 0);
  return {
    spawnToServedMs: wallMs,
    modulesLoadedMs: num('modulesLoadedMs'),
    createArborMs: num('createdMs') - num('createCalledMs'),
    firstRequestFromCreateMs: num('firstServedMs') - num('createCalledMs'),
    firstServedSinceStartMs: num('firstServedMs'),
    allRecoveredFromCreateMs: num('allRecoveredMs') - num('createCalledMs'),
    firstRequestCpuMs: num('firstServedCpuMs'),
    allRecoveredCpuMs: num('allRecoveredCpuMs'),
    pendingAtFirstServed: num('pendingAtFirstServed'),
    storeOpenMs: num('storeOpenMs'),
    hotSessions: num('hotSessions'),
    appendedByCreate: num('appendedByCreate'),
    recovered,
    notRecovered,
    sampleOk: !expectSample || (num('sampleAtExpectedSeq') === num('sampleChecked') && num('hotSessions') >= expectSessions && num('probeSeqBefore') >= 1),
    rssMiB: num('rssBytes') / 1048576,
    heapUsedMiB: num('heapUsedBytes') / 1048576,
  };
}

function medianRun(runs: RestartRun[]): RestartRun {
  const keys = Object.keys(runs[0]!) as (keyof RestartRun)[];
  const out = {} as Record<string, unknown>;
  for (const k of keys) {
    const v = runs[0]![k];
    out[k] = typeof v === 'number' ? median(runs.map((r) => r[k] as number)) : runs.every((r) => r[k] === true);
  }
  return out as unknown as RestartRun;
}

// ---- (e) a tool step (bench/tools) ----------------------------------------------

const TOOLS_BENCH = fileURLToPath(new URL('../tools/run.ts', import.meta.url));

/** What bench/tools prints with --json (its own baselines from its own run), without its meta. */
interface ToolResults {
  disk: Record<string, { p50: number; p99: number; samples: number }>;
  directToolUs: { p50: number; p99: number };
  rawSyncMs: { p50: number; p99: number };
  ratios: Record<string, number>;
  targets: Target[];
}

/**
 * The cost of a tool step, by bench/tools in a child process (it has its own alternating
 * baselines: the tool called directly, two plain commits, a raw sync); reported here too, so that
 * `bench/runtime` shows a tool step's overhead and time to first chunk beside its other figures.
 */
async function toolFigures(cfg: Config): Promise<ToolResults> {
  progress('tools: bench/tools in a child (a tool step against the tool called directly)');
  const child = spawn(process.execPath, ['--import', 'tsx', TOOLS_BENCH, '--json', ...(cfg.tiny ? ['--tiny'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  children.delete(child);
  if (code !== 0) throw new Error(`bench/tools exited with ${code}\n${err.slice(-2000)}`);
  const { meta: _meta, ...rest } = JSON.parse(out) as ToolResults & { meta: unknown };
  return rest;
}

async function restartFigures(root: string, cfg: Config, realistic = false): Promise<RestartResults> {
  const dir = await mkdtemp(join(root, 'restart-'));
  const n = cfg.restartSessions;
  const e = cfg.restartEvents;
  const timeoutMs = cfg.tiny ? 60_000 : 300_000;
  progress(`restart${realistic ? ' (realistic: snapshots)' : ''}: a child writes ${n.toLocaleString('en-US')} sessions × ${e} events (complete turns), then is SIGKILLed`);
  const w = await spawnUntil(['write', '--data-dir', dir, '--sessions', String(n), '--events', String(e), '--snapshot-before-last', realistic ? 'yes' : 'no'], 'ready', timeoutMs);
  await killAndWait(w.child);
  const writeMs = Number(w.payload.writeMs);
  const runs: RestartRun[] = [];
  const empty: RestartRun[] = [];
  let rawRead = { bytes: 0, ms: 0, mibPerSec: 0 };
  for (let round = 0; round < cfg.restartRounds; round += 1) {
    progress(`restart: recovering child (round ${round + 1}/${cfg.restartRounds})`);
    const probe = restartSessionId(round + 1);
    const r = await spawnUntil(['recover', '--data-dir', dir, '--probe', probe, '--expect-sessions', String(n), '--expect-seq', String(e)], 'served', timeoutMs);
    await killAndWait(r.child);
    runs.push(toRun(r.payload, r.wallMs, n, true));
    progress(`restart: same child on an empty data directory (round ${round + 1}/${cfg.restartRounds})`);
    const emptyDir = await mkdtemp(join(root, 'restart-empty-'));
    const b = await spawnUntil(['recover', '--data-dir', emptyDir, '--probe', restartSessionId(0), '--expect-sessions', '0', '--expect-seq', '0'], 'served', timeoutMs);
    await killAndWait(b.child);
    empty.push(toRun(b.payload, b.wallMs, 0, false));
    await rm(emptyDir, { recursive: true, force: true });
    // The I/O floor: read every journal segment back (the page cache holds them, as after any restart on a live machine).
    maybeGc();
    const jdir = join(dir, 'journals');
    const t0 = performance.now();
    let bytes = 0;
    for (const name of await readdir(jdir)) bytes += (await readFile(join(jdir, name))).length;
    const ms = performance.now() - t0;
    if (round === 0 || ms < rawRead.ms) rawRead = { bytes, ms, mibPerSec: bytes / 1048576 / (ms / 1000) };
  }
  await rm(dir, { recursive: true, force: true });
  return {
    realistic,
    sessions: n,
    eventsPerSession: e,
    events: n * e,
    write: { ms: writeMs, eventsPerSec: (n * e * 1000) / writeMs, journalBytes: Number(w.payload.journalBytes), segments: Number(w.payload.segments) },
    runs,
    empty,
    recovery: medianRun(runs),
    emptyStart: medianRun(empty),
    rawRead,
  };
}

// ---- (d) bytes on disk of a long chat ----------------------------------------------

const COMMON =
  'the of and to a in is you that it for on with as are this be at have or not your can from by we an but if will which all do there their they what so about when more one would should could how time use also into just some like data file order account please thanks thank error code server message session run test build change update help need know want make see check think first new good right back way work day support question answer problem issue because then than only other any these those here where after before while still again'.split(
    ' ',
  );
const SYLLABLES = ['ka', 're', 'mo', 'tin', 'sa', 'lo', 'ver', 'dan', 'pri', 'con', 'ex', 'tra', 'ble', 'ment', 'ing', 'ed', 'al', 'er', 'ous', 'ic', 'pro', 'de', 'in', 'ter', 'ly', 'ist', 'able', 'ful', 'ness', 'ship'];

/** A vocabulary of ~2,000 words sampled with Zipf's law: text about as compressible as English prose. */
function makeTextSource(seed: number): (minChars: number, maxChars: number) => string {
  const rand = mulberry32(seed);
  const vocab = [...COMMON];
  const seen = new Set(vocab);
  while (vocab.length < 2000) {
    const k = 1 + Math.floor(rand() * 3);
    let w = '';
    for (let i = 0; i < k; i += 1) w += SYLLABLES[Math.floor(rand() * SYLLABLES.length)];
    if (!seen.has(w)) {
      seen.add(w);
      vocab.push(w);
    }
  }
  const cumulative = new Float64Array(vocab.length);
  let total = 0;
  for (let i = 0; i < vocab.length; i += 1) cumulative[i] = total += 1 / (i + 1);
  const word = (): string => {
    const x = rand() * total;
    let lo = 0;
    let hi = vocab.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return vocab[lo]!;
  };
  return (minChars, maxChars) => {
    const target = minChars + Math.floor(rand() * (maxChars - minChars + 1));
    let out = '';
    let sentence = 0;
    while (out.length < target) {
      let w = word();
      if (sentence === 0) w = w[0]!.toUpperCase() + w.slice(1);
      if (rand() < 0.03) w = String(Math.floor(rand() * 10_000));
      out += (out.length === 0 ? '' : ' ') + w;
      sentence += 1;
      if (sentence > 6 && rand() < 0.12) {
        out += rand() < 0.2 ? '?' : '.';
        sentence = 0;
      } else if (rand() < 0.05) out += ',';
    }
    return out.length > maxChars ? out.slice(0, maxChars) : out;
  };
}

interface Chat {
  users: string[];
  answers: string[];
  meanUserChars: number;
  meanAnswerChars: number;
  /** brotli (quality 4, as snapshots use) size / raw size of the whole conversation text */
  brotliRatio: number;
}

function makeChat(turns: number): Chat {
  const text = makeTextSource(2024);
  const users: string[] = [];
  const answers: string[] = [];
  for (let t = 0; t < turns; t += 1) {
    users.push(text(40, 500));
    answers.push(text(300, 2500));
  }
  const all = Buffer.from(users.map((u, i) => `${u}\n${answers[i]}`).join('\n'));
  const brotli = brotliCompressSync(all, { params: { [zc.BROTLI_PARAM_QUALITY]: 4 } });
  const mean = (xs: string[]): number => xs.reduce((a, s) => a + s.length, 0) / xs.length;
  return { users, answers, meanUserChars: mean(users), meanAnswerChars: mean(answers), brotliRatio: brotli.length / all.length };
}

/** Streams the scripted answer of the turn (the number of user messages so far), in 80-character chunks. */
class ScriptedProvider implements LlmProvider {
  readonly name = 'scripted';
  readonly model = 'scripted-chat';
  readonly #answers: string[];
  constructor(answers: string[]) {
    this.#answers = answers;
  }
  async *stream(request: StreamRequest): AsyncGenerator<string, void, undefined> {
    const turn = request.messages.filter((m) => m.role === 'user').length - 1;
    const text = this.#answers[turn] ?? 'ok';
    for (let i = 0; i < text.length; i += 80) {
      if (request.signal.aborted) throw Object.assign(new Error('aborted'), { name: 'AbortError' });
      yield text.slice(i, i + 80);
    }
  }
}

interface GrowthPoint {
  turns: number;
  bytes: number;
}

interface ArborChatResult {
  variant: string;
  snapshotEveryEvents: number;
  growth: GrowthPoint[];
  afterClose: { bytes: number; allocatedBytes: number; files: number; journalBytes: number; snapshotBytes: number; snapshotFiles: number };
  events: number;
  wallMs: number;
}

async function arborChat(root: string, chat: Chat, cfg: Config, variant: string, snapshotEveryEvents: number): Promise<ArborChatResult> {
  progress(`chat: ${cfg.chatTurns} turns through Arbor (${variant})`);
  const dir = await mkdtemp(join(root, 'chat-arbor-'));
  const t0 = performance.now();
  const arbor = await createArbor({ dataDir: dir, llm: new ScriptedProvider(chat.answers), snapshotEveryEvents });
  const growth: GrowthPoint[] = [];
  let events = 0;
  try {
    const session = arbor.session('chat-1');
    for (let t = 0; t < cfg.chatTurns; t += 1) {
      await session.sendMessage({ content: chat.users[t]! });
      await session.idle();
      if ((t + 1) % cfg.chatReportEvery === 0) growth.push({ turns: t + 1, bytes: (await dirBytes(dir)).bytes });
    }
    events = session.state.seq;
    const last = session.state.messages.at(-1);
    if (session.state.messages.length !== 2 * cfg.chatTurns || last?.content !== chat.answers[cfg.chatTurns - 1]) throw new Error(`chat: expected ${2 * cfg.chatTurns} messages ending with the last answer, got ${session.state.messages.length}`);
  } finally {
    await arbor.close();
  }
  const wallMs = performance.now() - t0;
  const all = await dirBytes(dir);
  const journal = await dirBytes(join(dir, 'journals'));
  const snaps = await dirBytes(join(dir, 'snapshots'));
  await rm(dir, { recursive: true, force: true });
  return {
    variant,
    snapshotEveryEvents,
    growth,
    afterClose: { ...all, journalBytes: journal.bytes, snapshotBytes: snaps.bytes, snapshotFiles: snaps.files },
    events,
    wallMs,
  };
}

interface SqliteFiles {
  db: number;
  wal: number;
  shm: number;
  total: number;
}

function sqliteFiles(file: string): SqliteFiles {
  const size = (p: string): number => {
    try {
      return statSync(p).size;
    } catch {
      return 0;
    }
  };
  const db = size(file);
  const wal = size(`${file}-wal`);
  const shm = size(`${file}-shm`);
  return { db, wal, shm, total: db + wal + shm };
}

interface LangGraphResult {
  variant: string;
  turns: number;
  growth: GrowthPoint[];
  /** while open, after the last turn */
  open: SqliteFiles;
  /** after the connection closed (SQLite checkpoints the WAL into the db and removes it) */
  afterClose: SqliteFiles;
  checkpoints: number;
  writes: number;
  checkpointBlobBytes: number;
  wallMs: number;
}

/* Minimal shapes of the LangGraph.js API this benchmark calls (loaded from bench/node_modules at run time). */
interface LgMessageCtor {
  new (fields: { content: string; id?: string } | string): unknown;
}
interface LgSaver {
  db: { prepare(sql: string): { get(): Record<string, number | null> }; close(): void };
  put(config: unknown, checkpoint: unknown, metadata: unknown, newVersions: unknown): Promise<unknown>;
}
interface LgGraphBuilder {
  addNode(name: string, fn: (state: unknown) => unknown): LgGraphBuilder;
  addEdge(from: string, to: string): LgGraphBuilder;
  compile(options: { checkpointer: LgSaver }): { invoke(input: unknown, config: unknown): Promise<unknown> };
}
interface LgPeers {
  versions: Record<string, string>;
  SqliteSaver: { fromConnString(path: string): LgSaver };
  HumanMessage: LgMessageCtor;
  AIMessage: LgMessageCtor;
  emptyCheckpoint(): Record<string, unknown>;
  uuid6(clockseq: number): string;
  StateGraph: new (annotation: unknown) => LgGraphBuilder;
  MessagesAnnotation: unknown;
  START: string;
  END: string;
}

/** LangGraph.js and its SQLite checkpointer, from bench/node_modules only (they are not dependencies of Arbor). */
async function loadLangGraph(): Promise<LgPeers> {
  const { versions, lg, messages, sqlite: maybeSqlite, checkpoint } = await loadLangGraphModules();
  const sqlite = maybeSqlite!;
  return {
    versions,
    SqliteSaver: sqlite.SqliteSaver as LgPeers['SqliteSaver'],
    HumanMessage: messages.HumanMessage as LgMessageCtor,
    AIMessage: messages.AIMessage as LgMessageCtor,
    emptyCheckpoint: checkpoint.emptyCheckpoint as LgPeers['emptyCheckpoint'],
    uuid6: checkpoint.uuid6 as LgPeers['uuid6'],
    StateGraph: lg.StateGraph as LgPeers['StateGraph'],
    MessagesAnnotation: lg.MessagesAnnotation,
    START: lg.START as string,
    END: lg.END as string,
  };
}

function sqliteCounts(saver: LgSaver): { checkpoints: number; writes: number; checkpointBlobBytes: number } {
  const c = saver.db.prepare('SELECT count(*) AS n, coalesce(sum(length(checkpoint)), 0) AS b FROM checkpoints').get();
  const w = saver.db.prepare('SELECT count(*) AS n FROM writes').get();
  return { checkpoints: Number(c.n), writes: Number(w.n), checkpointBlobBytes: Number(c.b) };
}


/** Sizes the SQLite files open and after close, counts rows, removes the directory: the end of both LangGraph runs. */
async function finishLangGraph(variant: string, run: { dir: string; file: string; saver: LgSaver; t0: number; turns: number; growth: GrowthPoint[] }): Promise<LangGraphResult> {
  const open = sqliteFiles(run.file);
  const counts = sqliteCounts(run.saver);
  run.saver.db.close();
  const afterClose = sqliteFiles(run.file);
  const wallMs = performance.now() - run.t0;
  await rm(run.dir, { recursive: true, force: true });
  return { variant, turns: run.turns, growth: run.growth, open, afterClose, ...counts, wallMs };
}

/**
 * One `saver.put` per turn of a checkpoint whose `messages` channel holds the
 * whole conversation so far (HumanMessage/AIMessage with ids, as
 * MessagesAnnotation's reducer leaves them): what a LangGraph app persists
 * after each turn, with none of the graph's extra per-step checkpoints.
 */
async function langGraphPuts(root: string, chat: Chat, turns: number, every: number, peers: LgPeers): Promise<LangGraphResult> {
  progress(`chat: ${turns} turns through LangGraph SqliteSaver, one put per turn`);
  const dir = await mkdtemp(join(root, 'chat-langgraph-'));
  const file = join(dir, 'checkpoints.sqlite');
  const t0 = performance.now();
  const saver = peers.SqliteSaver.fromConnString(file);
  const growth: GrowthPoint[] = [];
  const messages: unknown[] = [];
  let config: unknown = { configurable: { thread_id: 'chat-1', checkpoint_ns: '' } };
  for (let t = 0; t < turns; t += 1) {
    messages.push(new peers.HumanMessage({ content: chat.users[t]!, id: randomUUID() }), new peers.AIMessage({ content: chat.answers[t]!, id: randomUUID() }));
    const checkpoint = peers.emptyCheckpoint();
    checkpoint.id = peers.uuid6(-1);
    checkpoint.ts = new Date().toISOString();
    checkpoint.channel_values = { messages: [...messages] };
    checkpoint.channel_versions = { messages: t + 1 };
    config = await saver.put(config, checkpoint, { source: 'loop', step: t, parents: {} }, { messages: t + 1 });
    if ((t + 1) % every === 0) growth.push({ turns: t + 1, bytes: sqliteFiles(file).total });
  }
  return finishLangGraph('saver.put once per turn (full messages channel)', { dir, file, saver, t0, turns, growth });
}

/** A real app: StateGraph(MessagesAnnotation) with one node answering, compiled with the SqliteSaver, invoked once per turn. */
async function langGraphStateGraph(root: string, chat: Chat, turns: number, every: number, peers: LgPeers): Promise<LangGraphResult> {
  progress(`chat: ${turns} turns through a LangGraph StateGraph + SqliteSaver (invoke per turn)`);
  const dir = await mkdtemp(join(root, 'chat-stategraph-'));
  const file = join(dir, 'checkpoints.sqlite');
  const t0 = performance.now();
  const saver = peers.SqliteSaver.fromConnString(file);
  let turn = 0;
  const graph = new peers.StateGraph(peers.MessagesAnnotation)
    .addNode('agent', () => ({ messages: [new peers.AIMessage(chat.answers[turn]!)] }))
    .addEdge(peers.START, 'agent')
    .addEdge('agent', peers.END)
    .compile({ checkpointer: saver });
  const growth: GrowthPoint[] = [];
  for (turn = 0; turn < turns; turn += 1) {
    await graph.invoke({ messages: [new peers.HumanMessage(chat.users[turn]!)] }, { configurable: { thread_id: 'chat-1' } });
    if ((turn + 1) % every === 0) growth.push({ turns: turn + 1, bytes: sqliteFiles(file).total });
  }
  return finishLangGraph('StateGraph(MessagesAnnotation).compile({checkpointer}).invoke per turn', { dir, file, saver, t0, turns, growth });
}

interface ChatResults {
  turns: number;
  reportEvery: number;
  meanUserChars: number;
  meanAnswerChars: number;
  textBrotliRatio: number;
  /** bytes of message text the chat holds (UTF-16 length of every message) */
  textChars: number;
  arborDefault: ArborChatResult;
  arborCloseOnly: ArborChatResult;
  peers:
    | { skipped: true; reason: string }
    | {
        skipped: false;
        versions: Record<string, string>;
        puts: LangGraphResult;
        stateGraph: LangGraphResult;
        /** LangGraph (one put per turn, db + WAL + shm while open) / Arbor default (after close), at the last turn */
        ratio: number;
        /** the same with the db alone after close (WAL folded in) */
        ratioAfterClose: number;
        /** StateGraph bytes / one-put bytes at the StateGraph's turn count */
        stateGraphOverPuts: number;
      };
}

/** log2(bytes at n) / (bytes at n/2): ≈1 for linear growth, ≈2 for quadratic. */
function growthExponent(growth: GrowthPoint[]): number {
  const last = growth.at(-1);
  if (last === undefined) return Number.NaN;
  const half = growth.find((g) => g.turns === last.turns / 2);
  if (half === undefined) return Number.NaN;
  return Math.log2(last.bytes / half.bytes);
}

async function chatFigures(root: string, cfg: Config, peersModule: LgPeers | undefined): Promise<ChatResults> {
  const chat = makeChat(Math.max(cfg.chatTurns, cfg.stateGraphTurns));
  const arborDefault = await arborChat(root, chat, cfg, 'default options (snapshot every 100 events)', 100);
  const arborCloseOnly = await arborChat(root, chat, cfg, 'no periodic snapshot (only the one at close)', 1_000_000_000);
  let peers: ChatResults['peers'] = { skipped: true, reason: 'run with --peers after `npm install --prefix bench` to compare with LangGraph.js SqliteSaver' };
  if (peersModule !== undefined) {
    const puts = await langGraphPuts(root, chat, cfg.chatTurns, cfg.chatReportEvery, peersModule);
    const stateGraph = await langGraphStateGraph(root, chat, cfg.stateGraphTurns, cfg.chatReportEvery, peersModule);
    const putsAt = puts.growth.find((g) => g.turns === cfg.stateGraphTurns)?.bytes ?? Number.NaN;
    peers = {
      skipped: false,
      versions: peersModule.versions,
      puts,
      stateGraph,
      ratio: puts.open.total / arborDefault.afterClose.bytes,
      ratioAfterClose: puts.afterClose.total / arborDefault.afterClose.bytes,
      stateGraphOverPuts: stateGraph.open.total / putsAt,
    };
  }
  let textChars = 0;
  for (let t = 0; t < cfg.chatTurns; t += 1) textChars += chat.users[t]!.length + chat.answers[t]!.length;
  return {
    turns: cfg.chatTurns,
    reportEvery: cfg.chatReportEvery,
    meanUserChars: chat.users.slice(0, cfg.chatTurns).reduce((a, s) => a + s.length, 0) / cfg.chatTurns,
    meanAnswerChars: chat.answers.slice(0, cfg.chatTurns).reduce((a, s) => a + s.length, 0) / cfg.chatTurns,
    textBrotliRatio: chat.brotliRatio,
    textChars,
    arborDefault,
    arborCloseOnly,
    peers,
  };
}

// ---- report ----------------------------------------------------------------------

interface Results {
  /** the machine, the configuration and the timing of the run */
  meta: BenchMeta<Config>;
  hot: HotResults;
  /** (a') one health() call, a large hot tier beside a small one */
  health: HealthResults;
  load: LoadResults;
  restart: RestartResults;
  /** the same restart with every session snapshotted before the kill (default options) */
  restartRealistic: RestartResults;
  chat: ChatResults;
  /** (e) a tool step, from bench/tools */
  tools: ToolResults;
  /** (f) replay cost per event, long sessions against short ones (bench/runtime/replay.ts) */
  replay: ReplayResults;
  targets: Target[];
}

function makeTargets(r: Omit<Results, 'targets' | 'meta'>): Target[] {
  const t: Target[] = [];
  const limit = (name: string, actual: number, target: number, detail: string): void => {
    t.push({ name, status: Number.isFinite(actual) && actual < target ? 'PASS' : 'MISS', actual, target, detail });
  };
  const { hotRetrieve, hotStore } = r.hot.ops;
  limit('hot read p99 < 1 ms (seed)', hotRetrieve.p99Ns / 1000, 1000, `HotTier.retrieve p99 ${fmt(hotRetrieve.p99Ns / 1000, 3)} µs`);
  limit('hot read p99 < 10 µs (aim: 100× the seed)', hotRetrieve.p99Ns / 1000, 10, `HotTier.retrieve p99 ${fmt(hotRetrieve.p99Ns / 1000, 3)} µs (Map.get ${fmt(r.hot.ops.mapGet.p99Ns / 1000, 3)} µs)`);
  limit('hot write p99 < 5 ms (seed)', hotStore.p99Ns / 1000, 5000, `HotTier.store p99 ${fmt(hotStore.p99Ns / 1000, 3)} µs`);
  limit('hot write p99 < 50 µs (aim)', hotStore.p99Ns / 1000, 50, `HotTier.store p99 ${fmt(hotStore.p99Ns / 1000, 3)} µs (Map.set ${fmt(r.hot.ops.mapSet.p99Ns / 1000, 3)} µs)`);
  const many = r.hot.storeMany.hot;
  limit(`storeMany(${many.entries}) p99 < 100 ms (seed)`, many.p99Us / 1000, 100, `${fmt(many.p99Us, 1)} µs`);
  limit(`storeMany(${many.entries}) p99 < 1 ms (aim)`, many.p99Us / 1000, 1, `${fmt(many.p99Us, 1)} µs (Map baseline ${fmt(r.hot.storeMany.map.p99Us, 1)} µs)`);
  t.push(...healthTargets(r.health));

  const l = r.load;
  // Issue 10, goal 3: what Arbor adds to the loop delay the workload itself (the mock's chunk timers) causes.
  const budget = l.mockOnly.loopDelay.p99Ms + 1;
  t.push({
    name: `event-loop delay p99 under load ≤ mock-alone p99 + 1 ms (${l.arbor.sessions} streaming sessions; issue 10 goal 3)`,
    status: l.arbor.loopDelay.p99Ms <= budget ? 'PASS' : 'MISS',
    actual: l.arbor.loopDelay.p99Ms,
    target: budget,
    detail: `${fmt(l.arbor.loopDelay.p99Ms, 2)} ms vs mock streams alone (same process, no Arbor) ${fmt(l.mockOnly.loopDelay.p99Ms, 2)} ms + 1: Arbor adds ${fmt(l.arbor.loopDelay.p99Ms - l.mockOnly.loopDelay.p99Ms, 2)} ms (idle ${fmt(l.idle.p99Ms, 2)} ms); load average ${loadavg().map((x) => fmt(x, 2)).join(' / ')}`,
  });
  t.push({
    name: `event-loop delay p99 under load ≤ idle p99 + 1 ms (${l.arbor.sessions} streaming sessions; the mock's own timers count against it)`,
    status: 'INFO',
    actual: l.arbor.loopDelay.p99Ms,
    target: l.idle.p99Ms + 1,
    detail: `${fmt(l.arbor.loopDelay.p99Ms, 2)} ms vs idle ${fmt(l.idle.p99Ms, 2)} ms + 1 (mock streams alone: ${fmt(l.mockOnly.loopDelay.p99Ms, 2)} ms)`,
  });
  t.push({
    name: 'sendMessage ack p50/p99 under load',
    status: 'INFO',
    actual: l.arbor.ackP99Ms,
    target: null,
    detail: `${fmt(l.arbor.ackP50Ms, 2)} / ${fmt(l.arbor.ackP99Ms, 2)} ms; the journal's fdatasync ${fmt(l.arbor.journalDatasyncP50Ms, 2)} / ${fmt(l.arbor.journalDatasyncP99Ms, 2)} ms; raw write+fdatasync floor ${fmt(l.rawSync.p50Ms, 2)} / ${fmt(l.rawSync.p99Ms, 2)} ms (no threshold set)`,
  });
  t.push({
    name: 'answers/s under load',
    status: 'INFO',
    actual: l.arbor.messagesPerSec,
    target: null,
    detail: `${fmtInt(l.arbor.messagesPerSec)}/s vs ${fmtInt(l.mockOnly.messagesPerSec)}/s for the mock alone (pacing ceiling ${fmtInt(l.ceilingMessagesPerSec)}/s) = ${fmt((100 * l.arbor.messagesPerSec) / l.mockOnly.messagesPerSec, 0)}%`,
  });

  const rc = r.restart.recovery;
  const scale = `${fmtInt(r.restart.sessions)} sessions × ${r.restart.eventsPerSession} events`;
  limit(`restart: first request < 200 ms after createArbor is called (${scale})`, rc.firstRequestFromCreateMs, 200, `${fmtInt(rc.firstRequestFromCreateMs)} ms (${fmtInt(rc.firstServedSinceStartMs)} ms since process start; empty data dir: ${fmtInt(r.restart.emptyStart.firstRequestFromCreateMs)} ms / ${fmtInt(r.restart.emptyStart.firstServedSinceStartMs)} ms)`);
  const allOk = rc.sampleOk && rc.recovered === r.restart.sessions;
  const recoveredDetail = `${fmtInt(rc.allRecoveredFromCreateMs)} ms from createArbor until the background pass is done (${fmtInt(rc.recovered)} recovered${allOk ? '' : ', CHECK FAILED'}; createArbor itself ${fmtInt(rc.createArborMs)} ms)`;
  limit(`restart: all sessions recovered < 2 s (goal)`, allOk ? rc.allRecoveredFromCreateMs : Number.NaN, 2000, recoveredDetail);
  limit(`restart: all sessions recovered < 5 s (seed)`, allOk ? rc.allRecoveredFromCreateMs : Number.NaN, 5000, recoveredDetail);
  const floorRatio = rc.allRecoveredFromCreateMs / Math.max(1, r.restart.rawRead.ms);
  limit(`restart: all sessions recovered ≤ 3× the journal read-back floor (goal)`, allOk ? floorRatio : Number.NaN, 3, `${fmt(floorRatio, 2)}× (${fmtInt(rc.allRecoveredFromCreateMs)} ms against ${fmtInt(r.restart.rawRead.ms)} ms to read the journal back, same run)`);
  const rr = r.restartRealistic.recovery;
  const rrOk = rr.sampleOk && rr.recovered === r.restartRealistic.sessions;
  limit(`restart, realistic (every session snapshotted, checkpoint): first request < 200 ms after createArbor is called (${scale})`, rr.firstRequestFromCreateMs, 200, `${fmtInt(rr.firstRequestFromCreateMs)} ms (createArbor ${fmtInt(rr.createArborMs)} ms)`);
  limit(`restart, realistic: all sessions recovered < 2 s`, rrOk ? rr.allRecoveredFromCreateMs : Number.NaN, 2000, `${fmtInt(rr.allRecoveredFromCreateMs)} ms from createArbor (${fmtInt(rr.recovered)} recovered${rrOk ? '' : ', CHECK FAILED'})`);

  const c = r.chat;
  if (c.peers.skipped) {
    t.push({ name: `chat bytes on disk ≤ 1/50 of LangGraph SqliteSaver at ${c.turns} turns`, status: 'SKIP', actual: null, target: 50, detail: 'peers not measured (--peers)' });
  } else {
    t.push({
      name: `chat bytes on disk ≤ 1/50 of LangGraph SqliteSaver at ${c.turns} turns`,
      status: c.peers.ratio >= 50 ? 'PASS' : 'MISS',
      actual: c.peers.ratio,
      target: 50,
      detail: `LangGraph ${mib(c.peers.puts.open.total)} (db+WAL, one put per turn) / Arbor ${bytesShort(c.arborDefault.afterClose.bytes)} = ${fmt(c.peers.ratio, 1)}× (after close: ${fmt(c.peers.ratioAfterClose, 1)}×)`,
    });
  }
  t.push({
    name: 'chat growth exponent (bytes at N turns vs N/2: 1 = linear, 2 = quadratic)',
    status: 'INFO',
    actual: growthExponent(c.arborDefault.growth),
    target: null,
    detail: `Arbor ${fmt(growthExponent(c.arborDefault.growth), 2)}${c.peers.skipped ? '' : `, LangGraph ${fmt(growthExponent(c.peers.puts.growth), 2)}`}`,
  });
  // (e) bench/tools' own targets (a tool step against its baselines), named as such.
  for (const x of r.tools.targets) t.push({ ...x, name: `tool step: ${x.name}` });
  t.push(...r.replay.targets);
  return t;
}

function render(r: Results): string {
  const c = r.meta.config;
  const out: string[] = [];
  out.push(headline('Arbor runtime benchmark', r.meta));
  out.push(`data in ${r.meta.dataDir}; load figures ${c.seconds} s, hot-tier figures ${fmt(c.seconds / 5, 1)} s, each in ${c.rounds} slice(s) alternating with its baseline's${c.tiny ? ' (--tiny)' : ''}; total ${fmt(r.meta.durationSec, 1)} s`);
  out.push('');

  const h = r.hot;
  out.push(`(a) Hot tier, ${fmtInt(h.keys)} sessions, random keys; each call timed on its own with performance.now() (the timer's own cost is the last row)`);
  const op = (x: OpResult): string[] => [x.name, fmt(x.p50Ns, 0), fmt(x.p99Ns, 0), fmt(x.maxNs / 1000, 1), fmt(x.meanNs, 1), fmtInt(x.samples)];
  out.push(table(['call', 'p50 ns', 'p99 ns', 'max µs', 'amortised ns', 'samples'], [op(h.ops.hotStore), op(h.ops.mapSet), op(h.ops.hotRetrieve), op(h.ops.mapGet), op(h.ops.timerOnly)]));
  const bulk = (x: BulkResult): string[] => [x.name, fmt(x.p50Us, 1), fmt(x.p99Us, 1), fmt(x.maxUs, 1), fmtInt(x.calls)];
  out.push(table(['bulk call', 'p50 µs', 'p99 µs', 'max µs', 'calls'], [bulk(h.storeMany.hot), bulk(h.storeMany.map)]));
  out.push(...renderHealth(r.health));
  out.push('');

  const l = r.load;
  out.push(`(b) ${fmtInt(l.arbor.sessions)} concurrent sessions, each: sendMessage → await idle() (MockProvider ${l.mock.chunks} chunks × ${l.mock.chunkDelayMs} ms) → next`);
  out.push(
    table(
      ['run', 'answers/s', 'acks/s', 'ack p50 ms', 'ack p99 ms', 'ack max ms', 'loop delay p50 ms', 'p99 ms', 'max ms', 'cores busy', 'loop busy'],
      [
        ['idle (baseline)', '', '', '', '', '', fmt(l.idle.p50Ms), fmt(l.idle.p99Ms), fmt(l.idle.maxMs, 1), '', ''],
        ['mock streams alone (baseline)', fmtInt(l.mockOnly.messagesPerSec), '', '', '', '', fmt(l.mockOnly.loopDelay.p50Ms), fmt(l.mockOnly.loopDelay.p99Ms), fmt(l.mockOnly.loopDelay.maxMs, 1), fmt(l.mockOnly.cpuCores), `${fmt(100 * l.mockOnly.eventLoopUtilization, 0)}%`],
        ['Arbor', fmtInt(l.arbor.messagesPerSec), fmtInt(l.arbor.acksPerSec), fmt(l.arbor.ackP50Ms), fmt(l.arbor.ackP99Ms), fmt(l.arbor.ackMaxMs, 1), fmt(l.arbor.loopDelay.p50Ms), fmt(l.arbor.loopDelay.p99Ms), fmt(l.arbor.loopDelay.maxMs, 1), fmt(l.arbor.cpuCores), `${fmt(100 * l.arbor.eventLoopUtilization, 0)}%`],
      ],
    ),
  );
  out.push(`   loop delay: monitorEventLoopDelay, 1 ms sampling interval (included in every figure); pacing ceiling ${fmtInt(l.ceilingMessagesPerSec)} answers/s`);
  out.push(`   ack floor: raw write+fdatasync of one record p50 ${fmt(l.rawSync.p50Ms)} ms, p99 ${fmt(l.rawSync.p99Ms)} ms; the journal's own fdatasync under load p50 ${fmt(l.arbor.journalDatasyncP50Ms)} ms, p99 ${fmt(l.arbor.journalDatasyncP99Ms)} ms, ${fmtInt(l.arbor.datasyncsPerSec)}/s; snapshots written ${fmtInt(l.arbor.snapshotsPerSec)}/s`);
  const perAnswer = (x: LoadResult): string => `CPU ${fmtInt(x.cpuUsPerAnswer)} µs, main thread ${fmtInt(x.mainUsPerAnswer)} µs; GC pauses ${fmt(100 * x.gcShare, 1)}% of wall time (${fmtInt(x.gcPauses)}, longest ${fmt(x.gcMaxMs, 1)} ms)`;
  out.push(`   per answer: Arbor ${perAnswer(l.arbor)}; mock streams alone ${perAnswer(l.mockOnly)}`);
  out.push(`   session crashes ${l.arborHealth.crashes}, stopped ${l.arborHealth.stopped}`);
  out.push('');

  for (const s of [r.restart, r.restartRealistic]) {
    out.push(
      s.realistic
        ? `(c') The same restart, realistic: every session snapshotted (as snapshotEveryEvents = 100 has done by then) and the checkpoint written before the last round; the snapshots released the older segments`
        : `(c) Restart after SIGKILL: ${fmtInt(s.sessions)} sessions × ${s.eventsPerSession} events = ${fmtInt(s.events)} journaled events (complete turns: user message, stream started, answer completed), no snapshot; written through arbor.backend.append`,
    );
    out.push(`   written in ${fmtInt(s.write.ms)} ms (${fmtInt(s.write.eventsPerSec)} events/s), journal ${mib(s.write.journalBytes)} in ${s.write.segments} segment(s)`);
    const run = (name: string, x: RestartRun): string[] => [
      name,
      fmtInt(x.modulesLoadedMs),
      fmtInt(x.createArborMs),
      fmtInt(x.storeOpenMs),
      fmtInt(x.firstRequestFromCreateMs),
      fmtInt(x.firstRequestCpuMs),
      fmtInt(x.firstServedSinceStartMs),
      fmtInt(x.pendingAtFirstServed),
      fmtInt(x.allRecoveredFromCreateMs),
      fmtInt(x.allRecoveredCpuMs),
      fmtInt(x.spawnToServedMs),
      fmtInt(x.hotSessions),
      fmtInt(x.rssMiB),
    ];
    out.push(
      table(
        ['child process (median of runs)', 'boot+imports ms', 'createArbor ms', 'of which Store.open', 'first request ms (from createArbor)', 'process CPU ms until then', 'since process start', 'sessions still pending then', 'all recovered ms (from createArbor)', 'process CPU ms until then', 'parent: spawn → served', 'sessions in memory', 'RSS MiB'],
        [run(`recovering ${fmtInt(s.sessions)} sessions`, s.recovery), run('empty data dir (baseline)', s.emptyStart)],
      ),
    );
    out.push(
      `   runs: ${s.runs.map((x) => `${fmtInt(x.firstRequestFromCreateMs)}/${fmtInt(x.allRecoveredFromCreateMs)}`).join(', ')} ms to first request / all recovered; every session back at its last seq: ${s.recovery.sampleOk && s.recovery.recovered === s.sessions ? 'yes' : 'NO'}; notices appended by recovery: ${fmtInt(s.recovery.appendedByCreate)} (at most the previous round's probe answer, cut by its SIGKILL)`,
    );
    out.push(`   I/O floor: reading the ${mib(s.rawRead.bytes)} of journal back takes ${fmtInt(s.rawRead.ms)} ms (${fmtInt(s.rawRead.mibPerSec)} MiB/s, page cache)`);
    out.push('');
  }

  const ch = r.chat;
  out.push(`(d) Bytes on disk of a ${fmtInt(ch.turns)}-turn chat: user messages ≈ ${fmtInt(ch.meanUserChars)} chars, answers ≈ ${fmtInt(ch.meanAnswerChars)} chars (${mib(ch.textChars)} of text; brotli q4 keeps ${fmt(100 * ch.textBrotliRatio, 0)}% of it)`);
  const headers = ['turns', 'Arbor default', 'Arbor, close-only snapshot'];
  if (!ch.peers.skipped) headers.push('LangGraph SqliteSaver (db+WAL+shm)', 'ratio');
  const rows = ch.arborDefault.growth.map((g, i) => {
    const row = [String(g.turns), bytesShort(g.bytes), bytesShort(ch.arborCloseOnly.growth[i]?.bytes ?? Number.NaN)];
    if (!ch.peers.skipped) {
      const lg = ch.peers.puts.growth[i]?.bytes ?? Number.NaN;
      row.push(bytesShort(lg), `${fmt(lg / g.bytes, 1)}×`);
    }
    return row;
  });
  out.push(table(headers, rows));
  const ad = ch.arborDefault.afterClose;
  const ac = ch.arborCloseOnly.afterClose;
  out.push(`   Arbor after close, default: ${bytesShort(ad.bytes)} (journal ${bytesShort(ad.journalBytes)}, ${ad.snapshotFiles} snapshots ${bytesShort(ad.snapshotBytes)}), ${ch.arborDefault.events} events, ${fmt(ch.arborDefault.wallMs / 1000, 1)} s`);
  out.push(`   Arbor after close, close-only snapshot: ${bytesShort(ac.bytes)} (journal ${bytesShort(ac.journalBytes)}, ${ac.snapshotFiles} snapshot(s) ${bytesShort(ac.snapshotBytes)}), ${fmt(ch.arborCloseOnly.wallMs / 1000, 1)} s`);
  if (ch.peers.skipped) {
    out.push(`   LangGraph: skipped (${ch.peers.reason})`);
  } else {
    const p = ch.peers.puts;
    out.push(`   LangGraph (${Object.entries(ch.peers.versions).map(([k, v]) => `${k}@${v}`).join(', ')}):`);
    out.push(`   ${p.variant}: ${p.checkpoints} checkpoints; open: db ${mib(p.open.db)} + WAL ${mib(p.open.wal)} + shm ${kib(p.open.shm)}; after close: db ${mib(p.afterClose.db)} (WAL ${kib(p.afterClose.wal)}); ${fmt(p.wallMs / 1000, 1)} s`);
    const g = ch.peers.stateGraph;
    out.push(
      `   ${g.variant}, ${g.turns} turns: ${fmt(g.checkpoints / g.turns, 1)} checkpoints + ${fmt(g.writes / g.turns, 1)} writes per turn, ${mib(g.open.total)} open = ${fmt(ch.peers.stateGraphOverPuts, 1)}× the one-put variant at ${g.turns} turns; ${fmt(g.wallMs / 1000, 1)} s`,
    );
  }
  out.push('');

  const tl = r.tools;
  const d = tl.disk;
  out.push(`(e) A tool step (bench/tools: a no-op tool, durability fsync, its baselines in the same alternating run)`);
  out.push(`   overhead of a tool step p50 ${fmt(d.toolStepOverheadMs!.p50, 3)} ms (p99 ${fmt(d.toolStepOverheadMs!.p99, 3)}) against the tool called directly ${fmt(tl.directToolUs.p50, 2)} µs, two plain commits ${fmt(d.twoCommitsMs!.p50, 3)} ms (${fmt(tl.ratios.toolStepToTwoCommits!, 2)}×), a raw write+fdatasync ${fmt(tl.rawSyncMs.p50, 3)} ms`);
  out.push(`   first chunk p50: no tools ${fmt(d.ttfcNoTools!.p50, 3)} ms, tools registered ${fmt(d.ttfcToolsUnused!.p50, 3)} ms (${fmt(tl.ratios.ttfcToolsUnusedToNoTools!, 2)}×), a tool step first ${fmt(d.ttfcToolFirst!.p50, 3)} ms; a whole turn ${fmt(d.turnWithoutToolStep!.p50, 3)} ms without a tool step, ${fmt(d.turnWithToolStep!.p50, 3)} ms with one`);
  out.push('');
  out.push(...renderReplay(r.replay));
  out.push('');
  out.push(...targetLines(r.targets));
  return out.join('\n');
}

// ---- main --------------------------------------------------------------------------

async function main(): Promise<void> {
  const cfg = readConfig(parseConfig, USAGE);
  if (cfg === undefined) return;
  // Fail before the long measurements, not after them, when the peers are not installed.
  const peers = cfg.peers ? await loadLangGraph() : undefined;
  const start = startRun();
  const killChildren = (): void => {
    for (const child of children) child.kill('SIGKILL');
  };
  await withTempRoot('arbor-bench-runtime-', async (root) => {
    if (cfg.healthOnly) {
      const health = await healthFigures(root, cfg);
      const results = { meta: benchMeta(cfg, start), health, targets: healthTargets(health) };
      printResults(cfg, results, (r) => [headline('Arbor runtime benchmark, (a) health() alone (--health-only)', r.meta), ...renderHealth(r.health), '', ...targetLines(r.targets)].join('\n'));
      return;
    }
    const hot = await hotTierFigures(cfg);
    const health = await healthFigures(root, cfg);
    const load = await loadFigures(root, cfg);
    const restart = await restartFigures(root, cfg);
    const restartRealistic = await restartFigures(root, cfg, true);
    const chat = await chatFigures(root, cfg, peers);
    const tools = await toolFigures(cfg);
    const replay = await replayFigures(root, replayConfig(cfg.replayTiny));
    const partial = { hot, health, load, restart, restartRealistic, chat, tools, replay };
    const results: Results = {
      meta: benchMeta(cfg, start),
      ...partial,
      targets: makeTargets(partial),
    };
    printResults(cfg, results, render);
  }, killChildren);
}

runMain(main);
