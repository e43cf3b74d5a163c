import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createArbor, MockProvider, type Arbor, type ArborOptions } from '../src/index.ts';
import { loadConfig } from '../src/server/config.ts';
import { startServer } from '../src/server/server.ts';
import { tempDir } from './helpers/tmp.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip } from './helpers/postgres.ts';

// The listing keeps a summary per session until its seq moves. A deleted session's summary must go
// with it: a session created again under the same id, which reaches the same seq, must be listed
// as what it is now, never with the deleted one's title, times or counts.
announcePostgres('test/session-list-delete.test.ts');

/** Writes a session whose last event is seq 3: a message (user + answer) and one config change. */
async function write(arbor: Arbor, sid: string, title: string): Promise<void> {
  const s = arbor.session(sid);
  await s.sendMessage({ content: `hello from ${title}` });
  await s.idle();
  await s.changeConfig('title', title);
}

for (const backend of ['file store', 'postgres'] as const) {
  const skip = backend === 'postgres' ? pgSkip : false;

  test(`${backend}: arbor.sessions() never lists a deleted session's cached summary, also when its id is created again up to the same seq`, { skip }, async (t) => {
    const { dir, cleanup } = tempDir('arbor-list-del-');
    t.after(cleanup);
    let options: ArborOptions = { dataDir: join(dir, 'data'), llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }) };
    if (backend === 'postgres') {
      const schema = freshSchemaName('ld');
      dropSchemaAtEnd(schema);
      options = { llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), postgres: { connectionString: PG_URL!, schema, nodeId: 'ld-1', leaseMs: 2000 } };
    }
    const arbor = await createArbor(options);
    try {
      // given a listed session (its summary cached)
      await write(arbor, 'chat', 'the deleted secret');
      const seq = arbor.session('chat').state.seq;
      const first = await arbor.sessions();
      assert.deepEqual(first.sessions.map((s) => [s.id, s.title]), [['chat', 'the deleted secret']]);
      // when it is deleted, and listed again
      await arbor.session('chat').delete();
      assert.deepEqual((await arbor.sessions()).sessions, []);
      // and the id is used again, up to the same seq, with another title
      await write(arbor, 'chat', 'the new one');
      assert.equal(arbor.session('chat').state.seq, seq);
      // then the listing shows the new session, nothing of the deleted one
      const listed = (await arbor.sessions()).sessions;
      assert.deepEqual(listed.map((s) => [s.id, s.title]), [['chat', 'the new one']]);
      assert.equal(listed[0]!.createdAt, arbor.session('chat').state.createdAt);
    } finally {
      await arbor.close();
    }
  });

  test(`${backend}: GET /v1/sessions after DELETE lists neither the deleted session nor its old summary`, { skip }, async (t) => {
    const { dir, cleanup } = tempDir('arbor-list-del-http-');
    t.after(cleanup);
    const overrides: Record<string, unknown> = { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent' };
    if (backend === 'postgres') {
      const schema = freshSchemaName('ldh');
      dropSchemaAtEnd(schema);
      Object.assign(overrides, { databaseUrl: PG_URL!, pgSchema: schema, nodeId: 'ldh-1' });
    }
    const server = await startServer(loadConfig({ env: { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides }));
    try {
      const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
        const res = await fetch(`${server.url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
        const text = await res.text();
        return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
      };
      const make = async (title: string): Promise<number> => {
        assert.equal((await call('POST', '/v1/sessions', { id: 'chat', config: { title } })).status, 201);
        assert.equal((await call('POST', '/v1/sessions/chat/messages', { content: 'hi' })).status, 202);
        for (let i = 0; i < 100; i += 1) {
          const got = await call('GET', '/v1/sessions/chat');
          if (got.body.stream?.status !== 'streaming' && got.body.messages?.length === 2) return got.body.seq as number;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error('the answer did not finish');
      };
      // given a listed session
      const seq = await make('the deleted secret');
      assert.deepEqual((await call('GET', '/v1/sessions')).body.sessions.map((s: { title?: string }) => s.title), ['the deleted secret']);
      // when it is deleted and the id made again up to the same seq
      assert.equal((await call('DELETE', '/v1/sessions/chat')).status, 204);
      assert.deepEqual((await call('GET', '/v1/sessions')).body.sessions, []);
      assert.equal(await make('the new one'), seq);
      // then only the new one is listed
      assert.deepEqual((await call('GET', '/v1/sessions')).body.sessions.map((s: { id: string; title?: string }) => [s.id, s.title]), [['chat', 'the new one']]);
    } finally {
      await server.close();
    }
  });
}
