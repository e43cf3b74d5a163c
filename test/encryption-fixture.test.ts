import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createArbor, MockProvider } from '../src/index.ts';
import { verifyDataDir } from '../src/ops.ts';
import { ErrorCodes } from '../src/core/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';

// An encrypted data directory written by the encryption code before it moved to
// src/backend/encryption.ts (test/fixtures/encrypted-v1, made by its make-fixture.ts):
// today's code opens it with its key, reads every session back, checks every payload, and writes on.
/** The fixture's master key (FIXTURE_KEY of its make-fixture.ts, which is not imported: importing it would run it). */
const FIXTURE_KEY = 'q7pQ0n1m3Jm2xwK7t2rT5cXoY0Fh6dWgqgk1S8yV3zE=';
const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'encrypted-v1', 'arbor-data');

test('an encrypted data directory written by the earlier encryption code opens with its key: every session, verify with the key, and new writes', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-fixture-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  cpSync(FIXTURE, dataDir, { recursive: true });
  const verified = await verifyDataDir({ dataDir, encryptionKey: FIXTURE_KEY });
  assert.equal(verified.encryption, 'checked');
  assert.deepEqual(verified.damage, []);
  await rejectsWith(createArbor({ dataDir, llm: new MockProvider() }), ErrorCodes.ENCRYPTION_KEY, { source: 'none' });
  const arbor = await createArbor({ dataDir, encryptionKey: FIXTURE_KEY, llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }) });
  try {
    const alpha = await arbor.session('alpha').load();
    assert.deepEqual(alpha.messages.filter((m) => m.role === 'user').map((m) => m.content), [0, 1, 2].map((i) => `alpha fixture message ${i}`));
    assert.equal(alpha.messages.length, 6);
    const beta = await arbor.session('beta').load();
    assert.deepEqual(beta.messages.filter((m) => m.role === 'user').map((m) => m.content), ['beta fixture message 0']);
    await arbor.session('beta').sendMessage({ content: 'written by today' });
    await arbor.session('beta').idle();
  } finally {
    await arbor.close();
  }
  const again = await createArbor({ dataDir, encryptionKey: FIXTURE_KEY, llm: new MockProvider() });
  try {
    assert.equal((await again.session('beta').load()).messages.at(-2)?.content, 'written by today');
  } finally {
    await again.close();
  }
});
