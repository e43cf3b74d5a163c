/**
 * ArborSaver against LangGraph.js SqliteSaver: bytes on disk and `put`
 * latency of one thread of a message graph (StateGraph(MessagesAnnotation),
 * one answering node, invoked once per step) at 100, 1,000 and 10,000 steps,
 * both in the same run. See bench/README.md ("bench/langgraph").
 *
 *   node --import tsx bench/langgraph/run.ts [--tiny] [--json]
 *
 * LangGraph, its messages and SqliteSaver come from bench/node_modules
 * (`npm install --prefix bench`); ArborSaver from src/, given bench's
 * serializer so that both sides revive the same message classes.
 * Goals are reported as PASS/FAIL lines and never fail the run: the exit code
 * is non-zero only when the benchmark itself breaks.
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { ArborSaver } from '../../src/langgraph.ts';
import { mulberry32 } from '../../src/testing/memory-fs.ts';
import { benchUsage, parseBenchArgs, readConfig, runMain, type BaseConfig } from '../lib/cli.ts';
import { loadLangGraphModules } from '../lib/peers.ts';
import { maybeGc, progress } from '../lib/phases.ts';
import { benchMeta, bytesShort, fmt, fmtInt, headline, printResults, startRun, table, type BenchMeta } from '../lib/report.ts';
import { Samples } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';

const USAGE = benchUsage('bench/langgraph/run.ts', '(always on when installed: SqliteSaver, the baseline of two goals, comes from bench/node_modules (npm install --prefix bench); without it those goals are SKIP)', 'unused here (the run is sized by steps)');

interface Config extends BaseConfig {
  /** step counts where bytes and latencies are reported (Arbor) */
  milestones: number[];
  /** the largest milestone SqliteSaver is run to (its bytes grow quadratically) */
  sqliteMaxSteps: number;
  /** the milestone the bytes goal is judged at */
  goalSteps: number;
}

function parseConfig(argv: string[]): Config {
  const base = parseBenchArgs(argv, USAGE);
  return base.tiny
    ? { ...base, milestones: [10, 30, 100], sqliteMaxSteps: 100, goalSteps: 100 }
    : { ...base, milestones: [100, 1_000, 10_000], sqliteMaxSteps: 1_000, goalSteps: 1_000 };
}

// ---- the workload --------------------------------------------------------------

/** Seeded chat text: user messages of 20–300 characters, answers of 100–800. */
function makeText(seed: number): (min: number, max: number) => string {
  const rand = mulberry32(seed);
  const words = ['the', 'state', 'graph', 'node', 'message', 'tool', 'answer', 'thread', 'store', 'durable', 'checkpoint', 'model', 'turn', 'and', 'of', 'to', 'a', 'in', 'is', 'with'];
  return (min, max) => {
    const n = min + Math.floor(rand() * (max - min));
    let s = '';
    while (s.length < n) s += `${words[Math.floor(rand() * words.length)]}${rand() < 0.1 ? `${Math.floor(rand() * 1000)}` : ''} `;
    return s.slice(0, n);
  };
}

interface Lg {
  versions: Record<string, string>;
  StateGraph: new (a: unknown) => any;
  MessagesAnnotation: unknown;
  START: string;
  END: string;
  HumanMessage: new (f: { content: string; id?: string }) => unknown;
  AIMessage: new (f: { content: string; id?: string }) => unknown;
  /** undefined without bench/node_modules: the SQLite baseline is then not measured */
  SqliteSaver: { fromConnString(path: string): any } | undefined;
  JsonPlusSerializer: new () => any;
}

async function loadPeers(): Promise<Lg> {
  const { versions, lg, messages, sqlite, checkpoint } = await loadLangGraphModules({ sqliteOptional: true });
  return {
    versions,
    StateGraph: lg.StateGraph,
    MessagesAnnotation: lg.MessagesAnnotation,
    START: lg.START,
    END: lg.END,
    HumanMessage: messages.HumanMessage,
    AIMessage: messages.AIMessage,
    SqliteSaver: sqlite?.SqliteSaver,
    JsonPlusSerializer: checkpoint.JsonPlusSerializer,
  };
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += statSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

function sqliteBytes(file: string): number {
  let total = 0;
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      total += statSync(f).size;
    } catch {
      // absent
    }
  }
  return total;
}

interface Point {
  steps: number;
  /** bytes on disk while open, at this step count */
  bytes: number;
  /** put latency over the steps since the previous point (ms) */
  putP50Ms: number;
  putP99Ms: number;
  puts: number;
}

interface SaverRun {
  name: string;
  points: Point[];
  /** bytes after close, at the last point */
  bytesAfterClose: number;
  putWrites: number;
  wallSec: number;
  /** least-squares slope of log(bytes) over log(steps) */
  growthExponent: number;
  setting: string;
}

function exponent(points: Point[]): number {
  const xs = points.map((p) => Math.log(p.steps));
  const ys = points.map((p) => Math.log(p.bytes));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i += 1) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return num / den;
}

/** One thread of `steps` steps through a compiled message graph on `saver`; `bytes()` sizes its storage. */
async function runGraph(name: string, lg: Lg, saver: any, milestones: number[], bytes: () => number, close: () => Promise<number>, setting: string): Promise<SaverRun> {
  const text = makeText(2026);
  const put = saver.put.bind(saver);
  const putWrites = saver.putWrites.bind(saver);
  let window = new Samples();
  let writes = 0;
  saver.put = async (...args: unknown[]) => {
    const t0 = performance.now();
    const r = await put(...args);
    window.push(performance.now() - t0);
    return r;
  };
  saver.putWrites = async (...args: unknown[]) => {
    writes += 1;
    return putWrites(...args);
  };
  let step = 0;
  const graph = new lg.StateGraph(lg.MessagesAnnotation)
    .addNode('agent', () => ({ messages: [new lg.AIMessage({ content: text(100, 800), id: `ai-${step}` })] }))
    .addEdge(lg.START, 'agent')
    .addEdge('agent', lg.END)
    .compile({ checkpointer: saver });
  const config = { configurable: { thread_id: 'bench-thread' } };
  const points: Point[] = [];
  const t0 = performance.now();
  const last = milestones.at(-1)!;
  for (step = 1; step <= last; step += 1) {
    await graph.invoke({ messages: [new lg.HumanMessage({ content: text(20, 300), id: `human-${step}` })] }, config);
    if (milestones.includes(step)) {
      const s = window.summary();
      points.push({ steps: step, bytes: bytes(), putP50Ms: s.p50, putP99Ms: s.p99, puts: window.count });
      progress(`${name}: ${fmtInt(step)} steps, ${bytesShort(points.at(-1)!.bytes)}, put p50 ${fmt(s.p50, 2)} ms p99 ${fmt(s.p99, 2)} ms`);
      window = new Samples();
    }
  }
  const final = (await graph.getState(config)).values.messages as unknown[];
  if (final.length !== 2 * last) throw new Error(`${name}: the thread holds ${final.length} messages after ${last} steps, expected ${2 * last}`);
  const bytesAfterClose = await close();
  return { name, points, bytesAfterClose, putWrites: writes, wallSec: (performance.now() - t0) / 1000, growthExponent: exponent(points), setting };
}

interface Goal {
  goal: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  figure: string;
  baseline: string;
  ratio: string;
}

interface Results {
  meta: BenchMeta<Config>;
  versions: Record<string, string>;
  arbor: SaverRun;
  /** null when the SQLite checkpointer is not installed (npm install --prefix bench) */
  sqlite: SaverRun | null;
  goals: Goal[];
  loadAverage: number[];
}

/** SqliteSaver through the same graph, to `cfg.sqliteMaxSteps` (its bytes grow quadratically). */
async function runSqlite(lg: Lg, SqliteSaver: NonNullable<Lg['SqliteSaver']>, root: string, cfg: Config): Promise<SaverRun> {
  const sqliteFile = join(await mkdtemp(join(root, 'sqlite-')), 'checkpoints.sqlite');
  const sqliteSaver = SqliteSaver.fromConnString(sqliteFile);
  const sqliteMilestones = cfg.milestones.filter((m) => m <= cfg.sqliteMaxSteps);
  let setting = '';
  const sqlite = await runGraph('SqliteSaver', lg, sqliteSaver, sqliteMilestones, () => sqliteBytes(sqliteFile), async () => {
    // Read after the run: SqliteSaver sets WAL mode on its first use.
    const sync = sqliteSaver.db.pragma('synchronous', { simple: true }) as number;
    const mode = sqliteSaver.db.pragma('journal_mode', { simple: true }) as string;
    const name = ['OFF', 'NORMAL', 'FULL', 'EXTRA'][sync] ?? String(sync);
    setting = `journal_mode=${mode}, synchronous=${name} (${sync})${sync < 2 ? ": a put's commit is not fsync'ed (WAL + NORMAL syncs at checkpoints only)" : ''}`;
    sqliteSaver.db.close();
    return sqliteBytes(sqliteFile);
  }, '');
  sqlite.setting = setting;
  await rm(join(sqliteFile, '..'), { recursive: true, force: true });
  return sqlite;
}

async function main(): Promise<void> {
  const cfg = readConfig(parseConfig, USAGE);
  if (cfg === undefined) return;
  const start = startRun();
  const lg = await loadPeers();
  const partial = await withTempRoot('arbor-bench-langgraph-', async (root) => {
    // SqliteSaver first (it is the baseline), then ArborSaver with fsync durability (the default).
    const sqlite = lg.SqliteSaver === undefined ? null : await runSqlite(lg, lg.SqliteSaver, root, cfg);
    maybeGc();
    const dataDir = join(root, 'arbor');
    const arborSaver = await ArborSaver.open({ dataDir, serde: new lg.JsonPlusSerializer() });
    const arbor = await runGraph('ArborSaver', lg, arborSaver, cfg.milestones, () => dirBytes(dataDir), async () => {
      await arborSaver.close();
      return dirBytes(dataDir);
    }, 'durability fsync (default): a put resolves once fdatasync returned');
    return { arbor, sqlite };
  });
  const { arbor, sqlite } = partial;
  const at = (run: SaverRun, steps: number): Point | undefined => run.points.find((p) => p.steps === steps);
  const aG = at(arbor, cfg.goalSteps)!;
  const arborP99 = Math.max(...arbor.points.filter((p) => p.steps <= cfg.goalSteps).map((p) => p.putP99Ms));
  const notMeasured = 'SqliteSaver not measured: npm install --prefix bench';
  const goals: Goal[] = [];
  if (sqlite === null) {
    goals.push({ goal: `bytes on disk ≤ 1/50 of SqliteSaver's at ${fmtInt(cfg.goalSteps)} steps`, status: 'SKIP', figure: `ArborSaver ${bytesShort(aG.bytes)}`, baseline: notMeasured, ratio: '-' });
  } else {
    const sG = at(sqlite, cfg.goalSteps)!;
    // The baseline's smallest figure at that step count: after close (WAL checkpointed) when it ended there.
    const sqliteBytesAtGoal = sqlite.points.at(-1)!.steps === cfg.goalSteps ? Math.min(sG.bytes, sqlite.bytesAfterClose) : sG.bytes;
    const bytesRatio = sqliteBytesAtGoal / aG.bytes;
    goals.push({ goal: `bytes on disk ≤ 1/50 of SqliteSaver's at ${fmtInt(cfg.goalSteps)} steps`, status: bytesRatio >= 50 ? 'PASS' : 'FAIL', figure: `ArborSaver ${bytesShort(aG.bytes)}`, baseline: `SqliteSaver ${bytesShort(sqliteBytesAtGoal)}`, ratio: `1/${fmt(bytesRatio, 1)}` });
  }
  goals.push({
    goal: `growth exponent of bytes ≤ 1.1 (${arbor.points.map((p) => fmtInt(p.steps)).join(', ')} steps)`,
    status: arbor.growthExponent <= 1.1 ? 'PASS' : 'FAIL',
    figure: `ArborSaver ${fmt(arbor.growthExponent, 3)}`,
    baseline: sqlite === null ? notMeasured : `SqliteSaver ${fmt(sqlite.growthExponent, 3)} (${sqlite.points.map((p) => fmtInt(p.steps)).join(', ')} steps)`,
    ratio: sqlite === null ? '-' : fmt(arbor.growthExponent / sqlite.growthExponent, 3),
  });
  if (sqlite === null) {
    goals.push({ goal: `put p99 no worse than SqliteSaver's, durable (worst window up to ${fmtInt(cfg.goalSteps)} steps)`, status: 'SKIP', figure: `ArborSaver ${fmt(arborP99, 2)} ms (fsync)`, baseline: notMeasured, ratio: '-' });
  } else {
    const sqliteP99 = Math.max(...sqlite.points.filter((p) => p.steps <= cfg.goalSteps).map((p) => p.putP99Ms));
    goals.push({
      goal: `put p99 no worse than SqliteSaver's, durable (worst window up to ${fmtInt(cfg.goalSteps)} steps)`,
      status: arborP99 <= sqliteP99 ? 'PASS' : 'FAIL',
      figure: `ArborSaver ${fmt(arborP99, 2)} ms (fsync)`,
      baseline: `SqliteSaver ${fmt(sqliteP99, 2)} ms (${sqlite.setting.split(':')[0]})`,
      ratio: fmt(arborP99 / sqliteP99, 2),
    });
  }
  const results: Results = { meta: benchMeta(cfg, start), versions: lg.versions, arbor, sqlite, goals, loadAverage: loadavg() };
  printResults(cfg, results, render);
}

function render(r: Results): string {
  const out = [headline('bench/langgraph: ArborSaver vs SqliteSaver', r.meta), ''];
  out.push(`one thread of StateGraph(MessagesAnnotation) with one answering node, invoke per step (a user message of 20-300 chars, an answer of 100-800); ${Object.entries(r.versions).map(([k, v]) => `${k}@${v}`).join(', ')}`, '');
  const rows: string[][] = [];
  for (const p of r.arbor.points) {
    const s = r.sqlite?.points.find((q) => q.steps === p.steps);
    rows.push([fmtInt(p.steps), bytesShort(p.bytes), s ? bytesShort(s.bytes) : 'not run', s ? `1/${fmt(s.bytes / p.bytes, 1)}` : '', `${fmt(p.putP50Ms, 2)} / ${fmt(p.putP99Ms, 2)}`, s ? `${fmt(s.putP50Ms, 2)} / ${fmt(s.putP99Ms, 2)}` : '']);
  }
  out.push(table(['steps', 'ArborSaver bytes', 'SqliteSaver bytes', 'ratio', 'Arbor put p50/p99 ms', 'SQLite put p50/p99 ms'], rows));
  out.push('');
  out.push(`ArborSaver: ${r.arbor.setting}; after close ${bytesShort(r.arbor.bytesAfterClose)}; growth exponent ${fmt(r.arbor.growthExponent, 3)}; ${fmt(r.arbor.wallSec, 1)} s`);
  out.push(
    r.sqlite === null
      ? 'SqliteSaver: not measured (its package comes from bench/node_modules: npm install --prefix bench)'
      : `SqliteSaver: ${r.sqlite.setting}; after close ${bytesShort(r.sqlite.bytesAfterClose)}; growth exponent ${fmt(r.sqlite.growthExponent, 3)}; ${fmt(r.sqlite.wallSec, 1)} s; run to ${fmtInt(r.sqlite.points.at(-1)!.steps)} steps only (quadratic: 10x the steps is ~100x the bytes)`,
  );
  out.push('', `Goals (load average ${r.loadAverage.map((x) => fmt(x, 2)).join(' / ')} over 1 / 5 / 15 min when judged)`);
  for (const g of r.goals) out.push(`  ${g.status.padEnd(4)}  ${g.goal}`, `        figure ${g.figure}; baseline ${g.baseline}; ratio ${g.ratio}`);
  return out.join('\n');
}

runMain(main);
