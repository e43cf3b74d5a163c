import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ARBOR_OPTION_NAMES, createArbor, ErrorCodes, isArborError, MockProvider } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';

// createArbor refuses a mistyped option or a provider without stream() before it opens anything.

test('an unknown createArbor option is ARBOR_INVALID_OPTION naming it, the closest known one, and every option (runtime ones too)', async () => {
  const { dir, cleanup } = tempDir('arbor-opts-');
  try {
    const dataDir = join(dir, 'data');
    await assert.rejects(createArbor({ dataDir, sessionIdleTimeout: 5 } as never), (err) => {
      assert.ok(isArborError(err, ErrorCodes.INVALID_OPTION), String(err));
      assert.equal(err.details.option, 'sessionIdleTimeout');
      assert.equal(err.details.suggestion, 'sessionIdleTimeoutMs');
      for (const name of ['llm', 'commands', 'sessionIdleTimeoutMs', 'recoveryTimeoutMs', 'postgres', 'dataDir', 'durability', 'dedupeWindow']) {
        assert.ok(err.message.includes(name), `${name} is listed: ${err.message}`);
      }
      return true;
    });
    assert.ok(!existsSync(dataDir), 'nothing was opened');
    assert.ok(ARBOR_OPTION_NAMES.includes('llm') && ARBOR_OPTION_NAMES.includes('journalBatchSize'));
  } finally {
    cleanup();
  }
});

test('an llm without stream() is refused at createArbor with ARBOR_INVALID_OPTION naming llm; a provider is accepted', async () => {
  const { dir, cleanup } = tempDir('arbor-opts-');
  try {
    const dataDir = join(dir, 'data');
    for (const llm of [{}, { name: 'x', model: 'y', stream: 'not a function' }, 'openai', null]) {
      await assert.rejects(createArbor({ dataDir, llm: llm as never }), (err) => {
        assert.ok(isArborError(err, ErrorCodes.INVALID_OPTION), String(err));
        assert.equal(err.details.option, 'llm');
        assert.match(err.message, /stream\(/);
        return true;
      });
    }
    await assert.rejects(createArbor({ dataDir, commands: { greet: 'hello' } as never }), (err) => isArborError(err, ErrorCodes.INVALID_OPTION) && err.details.option === 'commands.greet');
    assert.ok(!existsSync(dataDir), 'nothing was opened');
    const arbor = await createArbor({ dataDir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    await arbor.close();
  } finally {
    cleanup();
  }
});
