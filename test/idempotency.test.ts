import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createArbor, ErrorCodes, isArborError } from '../src/index.ts';
import { loadConfig, startServer } from '../src/server.ts';
import { tempDir } from './helpers/tmp.ts';

// A clientMessageId is an idempotency key: the same message again returns the original,
// another message under the same key is refused (as Stripe refuses a changed body).

test('library: a clientMessageId reused with other content is ARBOR_IDEMPOTENCY_MISMATCH, also after a restart; the same content is the original', async () => {
  const { dir, cleanup } = tempDir('arbor-idem-');
  try {
    const dataDir = join(dir, 'data');
    let arbor = await createArbor({ dataDir });
    const chat = arbor.session('idem');
    const first = await chat.sendMessage({ content: 'order 1 pizza', clientMessageId: 'k-1' });
    await chat.idle();
    await assert.rejects(chat.sendMessage({ content: 'order 9 pizzas', clientMessageId: 'k-1' }), (err) => {
      assert.ok(isArborError(err, ErrorCodes.IDEMPOTENCY_MISMATCH), String(err));
      assert.equal(err.details.field, 'clientMessageId');
      assert.equal(err.details.messageId, first.messageId);
      return true;
    });
    const again = await chat.sendMessage({ content: 'order 1 pizza', clientMessageId: 'k-1' });
    assert.deepEqual(again, { ...first, duplicate: true });
    await arbor.close();

    // after a restart the key still holds, with its content
    arbor = await createArbor({ dataDir });
    const back = arbor.session('idem');
    await back.load();
    await assert.rejects(back.sendMessage({ content: 'order 9 pizzas', clientMessageId: 'k-1' }), (err) => isArborError(err, ErrorCodes.IDEMPOTENCY_MISMATCH));
    assert.deepEqual(await back.sendMessage({ content: 'order 1 pizza', clientMessageId: 'k-1' }), { ...first, duplicate: true });
    assert.equal(back.state.messages.filter((m) => m.role === 'user').length, 1, 'nothing was written by the refused or repeated sends');
    await arbor.close();
  } finally {
    cleanup();
  }
});

test('HTTP: 409 ARBOR_IDEMPOTENCY_MISMATCH for a changed body under the same clientMessageId; 202 duplicate for the same; an empty content names `content`', async () => {
  const { dir, cleanup } = tempDir('arbor-idem-');
  const server = await startServer(loadConfig({ env: {}, overrides: { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent' } }));
  try {
    const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await post('/v1/sessions', { id: 'h' })).status, 201);
    const first = await post('/v1/sessions/h/messages', { content: 'hello', clientMessageId: 'c-1' });
    assert.equal(first.status, 202);
    const original = (await first.json()) as { messageId: string; duplicate: boolean };
    assert.equal(original.duplicate, false);

    const changed = await post('/v1/sessions/h/messages', { content: 'goodbye', clientMessageId: 'c-1' });
    assert.equal(changed.status, 409);
    const body = (await changed.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'ARBOR_IDEMPOTENCY_MISMATCH');
    assert.match(body.error.message, /clientMessageId "c-1"/);

    const same = await post('/v1/sessions/h/messages', { content: 'hello', clientMessageId: 'c-1' });
    assert.equal(same.status, 202);
    assert.deepEqual(await same.json(), { ...original, duplicate: true });

    const empty = await post('/v1/sessions/h/messages', { content: '' });
    assert.equal(empty.status, 400);
    const emptyBody = (await empty.json()) as { error: { code: string; message: string } };
    assert.equal(emptyBody.error.code, 'ARBOR_INVALID_INPUT');
    assert.match(emptyBody.error.message, /^invalid content of a message to session h/);
    assert.doesNotMatch(emptyBody.error.message, /data\.content|user_message_sent/);
  } finally {
    await server.close();
    cleanup();
  }
});
