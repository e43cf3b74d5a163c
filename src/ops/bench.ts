import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArborError, ErrorCodes } from '../core/errors.ts';

export const BENCHMARKS = ['journal', 'runtime'] as const;
export type BenchmarkName = (typeof BENCHMARKS)[number];

export interface BenchOptions {
  /** which benchmarks, in order */
  which: BenchmarkName[];
  tiny?: boolean;
  json?: boolean;
  peers?: boolean;
  seconds?: number;
  /** the source checkout holding bench/ (default: the one this module lives in) */
  root?: string;
  /** receives the benchmarks' stdout as it comes (the CLI prints tables live) */
  onOutput?: (chunk: string) => void;
  /** where hints go (default: this process's stderr); the benchmarks' own progress lines go to this process's stderr */
  log?: (line: string) => void;
}

export interface BenchRun {
  name: BenchmarkName;
  exitCode: number;
  /** stdout of the benchmark: its table, or its JSON document with `json` */
  stdout: string;
}

export interface BenchResult {
  runs: BenchRun[];
  /** `--peers` was asked for but bench/node_modules is missing: the peers were skipped */
  peersSkipped: boolean;
}

/** Where bench/ is looked for: `ARBOR_BENCH_ROOT`, else the source checkout this module lives in. */
export function sourceRoot(): string {
  return process.env.ARBOR_BENCH_ROOT ?? fileURLToPath(new URL('../..', import.meta.url));
}

/** The hint printed when the peer baselines are not installed. */
export const PEERS_HINT = 'the peer baselines (SQLite, LangGraph) are not installed: run `npm install --prefix bench` to add them';

/**
 * Runs the project's benchmarks (bench/journal/run.ts, bench/runtime/run.ts)
 * as child processes through tsx, passing --tiny, --json, --peers and
 * --seconds through. Their progress lines go to stderr; their stdout is
 * collected. Without bench/node_modules, --peers is dropped with a hint
 * (the benchmarks then report the peers as skipped).
 */
export async function runBenchmarks(options: BenchOptions): Promise<BenchResult> {
  const root = options.root ?? sourceRoot();
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  for (const name of options.which) {
    if (!existsSync(join(root, 'bench', name, 'run.ts'))) {
      throw new ArborError(ErrorCodes.OPS_FAILED, `benchmark bench/${name}/run.ts not found under ${root}: the benchmarks ship with Arbor's source checkout, not with the installed package`, { benchmark: name });
    }
  }
  const peersInstalled = existsSync(join(root, 'bench', 'node_modules'));
  let peers = options.peers === true;
  let peersSkipped = false;
  if (peers && !peersInstalled) {
    log(`arbor bench: --peers: ${PEERS_HINT}; running without them`);
    peers = false;
    peersSkipped = true;
  }
  const args: string[] = [];
  if (options.tiny === true) args.push('--tiny');
  if (options.json === true) args.push('--json');
  if (peers) args.push('--peers');
  if (options.seconds !== undefined) args.push('--seconds', String(options.seconds));
  const runs: BenchRun[] = [];
  for (const name of options.which) {
    const script = join('bench', name, 'run.ts');
    const { exitCode, stdout } = await new Promise<{ exitCode: number; stdout: string }>((resolve, reject) => {
      // tsx resolved from here, so a bench root outside this checkout works too.
      const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        options.onOutput?.(d);
      });
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ exitCode: code ?? (signal === null ? 1 : 128), stdout: out }));
    });
    runs.push({ name, exitCode, stdout });
    if (exitCode !== 0) break;
  }
  return { runs, peersSkipped };
}
