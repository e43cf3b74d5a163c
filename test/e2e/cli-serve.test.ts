import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, startServe } from '../helpers/serve-process.ts';
import { tempDir } from '../helpers/tmp.ts';

// `arbor serve` as a command: configuration errors, precedence of flags, the data directory's lock.

test('arbor --help lists serve and exits 0', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /serve/);
});

for (const [name, args, env, needle] of [
  ['an invalid env value', [], { ARBOR_JOURNAL_BATCH_SIZE: '0' }, 'option journalBatchSize = 0 (from env ARBOR_JOURNAL_BATCH_SIZE) is invalid: expected an integer ≥ 1'],
  ['an invalid boolean', [], { ARBOR_ENABLE_SNAPSHOTS: 'maybe' }, 'option enableSnapshots = "maybe" (from env ARBOR_ENABLE_SNAPSHOTS)'],
  ['an invalid --port', ['--port', '70000'], {}, '--port must be an integer from 0 to 65535, got "70000"'],
  ['an unknown command', ['serv'], {}, "unknown command 'serv'"],
] as const) {
  test(`arbor serve with ${name} exits 2 and names it`, async () => {
    const { dir, cleanup } = tempDir('arbor-cli-');
    try {
      const r = await runCli(args[0] === 'serv' ? [...args] : ['serve', '--data-dir', join(dir, 'data'), ...args], { ...env });
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.stderr.includes(needle), r.stderr);
      assert.equal(r.stdout, '', 'nothing printed as if it listened');
      assert.ok(!existsSync(join(dir, 'data')), 'nothing created');
    } finally {
      cleanup();
    }
  });
}

test('a config file: its invalid value stops start-up naming the file; flags win over env and file', async () => {
  const { dir, cleanup } = tempDir('arbor-cli-');
  try {
    const file = join(dir, 'arbor.json');
    writeFileSync(file, JSON.stringify({ snapshotIntervalMs: -5 }));
    const bad = await runCli(['serve', '--config', file, '--data-dir', join(dir, 'data')]);
    assert.equal(bad.code, 2);
    assert.ok(bad.stderr.includes(`option snapshotIntervalMs = -5 (from file ${file})`), bad.stderr);
    // given a valid file and environment naming other places and an unusable port
    writeFileSync(file, JSON.stringify({ dataDir: join(dir, 'from-file'), port: 1 }));
    const server = await startServe(['--config', file, '--data-dir', join(dir, 'from-flag')], { ARBOR_DATA_DIR: join(dir, 'from-env'), ARBOR_PORT: 'not-a-port' });
    try {
      // then the flags decide: a free port (0) and the flag's data directory
      assert.doesNotMatch(server.url, /:1$/);
      assert.equal((await fetch(`${server.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"id":"where"}' })).status, 201);
      assert.ok(existsSync(join(dir, 'from-flag', 'LOCK')));
      assert.ok(!existsSync(join(dir, 'from-env')) && !existsSync(join(dir, 'from-file')));
    } finally {
      await server.stop('SIGTERM');
    }
  } finally {
    cleanup();
  }
});

test('a second arbor serve on the same data directory exits 1 naming the lock; the first goes on', async () => {
  const { dir, cleanup } = tempDir('arbor-cli-');
  const first = await startServe(['--data-dir', join(dir, 'data')]);
  try {
    const second = await runCli(['serve', '--port', '0', '--data-dir', join(dir, 'data')]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /lock/i);
    assert.equal((await fetch(`${first.url}/health`)).status, 200);
  } finally {
    assert.deepEqual(await first.stop('SIGINT'), { code: 0, signal: null });
    cleanup();
  }
});
