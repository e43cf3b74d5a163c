import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArbor, type SessionState } from '../../src/index.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip, testPool } from '../helpers/postgres.ts';
import { HangingProvider } from '../helpers/hanging-provider.ts';

// After a lost lease the runtime drops what it held of the session, but keeps its actor: the
// session must go on answering once it is loaded again.
announcePostgres('test/postgres/runtime-pg-lost.test.ts');

test('PostgreSQL: after the lease of a streaming session is lost, the session answers its next message, and the cut answer shows the interrupted notice', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('lost');
  const llm = new HangingProvider();
  const arbor = await createArbor({ llm, postgres: { connectionString: PG_URL!, schema, nodeId: 'n1', nodeAddress: 'http://n1.invalid', leaseMs: 5000, renewEveryMs: 50 } });
  const pool = testPool(1);
  // Hooks run in the order they were added: the runtime closes (final snapshots) before its schema goes.
  t.after(async () => {
    await arbor.close();
    await pool.end();
  });
  dropSchemaAtEnd(schema);
  // given a session whose answer is streaming
  const chat = arbor.session('pg-lost');
  const streaming = llm.nextHang();
  const cut = await chat.sendMessage({ content: 'hang on' });
  await streaming;
  // when the database sees its lease expired (as after a pause longer than the lease) and the next renewal notices
  await pool.query(`UPDATE "${schema}".leases SET expires_at = now() - interval '1 second' WHERE sid = 'pg-lost'`);
  for (let i = 0; i < 2000 && arbor.health().sessions.lost === 0; i += 1) await new Promise((r) => setTimeout(r, 5));
  assert.equal(arbor.health().sessions.lost, 1);
  await chat.idle();
  // then the session, loaded again on its next command, answers it
  const next = await chat.sendMessage({ content: 'still there?' });
  await chat.idle();
  const state: SessionState = chat.state;
  assert.equal(state.messages.find((m) => m.role === 'assistant' && m.metadata?.requestMessageId === next.messageId)?.content, 'ok: still there?');
  // and the answer the lost lease cut ends with the interrupted notice
  assert.ok(state.messages.some((m) => m.role === 'system' && m.metadata?.interrupted === true && (m.metadata.originalRequest as { messageId?: unknown } | undefined)?.messageId === cut.messageId));
});
