import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runNode } from '../ops/run-cli.ts';
import { startServe } from '../helpers/serve-process.ts';
import { tempDir } from '../helpers/tmp.ts';

// `npm run demo` while `arbor serve` holds the same data directory: one clear message, no stack trace.

test('the demo on a data directory a running arbor serve holds exits 1 naming the server process (pid, host, start, command) and what to do', async () => {
  const { dir, cleanup } = tempDir('arbor-lock-');
  const dataDir = join(dir, 'data');
  const server = await startServe(['--data-dir', dataDir]);
  try {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARBOR_')));
    const demo = await runNode(['--import', 'tsx', 'examples/chat.ts'], { ...clean, ARBOR_DATA_DIR: dataDir });
    assert.equal(demo.code, 1, demo.stdout + demo.stderr);
    const pid = server.child.pid!;
    assert.match(demo.stderr, new RegExp(`locked by another process \\(pid ${pid} on \\S+, since \\d{4}-\\d\\d-\\d\\dT`));
    assert.match(demo.stderr, /running `[^`]*main\.ts serve --host 127\.0\.0\.1 --port 0 --data-dir /, 'the holder\'s command line');
    assert.match(demo.stderr, new RegExp(`kill ${pid}`));
    assert.match(demo.stderr, /--data-dir/);
    assert.doesNotMatch(demo.stderr, /\n\s+at /, 'no stack trace');
    assert.equal((await fetch(`${server.url}/health`)).status, 200, 'the server goes on');
  } finally {
    await server.stop('SIGTERM');
    cleanup();
  }
});
