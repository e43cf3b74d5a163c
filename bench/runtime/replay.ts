/**
 * bench/runtime (f): what replaying a session costs per event, for long
 * sessions against short ones holding the same number of events in total.
 * Replay that copies a session's history at every event is quadratic in the
 * session's length; the target is linear (long ≤ 1.5× short per event).
 *
 *   node --import tsx bench/runtime/replay.ts [--tiny] [--json] [--rounds N]
 *
 * Also section (f) of bench/runtime/run.ts. Each data set is written once
 * (agent turns: user message, stream started, a tool call started and
 * finished, answer completed) through `arbor.backend.append`, so no snapshot
 * and no checkpoint exists. Each round copies it to a fresh directory and
 * times `createArbor()` until `whenRecovered()` resolves (the open scan and
 * the background pass: every event replayed), wall and process CPU, long and
 * short data sets alternating (the order flips every round), after one
 * unmeasured warm-up recovery. Figures are medians of the rounds.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as arborModule from '../../src/index.ts';
import type { Store, SessionState } from '../../src/index.ts';
import { maybeGc, progress } from '../lib/phases.ts';
import { fmt, fmtInt, table, targetLines, type Target } from '../lib/report.ts';
import { median } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';

/** The Arbor entry the figures are taken through (an A/B run passes another build's). */
export type ArborModule = Pick<typeof arborModule, 'createArbor' | 'MockProvider'>;

export interface ReplayConfig {
  /** events per session of the long and the short data set (same total) */
  longEvents: number;
  shortEvents: number;
  totalEvents: number;
  rounds: number;
}

export function replayConfig(tiny: boolean, rounds?: number): ReplayConfig {
  return tiny ? { longEvents: 1_000, shortEvents: 100, totalEvents: 4_000, rounds: rounds ?? 1 } : { longEvents: 10_000, shortEvents: 100, totalEvents: 200_000, rounds: rounds ?? 3 };
}

export interface ReplayRun {
  /** from the createArbor() call until whenRecovered() resolved */
  wallMs: number;
  /** process CPU (user + system, every thread) over the same span */
  cpuMs: number;
  /** of which the store's open (the journal's index scan) */
  openMs: number;
  /** events the recovery report says were replayed (all of them, from no snapshot) */
  replayed: number;
}

export interface ReplayShape {
  sessions: number;
  eventsPerSession: number;
  runs: ReplayRun[];
  /** medians per event, µs */
  wallUsPerEvent: number;
  cpuUsPerEvent: number;
}

export interface ReplayResults {
  config: ReplayConfig;
  long: ReplayShape;
  short: ReplayShape;
  /** long / short, per event (medians) */
  cpuRatio: number;
  wallRatio: number;
  /** 1, 5, 15 min, when the figures were taken */
  loadAverage: number[];
  targets: Target[];
}

/** Event `r` (0-based) of a session: 5-event agent turns, so a session of a multiple of 5 ends between turns. */
function eventFor(sid: string, r: number): { type: string; data: Record<string, unknown> } {
  const turn = Math.floor(r / 5) + 1;
  const user = `${sid}-u${turn}`;
  const answer = `${sid}-a${turn}`;
  const call = `${sid}-t${turn}`;
  switch (r % 5) {
    case 0:
      return { type: 'user_message_sent', data: { messageId: user, content: `Please look at file ${turn} and summarise what it does, in a few lines.` } };
    case 1:
      return { type: 'assistant_stream_started', data: { messageId: answer, requestMessageId: user, provider: 'mock', model: 'mock-echo' } };
    case 2:
      return { type: 'tool_call_started', data: { messageId: answer, toolCallId: call, tool: 'read_file', input: { path: `src/file-${turn}.ts` }, before: [{ type: 'text', text: 'Reading it.' }] } };
    case 3:
      return { type: 'tool_call_finished', data: { messageId: answer, toolCallId: call, output: { bytes: 1000 + turn, lines: 40 } } };
    default:
      return { type: 'assistant_response_completed', data: { messageId: answer, requestMessageId: user, content: `Reading it.The file defines ${turn} functions and exports two of them.`, stats: { chunks: 8 } } };
  }
}

/** Writes `sessions` × `events` through the runtime's own store, rounds of one event per session (the log interleaves them). */
async function writeDataSet(arbor: ArborModule, dir: string, sessions: number, events: number): Promise<void> {
  const a = await arbor.createArbor({ dataDir: dir, snapshotEveryEvents: 1_000_000_000 });
  const store = a.backend as Store<SessionState>;
  const sid = (i: number): string => `p${String(i).padStart(5, '0')}`;
  let pending: Promise<unknown>[] = [];
  for (let r = 0; r < events; r += 1) {
    for (let i = 0; i < sessions; i += 1) {
      pending.push(store.append({ sid: sid(i), ...eventFor(sid(i), r) }));
      if (pending.length >= 5_000) {
        await Promise.all(pending);
        pending = [];
      }
    }
  }
  await Promise.all(pending);
  await a.close();
}

/** One recovery of a copy of `pristine`: createArbor → whenRecovered, timed; then checked and closed. */
async function recoverOnce(arbor: ArborModule, root: string, pristine: string, expectEvents: number): Promise<ReplayRun> {
  const dir = await mkdtemp(join(root, 'replay-run-'));
  await cp(pristine, dir, { recursive: true });
  maybeGc();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const a = await arbor.createArbor({ dataDir: dir, llm: new arbor.MockProvider(), snapshotEveryEvents: 1_000_000_000 });
  const report = await a.whenRecovered();
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const replayed = report.sessions.reduce((s, x) => s + x.replayed, 0);
  const fromSnapshot = report.sessions.filter((x) => x.snapshotSeq > 0 || x.checkpointSeq !== undefined).length;
  const notRecovered = report.sessions.filter((x) => x.status !== 'recovered').length;
  await a.close();
  await rm(dir, { recursive: true, force: true });
  if (replayed !== expectEvents || fromSnapshot > 0 || notRecovered > 0) {
    throw new Error(`replay bench: recovery replayed ${replayed} of ${expectEvents} events (${fromSnapshot} sessions from a snapshot or checkpoint, ${notRecovered} not recovered)`);
  }
  return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, openMs: report.durationMs, replayed };
}

function shape(sessions: number, eventsPerSession: number, runs: ReplayRun[]): ReplayShape {
  const events = sessions * eventsPerSession;
  return {
    sessions,
    eventsPerSession,
    runs,
    wallUsPerEvent: (median(runs.map((r) => r.wallMs)) * 1000) / events,
    cpuUsPerEvent: (median(runs.map((r) => r.cpuMs)) * 1000) / events,
  };
}

/**
 * The figure: both data sets written under `root`, then `rounds` recoveries
 * of each, alternating. `builds` (an A/B run) are measured in turn on the same
 * data sets, each round alternating them too; the first one writes the data.
 */
export async function replayFiguresOf(root: string, config: ReplayConfig, builds: ArborModule[]): Promise<ReplayResults[]> {
  const { longEvents, shortEvents, totalEvents } = config;
  const sets = [
    { name: 'long', sessions: Math.max(1, Math.round(totalEvents / longEvents)), events: longEvents },
    { name: 'short', sessions: Math.max(1, Math.round(totalEvents / shortEvents)), events: shortEvents },
  ];
  const dirs: string[] = [];
  for (const s of sets) {
    progress(`replay: writing ${fmtInt(s.sessions)} sessions × ${fmtInt(s.events)} events (agent turns), no snapshot`);
    const dir = await mkdtemp(join(root, `replay-${s.name}-`));
    await writeDataSet(builds[0]!, dir, s.sessions, s.events);
    dirs.push(dir);
  }
  // Warm-up, not measured: one recovery of the short data set per build (JIT, module caches).
  for (const build of builds) await recoverOnce(build, root, dirs[1]!, sets[1]!.sessions * sets[1]!.events);
  const runs = builds.map(() => sets.map((): ReplayRun[] => []));
  for (let round = 0; round < config.rounds; round += 1) {
    const order = round % 2 === 0 ? [0, 1] : [1, 0];
    for (const k of order) {
      for (const [b, build] of builds.entries()) {
        const s = sets[k]!;
        progress(`replay: round ${round + 1}/${config.rounds}, ${s.name} sessions${builds.length > 1 ? `, build ${b + 1}/${builds.length}` : ''}: createArbor → whenRecovered`);
        runs[b]![k]!.push(await recoverOnce(build, root, dirs[k]!, s.sessions * s.events));
      }
    }
  }
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  const load = loadavg();
  return runs.map(([longRuns, shortRuns]) => {
    const long = shape(sets[0]!.sessions, sets[0]!.events, longRuns!);
    const short = shape(sets[1]!.sessions, sets[1]!.events, shortRuns!);
    const cpuRatio = long.cpuUsPerEvent / short.cpuUsPerEvent;
    const wallRatio = long.wallUsPerEvent / short.wallUsPerEvent;
    const loadText = load.map((x) => fmt(x, 2)).join(' / ');
    const targets: Target[] = [
      {
        name: `replay: cost per event of ${fmtInt(long.eventsPerSession)}-event sessions ≤ 1.5× that of ${fmtInt(short.eventsPerSession)}-event sessions (linear; process CPU, same ${fmtInt(totalEvents)} events)`,
        status: Number.isFinite(cpuRatio) && cpuRatio <= 1.5 ? 'PASS' : 'MISS',
        actual: cpuRatio,
        target: 1.5,
        detail: `${fmt(cpuRatio, 2)}× (${fmt(long.cpuUsPerEvent, 2)} µs against ${fmt(short.cpuUsPerEvent, 2)} µs CPU per event; wall ${fmt(long.wallUsPerEvent, 2)} / ${fmt(short.wallUsPerEvent, 2)} µs = ${fmt(wallRatio, 2)}×); load average ${loadText}`,
      },
    ];
    return { config, long, short, cpuRatio, wallRatio, loadAverage: load, targets };
  });
}

/** Section (f) of bench/runtime: this build only. */
export async function replayFigures(root: string, config: ReplayConfig): Promise<ReplayResults> {
  return (await replayFiguresOf(root, config, [arborModule]))[0]!;
}

/** The lines of section (f). */
export function renderReplay(r: ReplayResults): string[] {
  const row = (name: string, s: ReplayShape): string[] => [
    name,
    fmtInt(s.sessions),
    fmtInt(s.eventsPerSession),
    fmtInt(median(s.runs.map((x) => x.wallMs))),
    fmtInt(median(s.runs.map((x) => x.cpuMs))),
    fmtInt(median(s.runs.map((x) => x.openMs))),
    fmt(s.wallUsPerEvent, 2),
    fmt(s.cpuUsPerEvent, 2),
    s.runs.map((x) => fmtInt(x.cpuMs)).join(', '),
  ];
  return [
    `(f) Replay cost per event, long sessions against short ones (${fmtInt(r.config.totalEvents)} events each, agent turns, no snapshot): createArbor → whenRecovered on a copy of the data, ${r.config.rounds} round(s) alternating, medians`,
    table(['data set', 'sessions', 'events each', 'wall ms', 'CPU ms', 'of which open ms', 'wall µs/event', 'CPU µs/event', 'CPU ms per round'], [row('long sessions', r.long), row('short sessions', r.short)]),
    `   long / short per event: CPU ${fmt(r.cpuRatio, 2)}×, wall ${fmt(r.wallRatio, 2)}× (1 = linear); load average ${r.loadAverage.map((x) => fmt(x, 2)).join(' / ')}`,
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { tiny: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, rounds: { type: 'string' } } });
  const rounds = values.rounds === undefined ? undefined : Number(values.rounds);
  if (rounds !== undefined && !(Number.isSafeInteger(rounds) && rounds > 0)) throw new RangeError(`--rounds must be a positive integer, got ${values.rounds}`);
  const config = replayConfig(values.tiny === true, rounds);
  const r = await withTempRoot('arbor-bench-replay-', (root) => replayFigures(root, config));
  process.stdout.write(values.json === true ? `${JSON.stringify(r, null, 2)}\n` : `${[...renderReplay(r), '', ...targetLines(r.targets)].join('\n')}\n`);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
