import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { envVarOf, OPTION_NAMES } from '../src/server.ts';
import { repoRoot } from './ops/run-cli.ts';
import { tempDir } from './helpers/tmp.ts';

// The README's commands, run as a user runs them. Every fenced block whose info
// string is `sh runnable` is run by bash, in order, in the repository (a clone:
// `npx arbor` runs the package's own command, from dist/), with the README's
// defaults moved out of the way so the test never meets another server or a
// user's data: ./data becomes a temporary directory (ARBOR_DATA_DIR, and
// `data/LOCK` in the text) and the port 4000 a free port (ARBOR_PORT, and
// `localhost:4000` in the text).

const README = readFileSync(join(repoRoot, 'README.md'), 'utf8');

function runnableBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const fence = /^```sh runnable\n([\s\S]*?)^```$/gm;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) blocks.push(m[1]!);
  return blocks;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

function bash(script: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // -e: a failing command fails the block; the block's background servers keep the pipes open, so wait for exit only.
    const child = spawn('bash', ['-e', '-c', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // A block waiting for a server that never came up (its `until curl` loop) is ended, and fails.
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** SIGTERM to the process the temporary data directory's LOCK names (the server a block left running), and waits for it to go. */
async function stopLockHolder(dataDir: string): Promise<void> {
  const lock = join(dataDir, 'LOCK');
  if (!existsSync(lock)) return;
  const { pid } = JSON.parse(readFileSync(lock, 'utf8')) as { pid: number };
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  for (let i = 0; i < 100; i += 1) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(pid, 'SIGKILL');
}

test('the README has a runnable tour, and its two commands are the install-and-serve and the CI command', () => {
  assert.ok(runnableBlocks(README).length >= 1);
  const first = /^```sh\n([\s\S]*?)^```$/m.exec(README)![1]!.split('\n').filter((l) => l.trim() !== '').map((l) => l.replace(/\s+#.*$/, '').trim());
  assert.deepEqual(first, ['npm install && npx arbor serve', 'npm ci && npm test']);
  // .ci/run runs exactly the README's test command
  const ci = readFileSync(join(repoRoot, '.ci', 'run'), 'utf8').trim().split('\n').at(-1);
  assert.equal(ci, first[1]);
});

test('the README configuration table lists every option with its environment variable', () => {
  for (const k of OPTION_NAMES) assert.ok(README.includes(`| \`${k}\` | \`${envVarOf(k)}\` |`), `${k} / ${envVarOf(k)} in the README's table`);
});

test('every runnable README block runs as written: serve, curl, kill -9, restart, the message is still there', { timeout: 180_000 }, async () => {
  assert.ok(existsSync(join(repoRoot, 'dist', 'cli', 'main.js')), '`npx arbor` runs the built CLI: run `npm run build` first (npm test does)');
  const { dir, cleanup } = tempDir('arbor-readme-');
  const port = await freePort();
  try {
    const dataDir = join(dir, 'data');
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARBOR_') && !k.startsWith('npm_')));
    const env = { ...clean, ARBOR_DATA_DIR: dataDir, ARBOR_PORT: String(port), ARBOR_LOG_LEVEL: 'warn', ARBOR_MOCK_CHUNK_DELAY_MS: '5' };
    const outputs: string[] = [];
    try {
      for (const block of runnableBlocks(README)) {
        const script = block.replaceAll('localhost:4000', `localhost:${port}`).replaceAll('"data/LOCK"', JSON.stringify(join(dataDir, 'LOCK')));
        const r = await bash(script, repoRoot, env);
        assert.equal(r.code, 0, `block failed:\n${script}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
        outputs.push(r.stdout);
      }
    } finally {
      await stopLockHolder(dataDir);
    }
    const tour = outputs[0]!;
    // the message was acknowledged (202 body) before the crash …
    assert.match(tour, /"messageId":"[^"]+","seq":\d+,"duplicate":false/);
    // … and after kill -9 and a restart the session still holds it
    const views = [...tour.matchAll(/\{"id":"tour","seq":\d+.*?"config":\{\}\}/g)];
    assert.equal(views.length, 2, `the 201 of the create and the view after the restart:\n${tour}`);
    assert.match(views[1]![0], /"role":"user","content":"hello"/);
    // the chat streamed an answer again
    assert.match(tour, /\nassistant> \S+/);
    assert.ok(existsSync(join(dataDir, 'journals')), 'the temporary data directory was used');
  } finally {
    cleanup();
  }
});
