import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createArbor, MockProvider, type ArborOptions } from '../../src/index.ts';
import { rotateEncryptionKey } from '../../src/ops.ts';
import { loadConfig } from '../../src/server/config.ts';
import { startServer } from '../../src/server/server.ts';
import { ErrorCodes } from '../../src/core/errors.ts';
import { decodeSnapshot } from '../../src/backend/snapshot-codec.ts';
import { ContentSealer, isSealed, parseMasterKey, unwrapDataKey } from '../../src/backend/encryption.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip, testPool } from '../helpers/postgres.ts';
import { rejectsWith } from '../helpers/assertions.ts';

// Encryption at rest on PostgreSQL: the same `encryptionKey` option as the file store. Per-session
// data keys wrapped by the master key in the schema's data_keys table; event data and snapshot
// states are sealed before they are sent, so the database never holds the plaintext; a delete
// destroys the key (a copy of the rows taken before is unreadable); a wrong or missing key is
// refused before anything is written; rotation rewraps keys only; nodes share the key table.
announcePostgres('test/postgres/encryption-pg.test.ts');

const newKey = (): string => randomBytes(32).toString('base64');

function options(schema: string, nodeId: string, encryptionKey: string | undefined, extra: ArborOptions = {}): ArborOptions {
  return {
    llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }),
    postgres: { connectionString: PG_URL!, schema, nodeId, leaseMs: 2000 },
    snapshotEveryEvents: 3,
    ...(encryptionKey === undefined ? {} : { encryptionKey }),
    ...extra,
  };
}

/** Sends `n` messages carrying `marker` and waits for each answer. */
async function chat(arbor: Awaited<ReturnType<typeof createArbor>>, sid: string, marker: string, n = 4): Promise<string[]> {
  const s = arbor.session(sid);
  for (let i = 0; i < n; i += 1) {
    await s.sendMessage({ content: `${marker} ${i}` });
    await s.idle();
  }
  return s.state.messages.map((m) => m.content);
}

/** Every table of the schema as text, to show that nothing was written. */
async function tableContents(schema: string): Promise<Record<string, string>> {
  const pool = testPool(1);
  try {
    const out: Record<string, string> = {};
    const { rows: tables } = await pool.query<{ t: string }>(`SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema]);
    for (const { t } of tables) {
      const { rows } = await pool.query<{ d: string | null }>(`SELECT string_agg(x::text, '|' ORDER BY x::text) AS d FROM "${schema}"."${t}" x`);
      out[t] = rows[0]?.d ?? '';
    }
    return out;
  } finally {
    await pool.end();
  }
}

test('PostgreSQL encrypted at rest: no plaintext in event or snapshot rows (plain schema: there is), and the key reads everything back', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('enc');
  const plainSchema = freshSchemaName('encp');
  dropSchemaAtEnd(schema);
  dropSchemaAtEnd(plainSchema);
  const MARK = `pg-plaintext-${randomBytes(4).toString('hex')}`;
  const key = newKey();
  // given a chat written with a key, and the same chat on a schema without one
  const arbor = await createArbor(options(schema, 'n1', key));
  const messages = await chat(arbor, 'secret', MARK);
  await arbor.close();
  const plain = await createArbor(options(plainSchema, 'p1', undefined));
  await chat(plain, 'secret', MARK);
  await plain.close();

  const pool = testPool(1);
  try {
    // then no event row holds the marker (the plain schema's do: the grep finds it when it is there)
    const grep = async (s: string): Promise<number> => Number((await pool.query(`SELECT count(*) AS n FROM "${s}".events WHERE data LIKE '%' || $1 || '%'`, [MARK])).rows[0].n);
    assert.ok((await grep(plainSchema)) > 0);
    assert.equal(await grep(schema), 0);
    const { rows: events } = await pool.query<{ data: string }>(`SELECT data FROM "${schema}".events WHERE sid = 'secret'`);
    assert.ok(events.length > 0 && events.every((r) => isSealed(JSON.parse(r.data))));
    // and every snapshot's state is sealed (the plain schema's is the state itself)
    const states = async (s: string): Promise<unknown[]> => {
      const { rows } = await pool.query<{ body: Buffer }>(`SELECT body FROM "${s}".snapshots WHERE sid = 'secret'`);
      return Promise.all(rows.map(async (r) => ((await decodeSnapshot(r.body)) as { state: unknown }).state));
    };
    const sealed = await states(schema);
    assert.ok(sealed.length > 0 && sealed.every(isSealed));
    assert.ok(!Buffer.from(JSON.stringify(sealed)).includes(MARK));
    assert.ok((await states(plainSchema)).every((st) => !isSealed(st) && JSON.stringify(st).includes(MARK)));
    // and the session's data key is stored wrapped, the key ring names the master key by its id
    assert.equal(Number((await pool.query(`SELECT count(*) AS n FROM "${schema}".data_keys WHERE sid = 'secret'`)).rows[0].n), 1);
    assert.equal(Number((await pool.query(`SELECT count(*) AS n FROM "${schema}".key_ring`)).rows[0].n), 1);
  } finally {
    await pool.end();
  }
  // and another process with the key reads the chat back
  const again = await createArbor(options(schema, 'n2', key));
  assert.deepEqual((await again.session('secret').load()).messages.map((m) => m.content), messages);
  await again.close();
});

test('PostgreSQL delete shreds: the key row goes with the rows, and a copy of the rows taken before the delete cannot be decrypted', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('encd');
  dropSchemaAtEnd(schema);
  const MARK = `doomed-${randomBytes(4).toString('hex')}`;
  const key = newKey();
  const master = parseMasterKey(key, 'test');
  const arbor = await createArbor(options(schema, 'n1', key));
  await chat(arbor, 'doomed', MARK);
  const kept = await chat(arbor, 'kept', 'kept chat');
  const pool = testPool(1);
  try {
    // given a copy of the deleted session's rows taken before the delete (as a pg_dump would be)
    await pool.query(`CREATE TABLE "${schema}".side_events AS SELECT * FROM "${schema}".events WHERE sid = 'doomed'`);
    await pool.query(`CREATE TABLE "${schema}".side_snapshots AS SELECT * FROM "${schema}".snapshots WHERE sid = 'doomed'`);
    const { rows: copy } = await pool.query<{ seq: string; data: string }>(`SELECT seq, data FROM "${schema}".side_events ORDER BY seq`);
    assert.ok(copy.length > 0);
    // which the session's data key opens while it exists
    const wrappedOf = async (): Promise<Map<string, Buffer>> => new Map((await pool.query<{ sid: string; wrapped: Buffer }>(`SELECT sid, wrapped FROM "${schema}".data_keys`)).rows.map((r) => [r.sid, r.wrapped]));
    const before = await wrappedOf();
    const opened = new ContentSealer(() => unwrapDataKey(master, 'doomed', before.get('doomed')!)).openData('doomed', Number(copy[0]!.seq), JSON.parse(copy[0]!.data));
    assert.ok(JSON.stringify(opened).includes(MARK));

    // when the session is deleted
    await arbor.session('doomed').delete();
    await arbor.close();

    // then its key row and its rows are gone; the other session's stay
    const after = await wrappedOf();
    assert.deepEqual([...after.keys()], ['kept']);
    assert.equal(Number((await pool.query(`SELECT count(*) AS n FROM "${schema}".events WHERE sid = 'doomed'`)).rows[0].n), 0);
    assert.equal(Number((await pool.query(`SELECT count(*) AS n FROM "${schema}".snapshots WHERE sid = 'doomed'`)).rows[0].n), 0);
    // and no key left in the table opens the copy
    for (const [sid, wrapped] of after) {
      const sealer = new ContentSealer(() => unwrapDataKey(master, sid, wrapped));
      for (const row of copy) assert.throws(() => sealer.openData('doomed', Number(row.seq), JSON.parse(row.data)), (err: { code?: string }) => err.code === ErrorCodes.CORRUPTION);
    }
    // and the copy put back into the live tables (a restore of the earlier dump) is refused, not read
    await pool.query(`INSERT INTO "${schema}".events SELECT * FROM "${schema}".side_events`);
    await pool.query(`INSERT INTO "${schema}".snapshots SELECT * FROM "${schema}".side_snapshots`);
  } finally {
    await pool.end();
  }
  const restored = await createArbor(options(schema, 'n2', key));
  try {
    await rejectsWith(restored.session('doomed').load(), ErrorCodes.ENCRYPTION_KEY, { sessionId: 'doomed' });
    // and the listing shows it as erased (left out), without failing for the others
    assert.deepEqual((await restored.sessions()).sessions.map((s) => s.id), ['kept']);
    assert.deepEqual((await restored.session('kept').load()).messages.map((m) => m.content), kept);
  } finally {
    await restored.close();
  }
});

test('PostgreSQL: a missing or wrong key refuses to open with ARBOR_ENCRYPTION_KEY naming the key source, and writes nothing', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('encw');
  dropSchemaAtEnd(schema);
  const key = newKey();
  const arbor = await createArbor(options(schema, 'n1', key));
  await chat(arbor, 's1', 'hello', 1);
  await arbor.close();
  const before = await tableContents(schema);
  // when a node opens without the key, with another key, or with a key that is not 32 bytes
  await rejectsWith(createArbor(options(schema, 'n2', undefined)), ErrorCodes.ENCRYPTION_KEY, { source: 'none', schema });
  const wrong = await rejectsWith(createArbor(options(schema, 'n3', newKey())), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey', schema });
  assert.match(wrong.message, /option encryptionKey/);
  await rejectsWith(createArbor(options(schema, 'n4', undefined, { encryptionKey: 'c2hvcnQ=' })), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey' });
  // then not a row changed (no lease, no key, no migration)
  assert.deepEqual(await tableContents(schema), before);
});

test('PostgreSQL master-key rotation rewraps the data keys only: no event or snapshot row changes, the old key is refused, the new one reads everything', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('encr');
  dropSchemaAtEnd(schema);
  const oldKey = newKey();
  const next = newKey();
  const arbor = await createArbor(options(schema, 'n1', oldKey));
  const a = await chat(arbor, 'a', 'first chat');
  const b = await chat(arbor, 'b', 'second chat', 2);
  await arbor.close();
  const before = await tableContents(schema);
  // when the master key is rotated
  const r = await rotateEncryptionKey({ postgres: { connectionString: PG_URL!, schema }, encryptionKey: oldKey, newEncryptionKey: next });
  assert.deepEqual(r, { keys: 2, schema });
  // then the rows are byte for byte the same; only the wrapped keys and the key ring changed
  const after = await tableContents(schema);
  for (const table of ['events', 'snapshots', 'schema_migrations']) assert.equal(after[table], before[table], table);
  assert.notEqual(after.data_keys, before.data_keys);
  assert.notEqual(after.key_ring, before.key_ring);
  // and the old key is refused, the new one reads both chats
  await rejectsWith(createArbor(options(schema, 'n2', oldKey)), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey' });
  const again = await createArbor(options(schema, 'n3', next));
  assert.deepEqual((await again.session('a').load()).messages.map((m) => m.content), a);
  assert.deepEqual((await again.session('b').load()).messages.map((m) => m.content), b);
  await again.close();
  // and rotating with a key that is no longer the master key changes nothing
  await rejectsWith(rotateEncryptionKey({ postgres: { connectionString: PG_URL!, schema }, encryptionKey: oldKey, newEncryptionKey: newKey() }), ErrorCodes.ENCRYPTION_KEY);
});

test('PostgreSQL: nodes share the key table; of two starting at once with different keys one is refused; a key one node made, another reads', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('enc2');
  const raced = freshSchemaName('enc2r');
  dropSchemaAtEnd(schema);
  dropSchemaAtEnd(raced);
  // given two nodes starting at once on a new schema with different keys: exactly one opens
  const results = await Promise.allSettled([createArbor(options(raced, 'r1', newKey())), createArbor(options(raced, 'r2', newKey()))]);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.equal((refused.reason as { code?: string }).code, ErrorCodes.ENCRYPTION_KEY);
  for (const r of results) if (r.status === 'fulfilled') await r.value.close();

  // given two nodes starting at once with the same key
  const key = newKey();
  const [n1, n2] = await Promise.all([createArbor(options(schema, 'n1', key)), createArbor(options(schema, 'n2', key))]);
  try {
    // when each writes its own chat at the same time, then hands it over
    const [one, two] = await Promise.all([chat(n1, 'on-one', 'from node one', 2), chat(n2, 'on-two', 'from node two', 2)]);
    assert.equal(await n1.passivate('on-one'), true);
    assert.equal(await n2.passivate('on-two'), true);
    // then each node reads the other's chat with the key the other made
    assert.deepEqual((await n2.session('on-one').load()).messages.map((m) => m.content), one);
    assert.deepEqual((await n1.session('on-two').load()).messages.map((m) => m.content), two);
    // and writes on in it
    await n2.session('on-one').sendMessage({ content: 'continued on node two' });
    await n2.session('on-one').idle();
  } finally {
    await Promise.all([n1.close(), n2.close()]);
  }
  const pool = testPool(1);
  try {
    const { rows } = await pool.query<{ sid: string }>(`SELECT sid FROM "${schema}".data_keys ORDER BY sid`);
    assert.deepEqual(rows.map((r) => r.sid), ['on-one', 'on-two']);
  } finally {
    await pool.end();
  }
});

test('arbor serve on PostgreSQL with ARBOR_ENCRYPTION_KEY: the chat over HTTP is sealed in the rows, DELETE removes its key; another key is refused at start naming the env', { skip: pgSkip }, async () => {
  const schema = freshSchemaName('ench');
  dropSchemaAtEnd(schema);
  const key = newKey();
  const MARK = `http-plaintext-${randomBytes(4).toString('hex')}`;
  const config = (k: string) => loadConfig({ env: { ARBOR_ENCRYPTION_KEY: k, ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides: { databaseUrl: PG_URL!, pgSchema: schema, nodeId: 'h1', port: 0, logLevel: 'silent' } });
  const server = await startServer(config(key));
  const pool = testPool(1);
  try {
    const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await post('/v1/sessions', { id: 'web' })).status, 201);
    assert.equal((await post('/v1/sessions/web/messages', { content: MARK })).status, 202);
    let messages: { content: string }[] = [];
    for (let i = 0; i < 100 && messages.length < 2; i += 1) {
      messages = ((await (await fetch(`${server.url}/v1/sessions/web`)).json()) as { messages: { content: string }[] }).messages;
      if (messages.length < 2) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(messages[0]!.content, MARK);
    const count = async (sql: string, params: unknown[] = []): Promise<number> => Number((await pool.query(sql, params)).rows[0].n);
    assert.ok((await count(`SELECT count(*) AS n FROM "${schema}".events WHERE sid = 'web'`)) > 0);
    assert.equal(await count(`SELECT count(*) AS n FROM "${schema}".events WHERE data LIKE '%' || $1 || '%'`, [MARK]), 0);
    assert.equal(await count(`SELECT count(*) AS n FROM "${schema}".data_keys WHERE sid = 'web'`), 1);
    assert.equal((await fetch(`${server.url}/v1/sessions/web`, { method: 'DELETE' })).status, 204);
    assert.equal(await count(`SELECT count(*) AS n FROM "${schema}".data_keys WHERE sid = 'web'`), 0);
  } finally {
    await pool.end();
    await server.close();
  }
  await rejectsWith(startServer(config(newKey())), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey (env ARBOR_ENCRYPTION_KEY or --encryption-key)' });
});
