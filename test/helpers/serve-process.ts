import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** A real `arbor serve` child process on loopback. */
export interface ServeProcess {
  url: string;
  child: ChildProcess;
  /** Everything the child wrote to stderr so far (its logs). */
  stderr(): string;
  /** Sends `signal` and resolves with the exit code (or the signal that killed it). */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `arbor serve --port 0` from source (`node --import tsx src/cli/main.ts`)
 * and resolves once it printed its URL as the first stdout line. `env` is
 * added to the parent's environment, minus any ARBOR_* of the parent.
 */
export async function startServe(args: readonly string[], env: Record<string, string> = {}): Promise<ServeProcess> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARBOR_')));
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--host', '127.0.0.1', '--port', '0', ...args], {
    env: { ...clean, ARBOR_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const lines = createInterface({ input: child.stdout! });
  const first = await Promise.race([
    once(lines, 'line').then(([line]) => line as string),
    exited.then((e) => {
      throw new Error(`arbor serve exited (${JSON.stringify(e)}) before printing its URL; stderr:\n${err}`);
    }),
  ]);
  const match = /^arbor listening on (http:\/\/\S+)$/.exec(first);
  if (match === null) throw new Error(`unexpected first line of arbor serve: ${JSON.stringify(first)}`);
  return {
    url: match[1]!,
    child,
    stderr: () => err,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion and returns its exit code and output. */
export async function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARBOR_')));
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stdout, stderr };
}
