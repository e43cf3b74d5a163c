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
import { join } from 'node:path';
import pg from 'pg';
import { benchUsage, parseBenchArgs, readConfig, runMain, type BaseConfig } from '../lib/cli.ts';
import { progress } from '../lib/phases.ts';
import { benchMeta, fmt, fmtInt, headline, printResults, startRun, table, type BenchMeta } from '../lib/report.ts';
import { median } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';
import type { WriterConfig, WriterResult } from './writer-child.ts';

const USAGE = benchUsage('bench/postgres/run.ts', '(no peers: accepted and ignored)', 'measured seconds per phase and round (default 5; 0.5 with --tiny)');
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./writer-child.ts', import.meta.url));

interface Config extends BaseConfig {
  /** sessions per writer node */
  sessionsPerNode: number;
  /** appends each node keeps in flight */
  window: number;
}

function parseConfig(argv: string[]): Config {
  const base = parseBenchArgs(argv, USAGE);
  return { ...base, sessionsPerNode: base.tiny ? 20 : 200, window: base.tiny ? 32 : 256 };
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
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}

runMain(main);
