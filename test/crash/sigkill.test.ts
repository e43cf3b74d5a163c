/**
 * SIGKILL crash tests against the real filesystem: a child process
 * (kill-child.ts) appends to 50 sessions under load — segments of 0.05 MiB
 * rotating constantly, a snapshot every 25 acks per session so released
 * segments get deleted — and is SIGKILLed, at a random moment or at a named
 * kill point. After each kill the parent opens the store and checks that every
 * acknowledged event is there, in order, with no gap and no duplicate
 * (kill-harness.ts lists the checks); then it restarts the child on the same
 * data directory, so the history grows across kills.
 *
 * 202 kills in all. Set ARBOR_CRASH_SEED to replay a run's plans (the timing of
 * the kills themselves is not reproducible). A failing case keeps its data
 * directory and names it in the error. For long runs: `npm run torture`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { KILL_POINTS, randInt, type KillPoint } from './crash-model.ts';
import { CrashLane, DEFAULT_CHILD_CONFIG, KILL_AT_MAX, randomPlan, runLane, type ChildConfig, type CycleReport, type KillPlan } from './crash-lane.ts';

const BASE_SEED = process.env.ARBOR_CRASH_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.ARBOR_CRASH_SEED);
const C = DEFAULT_CHILD_CONFIG;
const WORKLOAD = `${C.sessions} sessions × ${C.concurrency} in flight, ${C.segmentMb} MiB segments, snapshot every ${C.snapshotEvery} acks`;

const RANDOM_LANES = 3;
const RANDOM_KILLS_PER_LANE = 50;
const KILLS_PER_POINT = 5;
const WRITE_LANES = 2;
const WRITE_KILLS_PER_LANE = 11;

/**
 * Runs `lanes` data directories in parallel, `cycles` kills each. Removes the
 * directories when every cycle passed; keeps them (the error names the
 * failing one) otherwise.
 */
async function runLanes(t: TestContext, name: string, lanes: number, cycles: number, config: Partial<ChildConfig>, planFor: (rand: () => number, i: number) => KillPlan): Promise<CycleReport[]> {
  const seed = BASE_SEED ^ hash(name);
  t.diagnostic(`ARBOR_CRASH_SEED=${BASE_SEED} (lane seeds from ${seed})`);
  const dirs = Array.from({ length: lanes }, () => mkdtempSync(join(tmpdir(), 'arbor-sigkill-')));
  let failing = false;
  const results = await Promise.allSettled(
    dirs.map((dir, i) =>
      runLane(new CrashLane(dir, config), cycles, seed + i, planFor, { shouldStop: () => failing }).catch((err: unknown) => {
        failing = true;
        throw err;
      }),
    ),
  );
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  for (let i = 0; i < dirs.length; i += 1) if (results[i]!.status === 'fulfilled') rmSync(dirs[i]!, { recursive: true, force: true });
  if (failed.length > 0) throw failed[0]!.reason;
  const reports = results.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
  const sum = (f: (r: CycleReport) => number): number => reports.reduce((s, r) => s + f(r), 0);
  t.diagnostic(`${reports.length} kills, ${sum((r) => r.acks)} acks, ${sum((r) => r.acksChecked)} acked events checked against the journal, ${sum((r) => r.snapshots)} snapshots, ${sum((r) => r.deletedSegments)} segments deleted`);
  return reports;
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i += 1) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

describe(`SIGKILL crash recovery (real child processes; ${WORKLOAD})`, { timeout: 600_000 }, () => {
  test(`fsync: ${RANDOM_LANES * RANDOM_KILLS_PER_LANE} random-time SIGKILLs (${RANDOM_LANES} data dirs × ${RANDOM_KILLS_PER_LANE} restarts; 0–300 ms after ready, or 150–700 ms after spawn)`, async (t) => {
    const reports = await runLanes(t, 'fsync-random', RANDOM_LANES, RANDOM_KILLS_PER_LANE, { durability: 'fsync' }, (rand) => randomPlan(rand));
    assert.equal(reports.length, RANDOM_LANES * RANDOM_KILLS_PER_LANE);
    // The workload really ran under the kills: appends acknowledged, snapshots taken, segments deleted.
    const underLoad = reports.filter((r) => r.acks > 0).length;
    assert.ok(underLoad >= reports.length / 2, `only ${underLoad} of ${reports.length} kills hit a child that had acknowledged appends`);
    assert.ok(reports.some((r) => r.snapshots > 0), 'no snapshot completed in any cycle');
    assert.ok(reports.some((r) => r.deletedSegments > 0), 'no journal segment was deleted in any cycle');
    assert.ok(reports.reduce((s, r) => s + r.acksChecked, 0) > 0, 'no acknowledged event was checked against the journal');
  });

  describe(`fsync: named kill points, ${KILLS_PER_POINT} SIGKILLs each, restarted on one data dir`, { concurrency: 2 }, () => {
    for (const point of KILL_POINTS) {
      test(`fsync: SIGKILL at ${point} × ${KILLS_PER_POINT} (at its occurrence 1..${KILL_AT_MAX[point]})`, async (t) => {
        const reports = await runLanes(t, `fsync-${point}`, 1, KILLS_PER_POINT, { durability: 'fsync' }, (rand) => ({ kind: 'point', point, at: randInt(rand, 1, KILL_AT_MAX[point]) }));
        assert.equal(reports.length, KILLS_PER_POINT);
        for (const r of reports) assert.match(r.killLine ?? '', new RegExp(`^kill ${point} `));
      });
    }
  });

  const WRITE_POINTS: readonly KillPoint[] = ['mid-batch-write', 'mid-rotation'];
  test(`write: ${WRITE_LANES * WRITE_KILLS_PER_LANE} SIGKILLs (${WRITE_LANES} data dirs × ${WRITE_KILLS_PER_LANE}: random-time, plus ${WRITE_POINTS.join(' and ')} every third kill)`, async (t) => {
    const reports = await runLanes(t, 'write-mixed', WRITE_LANES, WRITE_KILLS_PER_LANE, { durability: 'write' }, (rand, i) => {
      if (i % 3 !== 2) return randomPlan(rand);
      const point = WRITE_POINTS[Math.floor(i / 3) % WRITE_POINTS.length]!;
      return { kind: 'point', point, at: randInt(rand, 1, KILL_AT_MAX[point]) };
    });
    assert.equal(reports.length, WRITE_LANES * WRITE_KILLS_PER_LANE);
    assert.ok(reports.some((r) => r.acks > 0), 'no append was acknowledged under write durability');
  });
});
