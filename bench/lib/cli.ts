/**
 * Command line shared by the benchmarks: the common flags (--tiny, --peers,
 * --json, --seconds, -h), the usage-error exit, and the top-level error exit.
 */
import { parseArgs } from 'node:util';

/** The settings every benchmark reads from its command line (its own Config extends these). */
export interface BaseConfig {
  tiny: boolean;
  peers: boolean;
  json: boolean;
  /** measured seconds of each time-bounded measurement */
  seconds: number;
  /** warm-up seconds before the first slice of each measurement */
  warmupSeconds: number;
  /** slices each measurement is cut into, alternating with its baseline's */
  rounds: number;
  /** warm-up seconds before each later slice */
  rewarmSeconds: number;
}

/** The usage text of a benchmark: only the script, the --peers line and the --seconds line differ. */
export function benchUsage(script: string, peersHelp: string, secondsHelp: string): string {
  return `usage: node --import tsx ${script} [--tiny] [--peers] [--json] [--seconds S]

  --tiny        a configuration that finishes in a few seconds (CI smoke run)
  --peers       ${peersHelp}
  --json        print one JSON object on stdout instead of the table
  --seconds S   ${secondsHelp}
`;
}

/** Parses the common flags; prints `usage` and exits 0 on -h/--help; throws on anything invalid. */
export function parseBenchArgs(argv: string[], usage: string): BaseConfig {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      tiny: { type: 'boolean', default: false },
      peers: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      seconds: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  const tiny = values.tiny === true;
  let seconds = tiny ? 0.5 : 5;
  if (values.seconds !== undefined) {
    seconds = Number(values.seconds);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 600) throw new RangeError(`--seconds must be a number of seconds in (0, 600], got ${JSON.stringify(values.seconds)}`);
  }
  return {
    tiny,
    peers: values.peers === true,
    json: values.json === true,
    seconds,
    warmupSeconds: Math.min(1, seconds / 5),
    rounds: tiny ? 1 : 5,
    rewarmSeconds: Math.min(0.2, seconds / 25),
  };
}

/** Runs `parse` on this process's arguments; on a usage error prints it with `usage`, sets exit code 2 and returns undefined. */
export function readConfig<C>(parse: (argv: string[]) => C, usage: string): C | undefined {
  try {
    return parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage}`);
    process.exitCode = 2;
    return undefined;
  }
}

/** Prefix of the error a benchmark throws when --peers is given but the peer packages are not installed. */
const PEERS_MISSING = '--peers needs the peer packages: run `npm install --prefix bench` first';

/** The error for missing peer packages; `runMain` prints it without a stack. */
export function peersMissingError(detail: string): Error {
  return new Error(`${PEERS_MISSING} (${detail})`);
}

/** Whether `err` is {@link peersMissingError}'s: the peer packages are not installed. */
export function isPeersMissing(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith(PEERS_MISSING);
}

/** Runs a benchmark's `main`: a failure is printed to stderr and sets exit code 1. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    const peersMissing = isPeersMissing(err);
    process.stderr.write(`bench failed: ${err instanceof Error ? (peersMissing ? err.message : (err.stack ?? err.message)) : String(err)}\n`);
    process.exitCode = 1;
  });
}
