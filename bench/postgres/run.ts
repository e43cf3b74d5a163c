/**
 * Arbor PostgreSQL benchmark: durable appends per second with 1 and 3 writer
 * nodes (child processes, each its own PgBackend and nodeId, many sessions
 * each, a window of appends kept in flight) on one PostgreSQL, and the file
 * backend beside them in the same run. See bench/README.md.
 *
 *   node --import tsx bench/postgres/run.ts [--tiny] [--json] [--seconds S]
 *
 * Uses the database in ARBOR_TEST_DATABASE_URL (a fresh schema per phase, dropped
 * after); without it, re-runs itself under scripts/with-postgres.sh, which starts
 * a throwaway server. Nothing here is a target: the figures are reported with
 * their ratios, and the exit code is non-zero only when the benchmark breaks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import pg from 'pg';
import { benchUsage, parseBenchArgs, readConfig, runMain, type BaseConfig } from '../lib/cli.ts';
import { progress } from '../lib/phases.ts';
import { benchMeta, fmt, fmtInt, headline, printResults, startRun, table, type BenchMeta } from '../lib/report.ts';
import { median } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';
import type { WriterConfig, WriterResult } from './writer-child.ts';
import type { TakeoverConfig, TakeoverResult } from './takeover-child.ts';
import { migrate, quoteSchema } from '../../src/postgres/migrations.ts';
import { openStore } from '../../src/file/store.ts';
import { loadavg } from 'node:os';

const USAGE = benchUsage('bench/postgres/run.ts', '(no peers: accepted and ignored)', 'measured seconds per phase and round (default 5; 0.5 with --tiny)');
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./writer-child.ts', import.meta.url));
const TAKEOVER_CHILD = fileURLToPath(new URL('./takeover-child.ts', import.meta.url));

interface Config extends BaseConfig {
  /** sessions per writer node */
  sessionsPerNode: number;
  /** appends each node keeps in flight */
  window: number;
  /** takeover (issue 10, goal 5): sessions × events a dead node left, and loads in flight while touching them all */
  takeoverSessions: number;
  takeoverEvents: number;
  takeoverConcurrency: number;
}

function parseConfig(argv: string[]): Config {
  const base = parseBenchArgs(argv, USAGE);
  return { ...base, sessionsPerNode: base.tiny ? 20 : 200, window: base.tiny ? 32 : 256, takeoverSessions: base.tiny ? 200 : 10_000, takeoverEvents: base.tiny ? 20 : 100, takeoverConcurrency: 16 };
}

/** Medians over the rounds of one backend's takeover timeline (ms since the new node called open). */
interface TakeoverSummary {
  openMs: number;
  firstRequestMs: number;
  allTouchedMs: number;
  runs: TakeoverResult[];
}

interface PhaseResult {
  nodes: number;
  /** sum over nodes of acknowledged appends / measured seconds (median over rounds) */
  appendsPerSec: number;
  ackP50Ms: number;
  ackP99Ms: number;
  /** events per PostgreSQL transaction (null for the file store) */
  avgBatch: number | null;
  rounds: number[];
}

interface Results {
  meta: BenchMeta<Config>;
  database: string;
  pg1: PhaseResult;
  pg3: PhaseResult;
  file: PhaseResult;
  ratios: { pg3ToPg1: number; pg1ToFile: number; pg3ToFile: number };
  /** issue 10, goal 5: a node taking over a dead node's sessions, lazily, one by one; the file store's lazy restart beside it */
  takeover: { sessions: number; eventsPerSession: number; concurrency: number; pg: TakeoverSummary; file: TakeoverSummary; seedMs: { pg: number; file: number } };
  /** per-node append rates beside the file store's (goal 5's second figure) */
  perNode: { pg1: number; pg3: number; file: number };
  loadAverage: number[];
  notes: string[];
}

function runWriters(configs: WriterConfig[]): Promise<WriterResult[]> {
  const children: ChildProcess[] = [];
  const outputs: string[] = configs.map(() => '');
  const errors: string[] = configs.map(() => '');
  const readies = configs.map((cfg, i) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(cfg)], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (errors[i] += d));
    return new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: string) => {
        outputs[i] += d;
        if (outputs[i]!.startsWith('ready\n')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`writer ${cfg.nodeId} exited with ${code} before it was ready\n${errors[i]}`)));
    });
  });
  const exits = children.map(
    (child, i) =>
      new Promise<WriterResult>((resolve, reject) => {
        child.on('exit', (code) => {
          if (code !== 0) return reject(new Error(`writer ${configs[i]!.nodeId} exited with ${code}\n${errors[i]}`));
          const line = outputs[i]!.split('\n').filter((l) => l.startsWith('{')).at(-1);
          if (line === undefined) return reject(new Error(`writer ${configs[i]!.nodeId} printed no result\n${errors[i]}`));
          resolve(JSON.parse(line) as WriterResult);
        });
      }),
  );
  return (async () => {
    try {
      await Promise.all(readies);
      // Every node has opened and taken its sessions: start them together.
      for (const child of children) child.stdin!.write('go\n');
      return await Promise.all(exits);
    } catch (err) {
      for (const child of children) child.kill('SIGKILL');
      throw err;
    }
  })();
}

async function withSchema<T>(url: string, body: (schema: string) => Promise<T>): Promise<T> {
  const schema = `arbor_bench_${randomBytes(4).toString('hex')}`;
  try {
    return await body(schema);
  } finally {
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).finally(() => pool.end());
  }
}

const TAKEOVER_PREFIX = 'tk-';
const TAKEOVER_CONTENT = 'Hi! I ordered the blue running shoes last Tuesday but the tracking page still says "label created". Could you check whether they shipped?'.padEnd(200, '.');

/**
 * What a dead node leaves in PostgreSQL: `sessions` × `events` events, written
 * straight into the schema with SQL (far faster than through a node), and an
 * expired lease per session naming that node.
 */
async function seedPostgres(url: string, schema: string, cfg: Config): Promise<void> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  try {
    await migrate(pool, schema);
    const q = quoteSchema(schema);
    const data = JSON.stringify({ content: TAKEOVER_CONTENT });
    await pool.query(
      `INSERT INTO ${q}.events (sid, seq, ts, type, v, data, cid)
       SELECT $1 || s, e, 1700000000000 + e, 'user_message_sent', 1, $2, NULL
       FROM generate_series(0, $3::int - 1) s, generate_series(1, $4::int) e`,
      [TAKEOVER_PREFIX, data, cfg.takeoverSessions, cfg.takeoverEvents],
    );
    await expireLeases(pool, q, cfg);
    await pool.query(`ANALYZE ${q}.events`);
  } finally {
    await pool.end();
  }
}

/** Every takeover session's lease held by a dead node, expired a second ago (again before each round). */
async function expireLeases(pool: pg.Pool, q: string, cfg: Config): Promise<void> {
  await pool.query(
    `INSERT INTO ${q}.leases (sid, owner, owner_address, epoch, expires_at)
     SELECT $1 || s, 'dead-node', NULL, 1, now() - interval '1 second' FROM generate_series(0, $2::int - 1) s
     ON CONFLICT (sid) DO UPDATE SET owner = 'dead-node', expires_at = now() - interval '1 second'`,
    [TAKEOVER_PREFIX, cfg.takeoverSessions],
  );
}

/** The same sessions and events in a file store, through Store.append with many appends in flight. */
async function seedFile(dataDir: string, cfg: Config): Promise<void> {
  const store = await openStore<null>({ dataDir, durability: 'fsync' }, { reducer: (s) => s, initialState: () => null });
  try {
    for (let e = 0; e < cfg.takeoverEvents; e += 1) {
      const round: Promise<unknown>[] = [];
      for (let i = 0; i < cfg.takeoverSessions; i += 1) round.push(store.append({ sid: `${TAKEOVER_PREFIX}${i}`, type: 'user_message_sent', data: { content: TAKEOVER_CONTENT } }));
      await Promise.all(round);
    }
  } finally {
    await store.close();
  }
}

function runTakeover(config: TakeoverConfig): Promise<TakeoverResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', TAKEOVER_CHILD, JSON.stringify(config)], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('exit', (code) => {
      const line = out.split('\n').filter((l) => l.startsWith('{')).at(-1);
      if (code !== 0 || line === undefined) return reject(new Error(`takeover node (${config.kind}) exited with ${code}\n${err}`));
      resolve(JSON.parse(line) as TakeoverResult);
    });
  });
}

function summariseTakeover(runs: TakeoverResult[]): TakeoverSummary {
  return { openMs: median(runs.map((r) => r.openMs)), firstRequestMs: median(runs.map((r) => r.firstRequestMs)), allTouchedMs: median(runs.map((r) => r.allTouchedMs)), runs };
}

function summarise(nodes: number, rounds: WriterResult[][]): PhaseResult {
  const perRound = rounds.map((r) => r.reduce((sum, w) => sum + w.appends / w.seconds, 0));
  const all = rounds.flat();
  const batches = all.map((w) => w.avgBatch).filter((b): b is number => b !== null);
  return {
    nodes,
    appendsPerSec: median(perRound),
    ackP50Ms: median(all.map((w) => w.ackP50Ms)),
    ackP99Ms: median(all.map((w) => w.ackP99Ms)),
    avgBatch: batches.length === 0 ? null : median(batches),
    rounds: perRound,
  };
}

async function main(): Promise<void> {
  const cfg = readConfig(parseConfig, USAGE);
  if (cfg === undefined) return;
  const url = process.env.ARBOR_TEST_DATABASE_URL;
  if (!url) {
    // No database given: run this same command beside a throwaway server.
    progress('ARBOR_TEST_DATABASE_URL is not set: starting a throwaway PostgreSQL with scripts/with-postgres.sh');
    const child = spawn('bash', [join(repoRoot, 'scripts/with-postgres.sh'), process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { cwd: repoRoot, stdio: 'inherit' });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    process.exitCode = code ?? 1;
    return;
  }
  const start = startRun();
  const roundsCount = cfg.tiny ? 1 : 3;
  const writer = (kind: 'pg' | 'file', nodeId: string, extra: Partial<WriterConfig>): WriterConfig => ({
    kind,
    nodeId,
    sessions: cfg.sessionsPerNode,
    window: cfg.window,
    warmupSeconds: cfg.warmupSeconds,
    seconds: cfg.seconds,
    ...extra,
  });
  const pg1: WriterResult[][] = [];
  const pg3: WriterResult[][] = [];
  const file: WriterResult[][] = [];
  await withTempRoot('arbor-bench-pg-', async (root) => {
    // Phases interleaved round by round, so a drift of the machine's load hits all three alike.
    for (let round = 0; round < roundsCount; round += 1) {
      progress(`round ${round + 1}/${roundsCount}: PostgreSQL, 1 node`);
      pg1.push(await withSchema(url, (schema) => runWriters([writer('pg', 'n1', { url, schema })])));
      progress(`round ${round + 1}/${roundsCount}: PostgreSQL, 3 nodes`);
      pg3.push(await withSchema(url, (schema) => runWriters(['n1', 'n2', 'n3'].map((id) => writer('pg', id, { url, schema })))));
      progress(`round ${round + 1}/${roundsCount}: file store, 1 node`);
      file.push(await runWriters([writer('file', 'f1', { dataDir: join(root, `file-${round}`) })]));
    }
  });
  // Goal 5: a fresh node takes over a dead node's sessions lazily, one by one; the file store's lazy restart beside it, rounds interleaved.
  const takeoverRounds = cfg.tiny ? 1 : 3;
  const tkPg: TakeoverResult[] = [];
  const tkFile: TakeoverResult[] = [];
  const seedMs = { pg: 0, file: 0 };
  await withTempRoot('arbor-bench-pg-takeover-', async (root) => {
    await withSchema(url, async (schema) => {
      const dataDir = join(root, 'file-takeover');
      progress(`takeover: seeding ${fmtInt(cfg.takeoverSessions)} sessions × ${cfg.takeoverEvents} events in PostgreSQL (SQL) and in a file store`);
      let t = performance.now();
      await seedPostgres(url, schema, cfg);
      seedMs.pg = performance.now() - t;
      t = performance.now();
      await seedFile(dataDir, cfg);
      seedMs.file = performance.now() - t;
      const base = { prefix: TAKEOVER_PREFIX, sessions: cfg.takeoverSessions, concurrency: cfg.takeoverConcurrency };
      for (let round = 0; round < takeoverRounds; round += 1) {
        const pool = new pg.Pool({ connectionString: url, max: 1 });
        await expireLeases(pool, quoteSchema(schema), cfg).finally(() => pool.end());
        progress(`takeover round ${round + 1}/${takeoverRounds}: PostgreSQL node`);
        tkPg.push(await runTakeover({ kind: 'pg', url, schema, nodeId: `taker-${round}`, ...base }));
        progress(`takeover round ${round + 1}/${takeoverRounds}: file store (lazy recovery)`);
        tkFile.push(await runTakeover({ kind: 'file', dataDir, nodeId: 'file', ...base }));
      }
    });
  });
  const r1 = summarise(1, pg1);
  const r3 = summarise(3, pg3);
  const rf = summarise(1, file);
  const results: Results = {
    meta: benchMeta(cfg, start),
    database: url.replace(/\/\/[^@/]*@/, '//'),
    pg1: r1,
    pg3: r3,
    file: rf,
    ratios: { pg3ToPg1: r3.appendsPerSec / r1.appendsPerSec, pg1ToFile: r1.appendsPerSec / rf.appendsPerSec, pg3ToFile: r3.appendsPerSec / rf.appendsPerSec },
    takeover: { sessions: cfg.takeoverSessions, eventsPerSession: cfg.takeoverEvents, concurrency: cfg.takeoverConcurrency, pg: summariseTakeover(tkPg), file: summariseTakeover(tkFile), seedMs },
    perNode: { pg1: r1.appendsPerSec, pg3: r3.appendsPerSec / 3, file: rf.appendsPerSec },
    loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
    notes: [
      `PostgreSQL, the writer nodes and this process share the machine's ${benchMeta(cfg, start).cpus} CPUs: with 3 nodes on 2 cores the nodes compete with the server for CPU, so the 3-node/1-node ratio measures contention here, not the scaling of separate machines.`,
      `each node keeps ${cfg.window} appends in flight over ${cfg.sessionsPerNode} sessions, so 3 nodes offer 3x the concurrency of 1.`,
      'every acknowledged append is durable: PostgreSQL with fsync=on and synchronous_commit=on, the file store under durability fsync.',
    ],
  };
  printResults(cfg, results, render);
}

function render(r: Results): string {
  const row = (name: string, p: PhaseResult): string[] => [name, String(p.nodes), fmtInt(p.appendsPerSec), fmt(p.ackP50Ms), fmt(p.ackP99Ms), p.avgBatch === null ? '-' : fmt(p.avgBatch, 1)];
  return [
    headline('Arbor PostgreSQL benchmark', r.meta),
    '',
    table(['backend', 'nodes', 'appends/s', 'ack p50 ms', 'ack p99 ms', 'events/txn'], [row('postgres', r.pg1), row('postgres', r.pg3), row('file (fsync)', r.file)]),
    '',
    `3 nodes / 1 node: ${fmt(r.ratios.pg3ToPg1)}x    postgres 1 node / file: ${fmt(r.ratios.pg1ToFile)}x    postgres 3 nodes / file: ${fmt(r.ratios.pg3ToFile)}x`,
    '',
    `Goal 5 (issue 10): a fresh node takes over ${fmtInt(r.takeover.sessions)} sessions × ${r.takeover.eventsPerSession} events a dead node left (expired leases), lazily, one session at a time (${r.takeover.concurrency} loads in flight to touch them all); the file store's lazy restart on the same data beside it. ms since the node called open, median of ${r.takeover.pg.runs.length} run(s):`,
    table(
      ['backend', 'open', 'first request', 'all touched', 'events read'],
      [
        ['postgres (take over leases)', fmtInt(r.takeover.pg.openMs), fmtInt(r.takeover.pg.firstRequestMs), fmtInt(r.takeover.pg.allTouchedMs), fmtInt(r.takeover.pg.runs[0]?.events ?? Number.NaN)],
        ['file (lazy recovery)', fmtInt(r.takeover.file.openMs), fmtInt(r.takeover.file.firstRequestMs), fmtInt(r.takeover.file.allTouchedMs), fmtInt(r.takeover.file.runs[0]?.events ?? Number.NaN)],
      ],
    ),
    `   first request = the probe session taken over and one append to it acknowledged; postgres / file: first request ${fmt(r.takeover.pg.firstRequestMs / r.takeover.file.firstRequestMs)}x, all touched ${fmt(r.takeover.pg.allTouchedMs / r.takeover.file.allTouchedMs)}x (seeded in ${fmtInt(r.takeover.seedMs.pg)} ms by SQL / ${fmtInt(r.takeover.seedMs.file)} ms through Store.append)`,
    `   per-node durable appends/s: postgres 1 node ${fmtInt(r.perNode.pg1)}, postgres 3 nodes ${fmtInt(r.perNode.pg3)} per node, file store ${fmtInt(r.perNode.file)} (postgres 1 node / file = ${fmt(r.perNode.pg1 / r.perNode.file)}x); load average ${r.loadAverage.map((x) => fmt(x, 2)).join(' / ')}`,
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}

runMain(main);
