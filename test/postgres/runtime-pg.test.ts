import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArbor, isArborError, MockProvider, type ArborOptions } from '../../src/index.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip } from '../helpers/postgres.ts';

// The runtime on PostgreSQL: the same library surface as on files, with sessions owned by one
// process at a time.
announcePostgres('test/postgres/runtime-pg.test.ts');

function options(schema: string, nodeId: string, extra: ArborOptions = {}): ArborOptions {
  return { llm: new MockProvider({ chunks: 3, chunkDelayMs: 0 }), postgres: { connectionString: PG_URL!, schema, nodeId, nodeAddress: `http://${nodeId}.invalid`, leaseMs: 1500 }, ...extra };
}

test('createArbor on PostgreSQL: chat, dedupe, restart, and an interrupted stream comes back as a notice', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('rt');
  dropSchemaAtEnd(schema);
  // given a runtime on PostgreSQL with one answered turn and one answer cut by a close
  const first = await createArbor(options(schema, 'n1'));
  assert.equal(first.health().backend, 'postgres');
  const chat = first.session('pg-chat');
  const ack = await chat.sendMessage({ content: 'hello', clientMessageId: 'm1' });
  await chat.idle();
  assert.deepEqual(chat.state.messages.map((m) => m.role), ['user', 'assistant']);
  assert.equal((await chat.sendMessage({ content: 'hello', clientMessageId: 'm1' })).duplicate, true);
  await first.close();
  // when another process opens the same database
  const second = await createArbor(options(schema, 'n2'));
  const state = await second.session('pg-chat').load();
  // then the session is there, dedupe included, and goes on
  assert.equal(state.messages.length, 2);
  const again = await second.session('pg-chat').sendMessage({ content: 'hello', clientMessageId: 'm1' });
  assert.deepEqual([again.duplicate, again.seq], [true, ack.seq]);
  const next = await second.session('pg-chat').sendMessage({ content: 'more' });
  assert.equal(next.seq, state.seq + 1);
  await second.session('pg-chat').idle();
  assert.equal(second.recoveryReport().sessions.find((r) => r.sid === 'pg-chat')?.status, 'recovered');
  await second.close();

  // and a stream cut by a shutdown comes back on the next process as the notice, and retry regenerates it
  const slow = await createArbor(options(schema, 'n3', { llm: new MockProvider({ chunks: 50, chunkDelayMs: 20 }) }));
  const cut = slow.session('pg-cut');
  await cut.sendMessage({ content: 'a long answer please' });
  await new Promise<void>((resolve) => cut.subscribe((u) => u.kind === 'chunk' && resolve()));
  await slow.close();
  const third = await createArbor(options(schema, 'n4'));
  const after = await third.session('pg-cut').load();
  assert.equal(after.messages.at(-1)?.metadata?.interrupted, true);
  await third.session('pg-cut').retry();
  await third.session('pg-cut').idle();
  assert.equal(third.session('pg-cut').state.messages.at(-1)?.role, 'assistant');
  await third.close();
});

test('two runtimes on one database: a session belongs to one at a time; released on passivation, taken by the other', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('own');
  dropSchemaAtEnd(schema);
  const a = await createArbor(options(schema, 'a'));
  const b = await createArbor(options(schema, 'b'));
  t.after(async () => {
    await a.close();
    await b.close();
  });
  await a.session('shared').sendMessage({ content: 'from a' });
  await a.session('shared').idle();
  // while a holds it, b is refused with the owner's name and address
  const refused = await b.session('shared').sendMessage({ content: 'from b' }).then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(isArborError(refused, 'ARBOR_NOT_OWNER'), `expected ARBOR_NOT_OWNER, got ${String(refused)}`);
  assert.equal(refused.details.owner, 'a');
  assert.equal(refused.details.ownerAddress, 'http://a.invalid');
  // once a passivates it (snapshot, lease released), b takes it and continues its history
  assert.equal(await a.passivate('shared'), true);
  const r = await b.session('shared').sendMessage({ content: 'from b' });
  assert.equal(r.seq, 4);
  await b.session('shared').idle();
  assert.deepEqual(b.session('shared').state.messages.map((m) => m.content.slice(0, 6)), ['from a', 'Echo: ', 'from b', 'Echo: '].map((x) => x.slice(0, 6)));
  // and a, asked again, is now the one refused
  await assert.rejects(a.session('shared').sendMessage({ content: 'late' }), (err: unknown) => isArborError(err, 'ARBOR_NOT_OWNER'));
});
