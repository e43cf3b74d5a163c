/**
 * Arbor's own SIGKILL crash scenario, on the kill harness of
 * `arbor-runtime/testing`: runs kill-child.ts on a data directory, collects
 * what it acknowledged, SIGKILLs it (at a random moment, or lets it kill
 * itself at a named kill point), then opens the store in this process and checks that recovery holds every acknowledged event, in order,
 * with no gap and no duplicate. A `CrashLane` owns one data directory and
 * repeats that cycle on it, so the history grows across kills.
 *
 * Checks after each kill (any failure is a violation naming the data directory):
 * - the child died of SIGKILL (and, for a named point, announced that point);
 * - while running, acks per session came in seq order, continuing from the seq
 *   the previous verification recovered, with n === seq;
 * - the recovery report shows no journal damage and no damaged/salvaged/failed
 *   session; the child's stale lock was taken over;
 * - every session that ever had an ack was recovered, with seq ≥ its highest
 *   acked seq (no acknowledged event lost);
 * - the recovered state (snapshot + replay) is consistent with seqs 1..seq each
 *   applied once with n === seq (see `checkCrashState`);
 * - the journal still holds exactly seqs snapshotSeq+1..seq for the session,
 *   contiguous, and each record's n equals the acked n for that seq.
 */
import { fileURLToPath } from 'node:url';
import { openStore } from '../../src/file/store.ts';
import { existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CrashViolation,
  describePlan,
  killChildProblems,
  mulberry32 as prng,
  randInt,
  randomPlan as randomPlanOf,
  runKillChild,
  type KillChildRun,
  type KillPlan,
  type KillPoint,
} from '../../src/testing.ts';
import { EVENT_TYPE, TEXT_MAX, TEXT_MIN, checkCrashState, crashHooks, type CrashEventData, type CrashState } from './crash-model.ts';

export { CrashViolation, describePlan, type KillPlan } from '../../src/testing.ts';

/** A child's run, with the snapshots (`snap <sid> <seq> <deleted segments>` lines) it reported. */
interface ChildRun extends KillChildRun {
  snapshots: number;
  deletedSegments: number;
}

export const CHILD_PATH = fileURLToPath(new URL('./kill-child.ts', import.meta.url));

/** What a cycle did to the journal index before the child ran (see CrashLane.applyIndexFate). */
export type IndexFate = 'keep' | 'removed' | 'corrupt' | 'truncated' | 'stale' | 'foreign';

export interface ChildConfig {
  durability: 'fsync' | 'write';
  sessions: number;
  /** appends in flight per session */
  concurrency: number;
  /** journalMaxSizeMb */
  segmentMb: number;
  snapshotEvery: number;
  /** pause of 0..thinkMs between one worker's appends */
  thinkMs: number;
}

export const DEFAULT_CHILD_CONFIG: Readonly<ChildConfig> = Object.freeze({
  durability: 'fsync',
  sessions: 50,
  concurrency: 2,
  segmentMb: 0.05,
  snapshotEvery: 25,
  thinkMs: 20,
});

/** How many occurrences of each kill point a child reaches quickly (at N in 1..max it dies within about a second). */
export const KILL_AT_MAX: Record<KillPoint, number> = {
  'mid-batch-write': 300,
  'after-write-before-sync': 300,
  'after-sync-before-ack': 300,
  'mid-snapshot': 60,
  'mid-deletion': 12,
  'mid-rotation': 12,
};

/** A random plan for this workload: a named kill point with probability `pointRatio` (from `points`), else a random-time kill. */
export function randomPlan(rand: () => number, pointRatio = 0, points: readonly KillPoint[] = []): KillPlan {
  return randomPlanOf(rand, pointRatio, points, KILL_AT_MAX);
}

export interface CycleReport {
  plan: KillPlan;
  seed: number;
  /** acks received from this child */
  acks: number;
  /** acknowledged events whose content was checked against the journal this cycle */
  acksChecked: number;
  /** sessions whose recovered seq was checked against their highest acked seq (the "nothing lost" check) */
  sessionsChecked: number;
  snapshots: number;
  deletedSegments: number;
  /** whether the child printed `ready` (the store opened) before it died */
  ready: boolean;
  /** what the child announced before killing itself at a named point */
  killLine: string | undefined;
  recoveredEvents: number;
  durationMs: number;
}

/** One data directory, killed and recovered over and over. */
export class CrashLane {
  readonly dataDir: string;
  readonly config: ChildConfig;
  /** sid → seq → acked n, for seqs the journal may still hold (pruned below each session's snapshot) */
  readonly acks = new Map<string, Map<number, number>>();
  /** sid → highest seq ever acknowledged */
  readonly maxAcked = new Map<string, number>();
  /** sid → seq recovered by the last verification */
  readonly verifiedSeq = new Map<string, number>();
  cycles = 0;
  /** An index this lane saved some cycles ago: a stale one, when put back. */
  #savedIndex: Buffer | undefined;

  /**
   * Negative controls for the journal index: before a cycle, what becomes of
   * `checkpoint/journal.idx` (left as the last verification wrote it, removed,
   * a byte flipped, cut short, an older copy put back, or one of another data
   * directory). Whatever it is, recovery must check out exactly as without it.
   */
  static foreignIndex: Buffer | undefined;

  applyIndexFate(rand: () => number): IndexFate {
    const file = join(this.dataDir, 'checkpoint', 'journal.idx');
    if (!existsSync(file)) return 'keep';
    const bytes = readFileSync(file);
    if (this.#savedIndex === undefined || rand() < 0.1) this.#savedIndex = bytes;
    CrashLane.foreignIndex ??= bytes;
    const r = rand();
    if (r < 0.5) return 'keep';
    if (r < 0.6) {
      rmSync(file);
      return 'removed';
    }
    if (r < 0.7) {
      const at = Math.floor(rand() * bytes.length);
      bytes[at] = bytes[at]! ^ (1 + Math.floor(rand() * 255));
      writeFileSync(file, bytes);
      return 'corrupt';
    }
    if (r < 0.8) {
      truncateSync(file, Math.floor(rand() * bytes.length));
      return 'truncated';
    }
    if (r < 0.9) {
      writeFileSync(file, this.#savedIndex);
      return 'stale';
    }
    if (CrashLane.foreignIndex.equals(bytes)) return 'keep';
    writeFileSync(file, CrashLane.foreignIndex);
    return 'foreign';
  }

  constructor(dataDir: string, config: Partial<ChildConfig> = {}) {
    this.dataDir = dataDir;
    this.config = { ...DEFAULT_CHILD_CONFIG, ...config };
  }

  /** Runs one child to its death under `plan`, then verifies recovery. Throws CrashViolation on any broken guarantee. */
  async cycle(plan: KillPlan, seed: number, options: { timeoutMs?: number; indexFates?: () => number } = {}): Promise<CycleReport> {
    const started = performance.now();
    this.cycles += 1;
    const fate = options.indexFates === undefined ? 'keep' : this.applyIndexFate(options.indexFates);
    const context = `cycle ${this.cycles} (${describePlan(plan)}, ${this.config.durability}, seed ${seed}, index ${fate})`;
    const run = await this.#runChild(plan, seed, options.timeoutMs ?? 30_000);
    const problems: string[] = [];
    problems.push(...killChildProblems(run, plan));
    problems.push(...this.#recordAcks(run.acks));
    // Verify even when the run was off, so the report says what recovery found too.
    const verified = await this.#verify(run).catch((err: unknown) => {
      problems.push(`verification threw: ${(err as Error)?.stack ?? String(err)}`);
      return undefined;
    });
    if (verified !== undefined) problems.push(...verified.problems);
    if (problems.length > 0) throw new CrashViolation(this.dataDir, context, problems);
    return {
      plan,
      seed,
      acks: run.acks.length,
      acksChecked: verified!.acksChecked,
      sessionsChecked: verified!.sessionsChecked,
      snapshots: run.snapshots,
      deletedSegments: run.deletedSegments,
      ready: run.ready,
      killLine: run.killLine,
      recoveredEvents: verified!.recoveredEvents,
      durationMs: performance.now() - started,
    };
  }

  async #runChild(plan: KillPlan, seed: number, timeoutMs: number): Promise<ChildRun> {
    const c = this.config;
    const argv = [
      '--import',
      'tsx',
      CHILD_PATH,
      '--data-dir',
      this.dataDir,
      '--durability',
      c.durability,
      '--sessions',
      String(c.sessions),
      '--concurrency',
      String(c.concurrency),
      '--segment-mb',
      String(c.segmentMb),
      '--snapshot-every',
      String(c.snapshotEvery),
      '--think-ms',
      String(c.thinkMs),
      '--seed',
      String(seed),
      '--max-ms',
      String(timeoutMs + 5000),
    ];
    let snapshots = 0;
    let deletedSegments = 0;
    const onLine = (text: string): boolean => {
      const parts = text.split(' ');
      if (parts[0] !== 'snap') return false;
      snapshots += 1;
      deletedSegments += Number(parts[3]);
      return true;
    };
    const run = await runKillChild({ argv, plan, timeoutMs, onLine });
    return { ...run, snapshots, deletedSegments };
  }

  /** Checks the acks of one run against the lane's knowledge and records them. */
  #recordAcks(acks: ChildRun['acks']): string[] {
    const problems: string[] = [];
    const lastInRun = new Map<string, number>();
    for (const { sid, seq, fields } of acks) {
      const n = Number(fields[0]);
      if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(n)) {
        problems.push(`malformed ack ${sid} ${seq} ${n}`);
        continue;
      }
      const expected = (lastInRun.get(sid) ?? this.verifiedSeq.get(sid) ?? 0) + 1;
      if (seq !== expected) problems.push(`session ${sid}: ack of seq ${seq} where ${expected} was next (acks out of order, or the child did not continue from the recovered seq)`);
      if (n !== seq) problems.push(`session ${sid}: seq ${seq} acked with n ${n}`);
      lastInRun.set(sid, Math.max(seq, lastInRun.get(sid) ?? 0));
      let m = this.acks.get(sid);
      if (m === undefined) {
        m = new Map();
        this.acks.set(sid, m);
      }
      const before = m.get(seq);
      if (before !== undefined && before !== n) problems.push(`session ${sid}: seq ${seq} acked twice, with n ${before} and ${n}`);
      m.set(seq, n);
      if (seq > (this.maxAcked.get(sid) ?? 0)) this.maxAcked.set(sid, seq);
    }
    return problems;
  }

  /** Opens the store here (taking over the child's stale lock) and checks it against everything acknowledged. */
  async #verify(run: ChildRun): Promise<{ problems: string[]; acksChecked: number; sessionsChecked: number; recoveredEvents: number }> {
    const problems: string[] = [];
    let acksChecked = 0;
    let recoveredEvents = 0;
    const store = await openStore<CrashState>({ dataDir: this.dataDir, durability: this.config.durability, journalMaxSizeMb: this.config.segmentMb }, crashHooks);
    try {
      const report = store.recoveryReport();
      // A SIGKILL never takes synced records: a loss against the high-water mark would be a false alarm (or a real loss).
      if (report.loss !== undefined) problems.push(`open reported a loss of ${report.loss.events} events (LSNs ${report.loss.lostLsns.join('..')}) against the ${report.loss.source}'s high-water mark`);
      for (const d of report.journal.damage) problems.push(`journal damage in ${d.segment} at ${d.offset} (+${d.length}): ${d.reason}`);
      for (const status of ['damaged', 'salvaged', 'failed'] as const) {
        if (report.counts[status] > 0) problems.push(`${report.counts[status]} session(s) recovered as ${status}`);
      }
      // The child held the lock once it printed ready; SIGKILL left it behind, and opening must have taken it over.
      const stale = report.staleLock;
      if (run.ready && (stale === undefined || stale === 'unreadable' || stale.pid !== run.pid)) {
        problems.push(`expected the dead child's lock (pid ${run.pid}) to be taken over as stale, got ${JSON.stringify(stale)}`);
      }
      if (!run.ready && stale !== undefined && stale !== 'unreadable' && stale.pid !== run.pid) {
        problems.push(`a stale lock of pid ${stale.pid} that is not the child's (${run.pid})`);
      }
      const bySid = new Map(report.sessions.map((s) => [s.sid, s]));
      const sids = new Set([...this.maxAcked.keys(), ...store.recovered.keys()]);
      for (const sid of sids) {
        const rec = store.recovered.get(sid);
        const maxAcked = this.maxAcked.get(sid) ?? 0;
        if (rec === undefined) {
          problems.push(`session ${sid} acked up to seq ${maxAcked} but was not recovered at all`);
          continue;
        }
        const seq = rec.seq;
        recoveredEvents += seq;
        if (rec.status !== 'recovered' && rec.status !== 'tail-truncated') problems.push(`session ${sid} recovered as ${rec.status}`);
        if (seq < maxAcked) problems.push(`session ${sid}: recovered seq ${seq} < highest acked seq ${maxAcked} (acknowledged events ${seq + 1}..${maxAcked} lost)`);
        if (store.journal.lastSeq(sid) !== seq) problems.push(`session ${sid}: journal's last seq ${store.journal.lastSeq(sid)} !== recovered seq ${seq}`);
        for (const p of checkCrashState(rec.state, seq)) problems.push(`session ${sid}: ${p}`);
        const snapshotSeq = bySid.get(sid)?.snapshotSeq ?? 0;
        const records = await store.read(sid, 1);
        // The journal holds exactly what the newest snapshot does not: snapshotSeq+1 .. seq.
        const expectedCount = Math.max(0, seq - snapshotSeq);
        if (records.length !== expectedCount || (records.length > 0 && (records[0]!.seq !== snapshotSeq + 1 || records.at(-1)!.seq !== seq))) {
          problems.push(`session ${sid}: journal holds ${records.length} records (seqs ${records[0]?.seq}..${records.at(-1)?.seq}), expected seqs ${snapshotSeq + 1}..${seq}`);
        }
        const acked = this.acks.get(sid);
        for (let i = 0; i < records.length; i += 1) {
          const r = records[i]!;
          const data = r.data as Partial<CrashEventData>;
          if (i > 0 && r.seq !== records[i - 1]!.seq + 1) problems.push(`session ${sid}: journal seq ${r.seq} follows ${records[i - 1]!.seq} (gap, duplicate or reorder)`);
          if (r.sid !== sid || r.type !== EVENT_TYPE) problems.push(`session ${sid}: record seq ${r.seq} has sid ${r.sid} type ${r.type}`);
          if (data?.n !== r.seq) problems.push(`session ${sid}: record seq ${r.seq} has n ${data?.n}`);
          if (typeof data?.text !== 'string' || data.text.length < TEXT_MIN || data.text.length > TEXT_MAX) problems.push(`session ${sid}: record seq ${r.seq} has a malformed text`);
          const ackedN = acked?.get(r.seq);
          if (ackedN !== undefined) {
            acksChecked += 1;
            if (ackedN !== data?.n) problems.push(`session ${sid}: seq ${r.seq} was acked with n ${ackedN}, the journal holds n ${data?.n}`);
          }
        }
        // Seqs a snapshot released can no longer be read back; the state check above covers them.
        if (acked !== undefined) for (const s of acked.keys()) if (s <= snapshotSeq) acked.delete(s);
        this.verifiedSeq.set(sid, seq);
      }
      return { problems, acksChecked, sessionsChecked: sids.size, recoveredEvents };
    } finally {
      await store.close();
    }
  }
}

/**
 * Runs `cycles` kill/recover cycles on one lane, plans from `planFor`. Stops at
 * the first violation (rethrown), or early when `shouldStop()` turns true.
 */
export async function runLane(
  lane: CrashLane,
  cycles: number,
  seed: number,
  planFor: (rand: () => number, i: number) => KillPlan,
  options: { onCycle?: (r: CycleReport) => void; shouldStop?: () => boolean } = {},
): Promise<CycleReport[]> {
  const { onCycle, shouldStop } = options;
  const rand = prng(seed);
  const reports: CycleReport[] = [];
  for (let i = 0; i < cycles && shouldStop?.() !== true; i += 1) {
    const plan = planFor(rand, i);
    const report = await lane.cycle(plan, randInt(rand, 1, 2 ** 31 - 1));
    reports.push(report);
    onCycle?.(report);
  }
  return reports;
}
