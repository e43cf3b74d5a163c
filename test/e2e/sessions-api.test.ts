import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { hashToken } from '../../src/server/auth.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { SseClient } from '../helpers/sse.ts';
import { tempDir } from '../helpers/tmp.ts';
import { announcePostgres, dropSchema, freshSchemaName, PG_URL, pgSkip } from '../helpers/postgres.ts';

// The sessions API of the real `arbor serve` process (docs/sessions-api.md): tenant id spaces, listing and
// paging, messages and events pages, fork, and who sees /health in full; on the file store and on PostgreSQL.

announcePostgres('test/e2e/sessions-api.test.ts');

const ACME = 'acme-token-0123456789';
const GLOBEX = 'globex-token-9876543210';
const OPERATOR = 'operator-token-5555555555';

type Body = { error?: { code: string; message: string } } & Record<string, unknown>;
interface Msg {
  id: string;
  role: string;
  content: string;
  seq: number;
}

for (const backend of ['file store', 'postgres'] as const) {
  describe(`sessions API on the ${backend}`, { skip: backend === 'postgres' ? pgSkip : false }, () => {
    let server: ServeProcess;
    let cleanup: () => void;
    let schema: string | undefined;

    before(async () => {
      const made = tempDir('arbor-sessions-api-');
      cleanup = made.cleanup;
      const env: Record<string, string> = {
        ARBOR_TOKENS: `acme:${hashToken(ACME)},globex:${hashToken(GLOBEX)}`,
        ARBOR_OPERATOR_TOKENS: hashToken(OPERATOR),
        ARBOR_MOCK_CHUNKS: '2',
        ARBOR_MOCK_CHUNK_DELAY_MS: '0',
      };
      const args = ['--data-dir', join(made.dir, 'data')];
      if (backend === 'postgres') {
        schema = freshSchemaName('api');
        env.ARBOR_PG_SCHEMA = schema;
        args.push('--postgres', PG_URL!);
      }
      server = await startServe(args, env);
    });

    after(async () => {
      await server?.stop('SIGKILL');
      cleanup?.();
      if (schema !== undefined) await dropSchema(schema);
    });

    async function call(method: string, path: string, token: string | undefined, body?: unknown): Promise<{ status: number; body: Body; headers: Headers }> {
      const res = await fetch(`${server.url}${path}`, {
        method,
        headers: { ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: text === '' ? {} : (JSON.parse(text) as Body), headers: res.headers };
    }

    /** Sends a message and waits until its answer is in the session. */
    async function chat(token: string, id: string, content: string): Promise<void> {
      const sent = await call('POST', `/v1/sessions/${id}/messages`, token, { content });
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      for (let i = 0; i < 500; i += 1) {
        const view = await call('GET', `/v1/sessions/${id}`, token);
        if (view.body.status === 'idle' && (view.body.messages as Msg[]).at(-1)?.role === 'assistant') return;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.fail(`no answer in ${id}`);
    }

    test('each tenant has its own id space: the same id is two sessions, and another tenant\'s id answers like a missing one', async () => {
      // given acme's session s1 with a message
      assert.equal((await call('POST', '/v1/sessions', ACME, { id: 's1' })).status, 201);
      await chat(ACME, 's1', 'acme secret');
      // when globex probes s1 and an id nobody has: the same answers, status, body (but for the id) and headers
      const probes: [string, string, unknown][] = [
        ['GET', '/v1/sessions/ID', undefined],
        ['GET', '/v1/sessions/ID/messages', undefined],
        ['GET', '/v1/sessions/ID/events', undefined],
        ['POST', '/v1/sessions/ID/messages', { content: 'x' }],
        ['POST', '/v1/sessions/ID/fork', {}],
      ];
      for (const [method, path, body] of probes) {
        const taken = await call(method, path.replace('ID', 's1'), GLOBEX, body);
        const free = await call(method, path.replace('ID', 'nobody-has-this'), GLOBEX, body);
        assert.deepEqual([taken.status, taken.body.error?.code], [404, 'ARBOR_SESSION_NOT_FOUND'], `${method} ${path}`);
        assert.equal(JSON.stringify(taken.body).replace('s1', 'X'), JSON.stringify(free.body).replace('nobody-has-this', 'X'));
        const names = (h: Headers) => [...h.keys()].filter((k) => k !== 'date').sort();
        assert.deepEqual(names(taken.headers), names(free.headers));
      }
      // and globex creating s1 gets its own (201, not 409), empty; acme's is untouched and unseen
      const created = await call('POST', '/v1/sessions', GLOBEX, { id: 's1' });
      assert.deepEqual([created.status, created.body.id, (created.body.messages as Msg[]).length], [201, 's1', 0]);
      await chat(GLOBEX, 's1', 'globex words');
      const acme = await call('GET', '/v1/sessions/s1', ACME);
      assert.deepEqual((acme.body.messages as Msg[]).filter((m) => m.role === 'user').map((m) => m.content), ['acme secret']);
      const globex = await call('GET', '/v1/sessions/s1', GLOBEX);
      assert.deepEqual((globex.body.messages as Msg[]).filter((m) => m.role === 'user').map((m) => m.content), ['globex words']);
      // and a second create in the same tenant is 409; an id of the storage form is refused
      assert.deepEqual([(await call('POST', '/v1/sessions', GLOBEX, { id: 's1' })).status], [409]);
      assert.equal((await call('GET', '/v1/sessions/__tAAAAAAAAAAAA_s1', ACME)).status, 400);
    });

    test('GET /v1/sessions pages the caller\'s sessions, most recently active first; foreign cursors and bad limits are 400', async () => {
      for (const id of ['l1', 'l2', 'l3']) {
        assert.equal((await call('POST', '/v1/sessions', GLOBEX, { id, config: { title: `title ${id}` } })).status, 201);
        await new Promise((r) => setTimeout(r, 3));
      }
      await chat(GLOBEX, 'l1', 'bump l1');
      // when globex lists two per page
      const first = await call('GET', '/v1/sessions?limit=2', GLOBEX);
      assert.equal(first.status, 200);
      const second = await call('GET', `/v1/sessions?limit=2&cursor=${first.body.nextCursor as string}`, GLOBEX);
      const rest = second.body.nextCursor === null ? [] : ((await call('GET', `/v1/sessions?limit=2&cursor=${second.body.nextCursor as string}`, GLOBEX)).body.sessions as { id: string }[]);
      const ids = [...(first.body.sessions as { id: string }[]), ...(second.body.sessions as { id: string }[]), ...rest].map((s) => s.id);
      // then its sessions only, newest activity first, each once
      assert.deepEqual(ids.filter((id) => id.startsWith('l')), ['l1', 'l3', 'l2']);
      assert.equal(new Set(ids).size, ids.length);
      const l1 = (first.body.sessions as Record<string, unknown>[])[0]!;
      assert.deepEqual([l1.id, l1.title, l1.messageCount, l1.status], ['l1', 'title l1', 2, 'idle']);
      assert.ok(!(await call('GET', '/v1/sessions?limit=200', ACME)).body.sessions!.toString().includes('l1'));
      const acmeIds = ((await call('GET', '/v1/sessions?limit=200', ACME)).body.sessions as { id: string }[]).map((s) => s.id);
      assert.ok(!acmeIds.some((id) => id.startsWith('l')), acmeIds.join());
      // and bad input names its field
      const foreign = await call('GET', `/v1/sessions?cursor=${first.body.nextCursor as string}`, ACME);
      assert.deepEqual([foreign.status, foreign.body.error?.code], [400, 'ARBOR_INVALID_INPUT']);
      for (const limit of ['0', '201', 'x', '-1']) {
        const bad = await call('GET', `/v1/sessions?limit=${limit}`, GLOBEX);
        assert.deepEqual([bad.status, bad.body.error?.code], [400, 'ARBOR_INVALID_INPUT'], limit);
        assert.match(bad.body.error!.message, /limit/);
      }
    });

    test('messages page by page (oldest first within a page), ?messages=n on GET and the stream, and the events still held', async () => {
      assert.equal((await call('POST', '/v1/sessions', ACME, { id: 'pages' })).status, 201);
      for (const n of [1, 2, 3]) await chat(ACME, 'pages', `question ${n}`);
      const all = (await call('GET', '/v1/sessions/pages', ACME)).body.messages as Msg[];
      assert.equal(all.length, 6);
      // when read two at a time from the newest
      const seen: Msg[] = [];
      let before: number | null | undefined;
      do {
        const page = await call('GET', `/v1/sessions/pages/messages?limit=2${before == null ? '' : `&before=${before}`}`, ACME);
        assert.equal(page.status, 200);
        const msgs = page.body.messages as Msg[];
        assert.ok(msgs.length <= 2 && msgs.every((m, i) => i === 0 || m.seq > msgs[i - 1]!.seq));
        seen.unshift(...msgs);
        before = page.body.nextBefore as number | null;
      } while (before !== null);
      assert.deepEqual(seen, all);
      assert.equal((await call('GET', '/v1/sessions/pages/messages?limit=0', ACME)).status, 400);
      // and ?messages=1 carries only the newest message, on GET and in the stream's first state frame
      const newest = await call('GET', '/v1/sessions/pages?messages=1', ACME);
      assert.deepEqual(newest.body.messages, all.slice(-1));
      const stream = new SseClient(`${server.url}/v1/sessions/pages/stream?messages=1`, { authorization: `Bearer ${ACME}` });
      const state = await stream.next();
      stream.close();
      assert.equal(state?.event, 'state');
      assert.deepEqual((JSON.parse(state!.data) as { messages: Msg[] }).messages, all.slice(-1));
      // and the events route gives the audit trail in pages, without the server's tenant record
      const events: { seq: number; type: string }[] = [];
      let fromSeq: number | null = 1;
      while (fromSeq !== null) {
        const page = await call('GET', `/v1/sessions/pages/events?fromSeq=${fromSeq}&limit=3`, ACME);
        assert.equal(page.status, 200);
        events.push(...(page.body.events as { seq: number; type: string }[]));
        fromSeq = page.body.nextFromSeq as number | null;
      }
      assert.ok(events.every((e) => e.type !== 'session_config_changed'));
      assert.deepEqual(events.filter((e) => e.type === 'user_message_sent').length, 3);
      assert.ok(events.every((e, i) => i === 0 || e.seq > events[i - 1]!.seq));
      assert.equal((await call('GET', '/v1/sessions/pages/events?fromSeq=0', ACME)).status, 400);
    });

    test('POST /v1/sessions/:id/fork: 201 with the messages up to atSeq, both linked, the source untouched; atSeq beyond is 400', async () => {
      assert.equal((await call('POST', '/v1/sessions', ACME, { id: 'tree' })).status, 201);
      await chat(ACME, 'tree', 'first');
      const atSeq = (await call('GET', '/v1/sessions/tree', ACME)).body.seq as number;
      await chat(ACME, 'tree', 'second');
      const source = (await call('GET', '/v1/sessions/tree', ACME)).body;
      // when forked at the end of the first turn
      const fork = await call('POST', '/v1/sessions/tree/fork', ACME, { id: 'branch', atSeq });
      assert.equal(fork.status, 201, JSON.stringify(fork.body));
      // then the fork has exactly the messages up to atSeq, and names its source; the source names its fork
      assert.deepEqual(fork.body.messages, (source.messages as Msg[]).filter((m) => m.seq <= atSeq));
      assert.deepEqual([fork.body.id, fork.body.forkedFrom], ['branch', { id: 'tree', atSeq }]);
      const after = (await call('GET', '/v1/sessions/tree', ACME)).body;
      assert.deepEqual(after.messages, source.messages);
      assert.deepEqual(after.forks, [{ id: 'branch', atSeq }]);
      // and it is acme's: globex cannot see it, and its own "branch" id is free
      assert.equal((await call('GET', '/v1/sessions/branch', GLOBEX)).status, 404);
      assert.equal((await call('GET', '/v1/sessions/branch', ACME)).status, 200);
      // and bad input
      const beyond = await call('POST', '/v1/sessions/tree/fork', ACME, { atSeq: (after.seq as number) + 5 });
      assert.deepEqual([beyond.status, beyond.body.error?.code], [400, 'ARBOR_INVALID_INPUT']);
      assert.match(beyond.body.error!.message, /atSeq/);
      assert.equal((await call('POST', '/v1/sessions/tree/fork', ACME, { id: 'branch' })).status, 409);
    });

    test('/health: statuses only without a token and for tenants; the operator token sees the details', async () => {
      const anonymous = await call('GET', '/health', undefined);
      assert.equal(anonymous.status, 200);
      const checks = anonymous.body.checks as Record<string, Record<string, unknown>>;
      assert.deepEqual(Object.keys(checks).sort(), ['diskSpace', 'hotStorage', 'journalWriter', 'recovery']);
      for (const c of Object.values(checks)) assert.deepEqual(Object.keys(c), ['status']);
      const tenant = await call('GET', '/health', ACME);
      for (const c of Object.values(tenant.body.checks as Record<string, Record<string, unknown>>)) assert.deepEqual(Object.keys(c), ['status']);
      const operator = await call('GET', '/health', OPERATOR);
      const recovery = (operator.body.checks as Record<string, Record<string, unknown>>).recovery!;
      assert.equal(typeof recovery.message, 'string');
      assert.ok(Object.keys(recovery).length > 1);
    });
  });
}
