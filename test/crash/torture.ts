/**
 * On-demand SIGKILL torture: the CI crash test's harness, for as many kills as
 * you like.
 *
 *   npm run torture -- --kills 10000 [--durability fsync|write|mixed] [--parallel 2]
 *       [--point-ratio 0.25] [--cycles-per-dir 100] [--sessions 50] [--concurrency 2]
 *       [--segment-mb 0.05] [--snapshot-every 25] [--think-ms 20] [--seed N] [--index-fates yes|no]
 *
 * With --index-fates yes (the default), half the cycles first do something to
 * the journal index the last verification left (remove it, flip a byte, cut it
 * short, put an older copy back, or one of another data directory): recovery
 * must check out the same, and never report a loss.
 * Runs `--parallel` lanes, each a data directory killed and restarted
 * `--cycles-per-dir` times before it is replaced by a fresh one. A fraction
 * `--point-ratio` of the kills are at a named kill point (all of them under
 * fsync; mid-batch-write and mid-rotation under write), the rest at random
 * moments. Prints progress, then one summary line; exits 1 on any violation,
 * printing it and the failing data directory, which is kept.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KILL_POINTS, prng, randInt, type KillPoint } from './crash-model.ts';
import { CrashLane, CrashViolation, randomPlan, type ChildConfig, type CycleReport } from './crash-lane.ts';

const { values: a } = parseArgs({
  options: {
    kills: { type: 'string', default: '1000' },
    durability: { type: 'string', default: 'fsync' },
    parallel: { type: 'string', default: '2' },
    'point-ratio': { type: 'string', default: '0.25' },
    'cycles-per-dir': { type: 'string', default: '100' },
    sessions: { type: 'string', default: '50' },
    concurrency: { type: 'string', default: '2' },
    'segment-mb': { type: 'string', default: '0.05' },
    'snapshot-every': { type: 'string', default: '25' },
    'think-ms': { type: 'string', default: '20' },
    seed: { type: 'string' },
    'index-fates': { type: 'string', default: 'yes' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (a.help) {
  console.log('usage: npm run torture -- --kills N [--durability fsync|write|mixed] [--parallel P] [--point-ratio R] [--cycles-per-dir C] [--sessions S] [--concurrency C] [--segment-mb X] [--snapshot-every K] [--think-ms T] [--seed N]');
  process.exit(0);
}

function num(name: string, value: string | undefined, min: number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min) {
    console.error(`torture: --${name} must be a number >= ${min}, got ${value}`);
    process.exit(2);
  }
  return n;
}

const kills = Math.floor(num('kills', a.kills, 1));
const parallel = Math.floor(num('parallel', a.parallel, 1));
const pointRatio = num('point-ratio', a['point-ratio'], 0);
const cyclesPerDir = Math.floor(num('cycles-per-dir', a['cycles-per-dir'], 1));
type DurabilityArg = 'fsync' | 'write' | 'mixed';
const isDurabilityArg = (s: string | undefined): s is DurabilityArg => s === 'fsync' || s === 'write' || s === 'mixed';
if (!isDurabilityArg(a.durability)) {
  console.error(`torture: --durability must be fsync, write or mixed, got ${a.durability}`);
  process.exit(2);
}
const durabilityArg: DurabilityArg = a.durability;
const seed = a.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Math.floor(num('seed', a.seed, 0));
const baseConfig: Omit<ChildConfig, 'durability'> = {
  sessions: Math.floor(num('sessions', a.sessions, 1)),
  concurrency: Math.floor(num('concurrency', a.concurrency, 1)),
  segmentMb: num('segment-mb', a['segment-mb'], 0.000001),
  snapshotEvery: Math.floor(num('snapshot-every', a['snapshot-every'], 1)),
  thinkMs: Math.floor(num('think-ms', a['think-ms'], 0)),
};
const POINTS: Record<'fsync' | 'write', readonly KillPoint[]> = { fsync: KILL_POINTS, write: ['mid-batch-write', 'mid-rotation'] };

/**
 * A hash of src/: each child loads the source afresh, so an edit during a long
 * run (say, of the on-disk format) can make data written before it unreadable
 * after it. A violation says so when the hash changed.
 */
const SRC_DIR = fileURLToPath(new URL('../../src/', import.meta.url));
function srcFingerprint(): string {
  const h = createHash('sha256');
  for (const f of readdirSync(SRC_DIR, { recursive: true }).map(String).sort()) {
    if (!f.endsWith('.ts')) continue;
    h.update(f);
    h.update(readFileSync(join(SRC_DIR, f)));
  }
  return h.digest('hex');
}
const srcAtStart = srcFingerprint();

console.log(`torture: ${kills} kills, durability ${durabilityArg}, ${parallel} in parallel, point ratio ${pointRatio}, ${cyclesPerDir} cycles per data dir, seed ${seed}`);
console.log(`torture: workload ${baseConfig.sessions} sessions × ${baseConfig.concurrency} in flight, ${baseConfig.segmentMb} MiB segments, snapshot every ${baseConfig.snapshotEvery} acks, think 0..${baseConfig.thinkMs} ms`);

const started = performance.now();
let startedKills = 0;
let done = 0;
let acks = 0;
let acksChecked = 0;
let pointKills = 0;
let failures = 0;
let stop = false;
let dirCount = 0;
let lastProgress = 0;
const failedDirs: string[] = [];

function progress(force = false): void {
  const now = performance.now();
  if (!force && now - lastProgress < 5000) return;
  lastProgress = now;
  const s = (now - started) / 1000;
  console.log(`torture: ${done}/${kills} kills (${pointKills} at named points), ${acks} acks, ${acksChecked} acked events checked, ${failures} failures, ${dirCount} data dirs, ${s.toFixed(0)} s (${(done / s).toFixed(1)} kills/s)`);
}

async function lane(index: number): Promise<void> {
  const rand = prng(seed + index * 7919);
  while (!stop && startedKills < kills) {
    const durability: 'fsync' | 'write' = durabilityArg === 'mixed' ? (rand() < 0.5 ? 'fsync' : 'write') : durabilityArg;
    const dir = mkdtempSync(join(tmpdir(), 'arbor-torture-'));
    dirCount += 1;
    const crashLane = new CrashLane(dir, { ...baseConfig, durability });
    let ok = true;
    for (let c = 0; c < cyclesPerDir && !stop && startedKills < kills; c += 1) {
      startedKills += 1;
      const plan = randomPlan(rand, pointRatio, POINTS[durability]);
      const cycleSeed = randInt(rand, 1, 2 ** 31 - 1);
      let report: CycleReport;
      try {
        report = await crashLane.cycle(plan, cycleSeed, a['index-fates'] === 'no' ? {} : { indexFates: rand });
      } catch (err) {
        ok = false;
        failures += 1;
        stop = true;
        failedDirs.push(dir);
        console.error(`\ntorture: VIOLATION (lane ${index}, ${durability}, data dir kept: ${dir})`);
        console.error(err instanceof CrashViolation ? err.message : (err as Error)?.stack ?? String(err));
        if (srcFingerprint() !== srcAtStart) console.error('torture: WARNING: src/ changed during this run; data written by the old code may not be readable by the new code, which can explain this violation');
        break;
      }
      done += 1;
      acks += report.acks;
      acksChecked += report.acksChecked;
      if (plan.kind === 'point') pointKills += 1;
      progress();
    }
    if (ok) rmSync(dir, { recursive: true, force: true });
  }
}

let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  stop = true;
  console.log('\ntorture: interrupted; finishing the running cycles (Ctrl-C again to quit now)');
});

await Promise.all(Array.from({ length: parallel }, (_, i) => lane(i)));
progress(true);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`torture summary: kills=${done} named-point-kills=${pointKills} acks=${acks} acked-events-checked=${acksChecked} failures=${failures} seconds=${seconds} seed=${seed}${failedDirs.length > 0 ? ` failing-data-dir=${failedDirs.join(',')}` : ''}`);
process.exit(failures > 0 || interrupted ? 1 : 0);
