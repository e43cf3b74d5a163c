/**
 * The parent side of a SIGKILL crash test: spawns a child process, collects
 * what it acknowledged over a line protocol, kills it (at a random moment, or
 * lets it kill itself at a named kill point), and reports how it died. What
 * the application then checks on the data the child left is its own business.
 */
import { spawn } from 'node:child_process';
import { randInt, type KillPoint } from './kill-switch.ts';

/** How a crash child dies. */
export type KillPlan =
  /** the parent SIGKILLs it `delayMs` after spawning it, or after it printed `ready` */
  | { kind: 'random'; delayMs: number; from: 'spawn' | 'ready' }
  /** it SIGKILLs itself at the `at`-th occurrence of `point` (the harness passes `--kill-point` and `--kill-at`) */
  | { kind: 'point'; point: KillPoint; at: number };

/** A plan in words, for a failure message. */
export function describePlan(plan: KillPlan): string {
  return plan.kind === 'random' ? `SIGKILL ${plan.delayMs} ms after ${plan.from}` : `SIGKILL at ${plan.point} #${plan.at}`;
}

/**
 * A random plan: with probability `pointRatio` a kill point from `points`, at
 * an occurrence in 1..`killAtMax[point]` (how often the child's workload
 * reaches it quickly); otherwise a kill at a random moment, mostly under load
 * after `ready` and sometimes right from spawn, which can land in recovery.
 */
export function randomPlan(rand: () => number, pointRatio = 0, points: readonly KillPoint[] = [], killAtMax: Partial<Record<KillPoint, number>> = {}): KillPlan {
  if (points.length > 0 && rand() < pointRatio) {
    const point = points[randInt(rand, 0, points.length - 1)]!;
    return { kind: 'point', point, at: randInt(rand, 1, killAtMax[point] ?? 1) };
  }
  return rand() < 0.15 ? { kind: 'random', delayMs: randInt(rand, 150, 700), from: 'spawn' } : { kind: 'random', delayMs: randInt(rand, 0, 300), from: 'ready' };
}

/** An `ack <sid> <seq> [fields…]` line: the child's append for `sid` resolved with `seq`. */
export interface KillChildAck {
  sid: string;
  seq: number;
  /** what followed the seq on the line */
  fields: string[];
}

/** What one crash child did before it died. */
export interface KillChildRun {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** `ack` lines in the order printed */
  acks: KillChildAck[];
  /** whether it printed `ready <pid>` (its store was open) */
  ready: boolean;
  readyPid: number | undefined;
  /** the `kill <point> <variant> <occurrence>` line it printed before killing itself */
  killLine: string | undefined;
  /** `violation <text>` lines: broken promises the child saw itself */
  violations: string[];
  /** whether it printed `done`: it ran out its time without being killed */
  done: boolean;
  /** the first 20,000 characters of its stderr */
  stderr: string;
  /** lines of no known kind that `onLine` did not take */
  unknownLines: string[];
  /** whether the parent killed it because `timeoutMs` passed */
  timedOut: boolean;
}

/** Options of `runKillChild`. */
export interface RunKillChildOptions {
  /** arguments to `node` (this process's binary): loaders, the child script and its options */
  argv: readonly string[];
  plan: KillPlan;
  /** kill the child and report `timedOut` after this long (default 30 s) */
  timeoutMs?: number;
  /** sees every line the harness does not know; returns true when it took it */
  onLine?: (line: string) => boolean;
}

/**
 * Runs one crash child to its death under `plan` and returns what it printed.
 *
 * The child speaks in whole lines on stdout (write each with `writeLineSync`,
 * so a kill never leaves half an ack): `ready <pid>`, `ack <sid> <seq> …`
 * (never before the append resolved), `kill <point> <variant> <n>`,
 * `violation <text>`, `done`. Resolves once the child exited and its stdout
 * is drained, so every line it wrote has been seen; never rejects for how the
 * child died (see `killChildProblems`), only when it cannot be spawned.
 */
export function runKillChild(options: RunKillChildOptions): Promise<KillChildRun> {
  const { plan, onLine } = options;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const argv = [...options.argv];
  if (plan.kind === 'point') argv.push('--kill-point', plan.point, '--kill-at', String(plan.at));
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const run: KillChildRun = {
    pid: child.pid,
    code: null,
    signal: null,
    acks: [],
    ready: false,
    readyPid: undefined,
    killLine: undefined,
    violations: [],
    done: false,
    stderr: '',
    unknownLines: [],
    timedOut: false,
  };
  let killTimer: NodeJS.Timeout | undefined;
  const killChild = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  if (plan.kind === 'random' && plan.from === 'spawn') killTimer = setTimeout(killChild, plan.delayMs);
  const timeout = setTimeout(() => {
    run.timedOut = true;
    killChild();
  }, timeoutMs);

  const onText = (text: string): void => {
    const parts = text.split(' ');
    switch (parts[0]) {
      case 'ack':
        run.acks.push({ sid: parts[1] ?? '', seq: Number(parts[2]), fields: parts.slice(3) });
        return;
      case 'ready':
        run.ready = true;
        run.readyPid = Number(parts[1]);
        if (plan.kind === 'random' && plan.from === 'ready') killTimer = setTimeout(killChild, plan.delayMs);
        return;
      case 'kill':
        run.killLine = text;
        return;
      case 'violation':
        run.violations.push(text.slice('violation '.length));
        return;
      case 'done':
        run.done = true;
        return;
      default:
        if (onLine?.(text) !== true) run.unknownLines.push(text);
    }
  };
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    // A trailing partial line was cut by the kill: its ack is not counted (that only weakens the check).
    partial = lines.pop()!;
    for (const l of lines) if (l.length > 0) onText(l);
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (run.stderr.length < 20_000) run.stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    // 'close': the process exited and its stdout is drained.
    child.on('close', (code, signal) => {
      clearTimeout(killTimer);
      clearTimeout(timeout);
      run.code = code;
      run.signal = signal;
      resolve(run);
    });
  });
}

/**
 * What went wrong with a run as a run, whatever the data says: the child did
 * not die of SIGKILL (or timed out, or ran out its time), did not announce the
 * planned kill point, named another pid, reported violations or printed lines
 * of no known kind. Empty when the run went as planned.
 */
export function killChildProblems(run: KillChildRun, plan: KillPlan): string[] {
  const problems: string[] = [];
  if (run.timedOut) problems.push(`the child did not die within the timeout${plan.kind === 'point' ? ` (kill point ${plan.point} #${plan.at} never reached)` : ''}`);
  else if (run.signal !== 'SIGKILL') problems.push(`the child exited with code ${run.code} signal ${run.signal}, not by SIGKILL${run.stderr ? `; stderr: ${run.stderr.trim().slice(0, 2000)}` : ''}`);
  if (run.done) problems.push('the child ran out its time without being killed');
  if (plan.kind === 'point' && !run.timedOut && (run.killLine === undefined || run.killLine.split(' ')[1] !== plan.point)) {
    problems.push(`expected the child to announce kill point ${plan.point}, got ${JSON.stringify(run.killLine)}`);
  }
  if (run.ready && run.readyPid !== run.pid) problems.push(`ready line names pid ${run.readyPid}, the child is ${run.pid}`);
  for (const v of run.violations) problems.push(`child: ${v}`);
  for (const l of run.unknownLines.slice(0, 5)) problems.push(`child printed an unexpected line: ${JSON.stringify(l.slice(0, 200))}`);
  return problems;
}

/** A broken guarantee (or a cycle that could not run as planned), naming the data directory to inspect. */
export class CrashViolation extends Error {
  readonly dataDir: string;
  readonly problems: string[];
  constructor(dataDir: string, context: string, problems: string[]) {
    const shown = problems.slice(0, 20);
    super(`${context}: ${problems.length} problem(s) in data dir ${dataDir}\n  - ${shown.join('\n  - ')}${problems.length > shown.length ? `\n  … and ${problems.length - shown.length} more` : ''}`);
    this.name = 'CrashViolation';
    this.dataDir = dataDir;
    this.problems = problems;
  }
}
