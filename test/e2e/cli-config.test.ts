import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { envVarOf, OPTION_NAMES } from '../../src/server.ts';
import { runCli, startServe } from '../helpers/serve-process.ts';
import { tempDir } from '../helpers/tmp.ts';

// The configuration as a user meets it: serve's help, `arbor config print`, and warnings for misspelt variables.

test('arbor serve --help names the config key and environment variable of every option, and the flags people change', async () => {
  const r = await runCli(['serve', '--help']);
  assert.equal(r.code, 0, r.stderr);
  for (const k of OPTION_NAMES) assert.match(r.stdout, new RegExp(`\\n  ${k} +${envVarOf(k)}\\b`), `${k} / ${envVarOf(k)}`);
  for (const flag of ['--port', '--host', '--data-dir', '--durability', '--llm', '--llm-model', '--llm-base-url', '--tokens-file', '--config']) assert.ok(r.stdout.includes(`${flag} <`), flag);
});

test('arbor config print: each value with its source (default, file, env, flag), secrets masked; a misspelt ARBOR_ variable is a warning', async () => {
  const { dir, cleanup } = tempDir('arbor-cfg-');
  try {
    const file = join(dir, 'arbor.json');
    writeFileSync(file, JSON.stringify({ mailboxCapacity: 9 }));
    const env = { ARBOR_PORT: '4321', ARBOR_LLM_API_KEY: 'sk-very-secret', ARBOR_DATADIR: join(dir, 'typo') };
    const r = await runCli(['config', 'print', '--json', '--config', file, '--durability', 'write'], env);
    assert.equal(r.code, 0, r.stderr);
    const { options } = JSON.parse(r.stdout) as { options: Record<string, { value: unknown; source: string; env: string }> };
    assert.deepEqual(options.port, { value: 4321, source: 'env ARBOR_PORT', env: 'ARBOR_PORT' });
    assert.deepEqual(options.mailboxCapacity, { value: 9, source: `file ${file}`, env: 'ARBOR_MAILBOX_CAPACITY' });
    assert.equal(options.durability!.source, 'flag --durability');
    assert.equal(options.dataDir!.source, 'default');
    assert.equal(options.llmApiKey!.value, '<hidden>');
    assert.ok(!r.stdout.includes('sk-very-secret'));
    assert.match(r.stderr, /warning: environment variable ARBOR_DATADIR is not an Arbor setting.*did you mean ARBOR_DATA_DIR\?/);
    const table = await runCli(['config', 'print', '--port', '99'], env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /\nport +99 +flag --port\n/);
    assert.match(table.stdout, /\nllmApiKey +<hidden> +env ARBOR_LLM_API_KEY\n/);
  } finally {
    cleanup();
  }
});

test('arbor serve warns about a misspelt ARBOR_ variable naming the real one, and still starts', async () => {
  const { dir, cleanup } = tempDir('arbor-cfg-');
  const server = await startServe(['--data-dir', join(dir, 'data')], { ARBOR_MOCK_CHUNK: '3' });
  try {
    assert.match(server.stderr(), /ARBOR_MOCK_CHUNK is not an Arbor setting and is ignored; did you mean ARBOR_MOCK_CHUNKS\?/);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  } finally {
    await server.stop('SIGTERM');
    cleanup();
  }
});
