import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type pg from 'pg';
import { runCli, startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { SseClient } from '../helpers/sse.ts';
import { tempDir } from '../helpers/tmp.ts';
import { announcePostgres, dropSchema, freshSchemaName, PG_URL, pgSkip, testPool } from '../helpers/postgres.ts';

// Several `arbor serve` processes on one PostgreSQL: any node serves any session (forwarding
// to the owner), a killed node's sessions move to another within the lease, and a paused
// node that wakes up after losing its sessions writes nothing (fencing), with a negative control.
announcePostgres('test/e2e/multi-node.test.ts');

const LEASE_MS = 1200;
const FORWARDED_BY = 'x-arbor-forwarded-by';

interface Node {
  id: string;
  proc: ServeProcess;
  url: string;
  alive: boolean;
}

interface Cluster {
  schema: string;
  nodes: Node[];
  pool: pg.Pool;
  /** Rows of the schema's tables (`$s` is the schema). */
  sql<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
}

async function withCluster(count: number, env: Record<string, string>, fn: (c: Cluster) => Promise<void>, perNodeEnv: (i: number) => Record<string, string> = () => ({})): Promise<void> {
  const schema = freshSchemaName('mn');
  const { dir, cleanup } = tempDir('arbor-multi-');
  const pool = testPool(4);
  const nodes: Node[] = [];
  try {
    // Started one after the other: all of them migrate the same schema at start.
    for (let i = 0; i < count; i += 1) {
      const id = `node-${i}`;
      const proc = await startServe(['--postgres', PG_URL!, '--data-dir', join(dir, id)], {
        ARBOR_PG_SCHEMA: schema,
        ARBOR_NODE_ID: id,
        ARBOR_LEASE_MS: String(LEASE_MS),
        // Every event stays in the table, so seqs can be checked to be exactly 1..n.
        ARBOR_SNAPSHOT_EVERY_EVENTS: '100000',
        ...env,
        ...perNodeEnv(i),
      });
      nodes.push({ id, proc, url: proc.url, alive: true });
    }
    const sql = async <T,>(text: string, params: unknown[] = []): Promise<T[]> => (await pool.query(text.replaceAll('$s', `"${schema}"`), params)).rows as T[];
    await fn({ schema, nodes, pool, sql });
  } finally {
    for (const n of nodes) {
      n.proc.child.kill('SIGCONT');
      await n.proc.stop('SIGKILL');
    }
    await pool.end();
    await dropSchema(schema);
    cleanup();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

interface Ack {
  sid: string;
  cid: string;
  messageId: string;
  seq: number;
  at: number;
}

/**
 * A client behind a load balancer: each attempt goes to a random node; a
 * refused connection, 421 or 503 is retried (same clientMessageId) on another.
 * Resolves with the acknowledgement (202), or throws on any other answer.
 */
async function send(nodes: readonly Node[], sid: string, cid: string, timeoutMs = 30_000): Promise<Ack> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const node = pick(nodes);
    let res: Response | undefined;
    try {
      res = await post(`${node.url}/v1/sessions/${sid}/messages`, { content: `message ${cid}`, clientMessageId: cid });
    } catch {
      // connection refused: the node is dead; the load balancer tries another
    }
    if (res !== undefined) {
      const text = await res.text();
      if (res.status === 202) {
        const body = JSON.parse(text) as { messageId: string; seq: number };
        return { sid, cid, messageId: body.messageId, seq: body.seq, at: performance.now() };
      }
      if (res.status !== 421 && res.status !== 503 && res.status !== 429) throw new Error(`POST ${sid} ${cid} to ${node.id}: ${res.status} ${text}`);
    }
    if (Date.now() > deadline) throw new Error(`message ${cid} of ${sid} not acknowledged within ${timeoutMs} ms`);
    await sleep(100);
  }
}

async function checkSeqs(c: Cluster): Promise<Map<string, number>> {
  const rows = await c.sql<{ sid: string; n: string; lo: string; hi: string; distinct_seqs: string }>(
    'SELECT sid, count(*) AS n, min(seq) AS lo, max(seq) AS hi, count(DISTINCT seq) AS distinct_seqs FROM $s.events GROUP BY sid',
  );
  const last = new Map<string, number>();
  for (const r of rows) {
    assert.deepEqual([Number(r.lo), Number(r.hi), Number(r.distinct_seqs)], [1, Number(r.n), Number(r.n)], `session ${r.sid}: seqs must be exactly 1..${r.n} without duplicates`);
    last.set(r.sid, Number(r.hi));
  }
  return last;
}

test('3 nodes on one PostgreSQL: any node serves any session; SIGKILL one: its sessions move within the lease, every acknowledged message is there, seqs stay 1..n', { skip: pgSkip, timeout: 180_000 }, async () => {
  await withCluster(3, { ARBOR_MOCK_CHUNKS: '4', ARBOR_MOCK_CHUNK_DELAY_MS: '10' }, async (c) => {
    const sids = Array.from({ length: 9 }, (_, i) => `mn-${i}`);
    // a session asked for before it exists is 404 and holds no lease: another node can create it
    assert.equal((await fetch(`${c.nodes[0]!.url}/v1/sessions/${sids[0]}`)).status, 404);
    assert.deepEqual(await c.sql('SELECT sid FROM $s.leases WHERE expires_at > now()'), []);
    // given 9 sessions, each created on a random node and written to through random nodes
    for (const [i, sid] of sids.entries()) assert.equal((await post(`${(i === 0 ? c.nodes[1]! : pick(c.nodes)).url}/v1/sessions`, { id: sid })).status, 201);
    // and creating it again through any node is 409, whoever owns it
    assert.equal((await post(`${c.nodes[2]!.url}/v1/sessions`, { id: sids[0] })).status, 409);
    const acks: Ack[] = [];
    await Promise.all(sids.map(async (sid) => {
      for (let i = 0; i < 3; i += 1) acks.push(await send(c.nodes, sid, `${sid}-a${i}`));
    }));
    // a session read through a node that does not own it is forwarded to its owner (and answered by it)
    const leases = await c.sql<{ sid: string; owner: string }>('SELECT sid, owner FROM $s.leases WHERE expires_at > now()');
    const ownerOf = new Map(leases.map((l) => [l.sid, l.owner]));
    const someSid = sids.find((s) => ownerOf.has(s))!;
    const other = c.nodes.find((n) => n.id !== ownerOf.get(someSid))!;
    const viaOther = await fetch(`${other.url}/v1/sessions/${someSid}`);
    assert.equal(viaOther.status, 200);
    assert.equal(viaOther.headers.get(FORWARDED_BY), other.id, 'answered by the owner, through the node asked');
    assert.equal(((await viaOther.json()) as { messages: unknown[] }).messages.length >= 3, true);
    // a request already forwarded once is never forwarded again: a non-owner answers 421 with Retry-After
    const hop = await fetch(`${other.url}/v1/sessions/${someSid}`, { headers: { [FORWARDED_BY]: 'node-x' } });
    assert.equal(hop.status, 421);
    assert.ok(Number(hop.headers.get('retry-after')) > 0);
    assert.equal(((await hop.json()) as { error: { code: string } }).error.code, 'ARBOR_NOT_OWNER');
    // and an SSE stream through a non-owner carries the owner's events
    const stream = new SseClient(`${other.url}/v1/sessions/${someSid}/stream`);
    assert.equal((await stream.next())?.event, 'state');
    const streamed = send([other], someSid, `${someSid}-via-stream`);
    // (until this message's own event: an answer to an earlier message may still be completing first)
    const seen = await stream.until((e) => e.event === 'user_message_sent' && e.data.includes(`${someSid}-via-stream`));
    stream.close();
    acks.push(await streamed);
    assert.ok(seen.some((e) => e.event === 'user_message_sent' && e.data.includes(`${someSid}-via-stream`)));

    // when the node owning most sessions is killed while clients keep writing through every node
    const counts = new Map<string, number>();
    for (const sid of sids) if (ownerOf.has(sid)) counts.set(ownerOf.get(sid)!, (counts.get(ownerOf.get(sid)!) ?? 0) + 1);
    const victimId = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    const victim = c.nodes.find((n) => n.id === victimId)!;
    const victimSids = sids.filter((s) => ownerOf.get(s) === victimId);
    assert.ok(victimSids.length > 0);
    let stop = false;
    const afterKill = new Map<string, number>();
    let killedAt = Number.POSITIVE_INFINITY;
    const writers = sids.map(async (sid) => {
      for (let i = 0; !stop; i += 1) {
        const ack = await send(c.nodes, sid, `${sid}-b${i}`);
        acks.push(ack);
        if (ack.at > killedAt) afterKill.set(sid, (afterKill.get(sid) ?? 0) + 1);
        await sleep(50);
      }
    });
    await sleep(500);
    victim.proc.child.kill('SIGKILL');
    killedAt = performance.now();
    victim.alive = false;
    await victim.proc.stop('SIGKILL');
    const survivors = c.nodes.filter((n) => n.alive);
    // then each of its sessions is served by a survivor after at most about the lease
    const failover = await Promise.all(victimSids.map(async (sid) => {
      await until(`session ${sid} to be served by a survivor`, 15_000, async () => ((await fetch(`${pick(survivors).url}/v1/sessions/${sid}`)).status === 200 ? true : undefined));
      return performance.now() - killedAt;
    }));
    await until('two acknowledged messages per session after the kill', 30_000, async () => (sids.every((s) => (afterKill.get(s) ?? 0) >= 2) ? true : undefined));
    stop = true;
    await Promise.all(writers);
    const worst = Math.max(...failover);
    process.stderr.write(`multi-node failover: ${victimSids.length} sessions of ${victimId} (SIGKILL) served by a survivor after ${failover.map((ms) => Math.round(ms)).join(', ')} ms (lease ${LEASE_MS} ms)\n`);
    assert.ok(worst < 15_000, `failover took ${worst} ms`);

    // and every acknowledged message is in its session, once, and answered or marked interrupted
    for (const sid of sids) {
      const view = await until(`session ${sid} idle`, 30_000, async () => {
        const v = (await (await fetch(`${pick(survivors).url}/v1/sessions/${sid}`)).json()) as { status: string; messages: { id: string; role: string; content: string }[] };
        return v.status === 'idle' ? v : undefined;
      });
      const users = view.messages.filter((m) => m.role === 'user');
      const mine = acks.filter((a) => a.sid === sid);
      for (const a of mine) assert.equal(users.filter((m) => m.id === a.messageId).length, 1, `acknowledged message ${a.cid} (${a.messageId}) of ${sid}`);
      assert.equal(users.length, new Set(users.map((m) => m.content)).size, `no message of ${sid} twice`);
    }
    // and in the table: every session's seqs are exactly 1..n, each clientMessageId once
    const last = await checkSeqs(c);
    for (const sid of sids) assert.ok((last.get(sid) ?? 0) > 0, `events of ${sid}`);
    const dupes = await c.sql('SELECT sid, cid, count(*) FROM $s.events WHERE cid IS NOT NULL GROUP BY sid, cid HAVING count(*) > 1');
    assert.deepEqual(dupes, []);
    const ackedCids = await c.sql<{ cid: string }>('SELECT cid FROM $s.events WHERE cid = ANY($1::text[])', [acks.map((a) => a.cid)]);
    assert.equal(ackedCids.length, acks.length, 'every acknowledged message is in the events table');
  });
});

test('forwarding passes Authorization and Last-Event-ID through: a resumed SSE stream via a non-owner continues after the id, with tokens on', { skip: pgSkip, timeout: 60_000 }, async () => {
  const token = 'multi-node-token';
  const sha = createHash('sha256').update(token).digest('hex');
  await withCluster(2, { ARBOR_MOCK_CHUNKS: '3', ARBOR_MOCK_CHUNK_DELAY_MS: '5', ARBOR_TOKENS: `acme:${sha}` }, async (c) => {
    const [a, b] = c.nodes as [Node, Node];
    const auth = { authorization: `Bearer ${token}` };
    const authed = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(body) });
    assert.equal((await authed(`${a.url}/v1/sessions`, { id: 'tok' })).status, 201);
    const first = (await (await authed(`${a.url}/v1/sessions/tok/messages`, { content: 'one' })).json()) as { seq: number };
    await until('the first answer', 15_000, async () => ((await (await fetch(`${a.url}/v1/sessions/tok`, { headers: auth })).json()) as { status: string }).status === 'idle' || undefined);
    // without a token B refuses before forwarding; with it the owner A answers through B
    assert.equal((await fetch(`${b.url}/v1/sessions/tok`)).status, 401);
    const viaB = await fetch(`${b.url}/v1/sessions/tok`, { headers: auth });
    assert.equal(viaB.status, 200);
    assert.equal(viaB.headers.get(FORWARDED_BY), b.id);
    // when a client resumes the stream through B from the seq of its first message
    const stream = new SseClient(`${b.url}/v1/sessions/tok/stream`, { ...auth, 'last-event-id': String(first.seq) });
    const replayed = await stream.until((e) => e.event === 'assistant_response_completed');
    stream.close();
    // then it gets what came after that seq, no state reset: Last-Event-ID reached the owner
    assert.notEqual(replayed[0]!.event, 'state');
    const seqs = replayed.filter((e) => e.event !== 'chunk').map((e) => Number(e.id));
    assert.ok(seqs.length > 0 && seqs.every((s) => s > first.seq), JSON.stringify(seqs));
  });
});

/**
 * The stale-owner scenario: node A owns an idle session and is paused
 * (SIGSTOP) past its lease; node B takes the session over by reading it;
 * A is resumed and a client sends a message straight to A, then one to B.
 */
async function staleOwnerScenario(fencing: boolean): Promise<{
  takeoverSeq: number;
  stale: { status: number; forwardedBy: string | null; attempts: number };
  toB: number;
  rows: { seq: number; type: string; cid: string | null }[];
  aHealth: { node?: { sessionsLost: number } };
}> {
  let result!: Awaited<ReturnType<typeof staleOwnerScenario>>;
  await withCluster(2, { ARBOR_MOCK_CHUNKS: '4', ARBOR_MOCK_CHUNK_DELAY_MS: '10' }, async (c) => {
    const [a, b] = c.nodes as [Node, Node];
    const sid = 'stale';
    // given a session owned by A, answered and idle
    assert.equal((await post(`${a.url}/v1/sessions`, { id: sid })).status, 201);
    await send([a], sid, 'before');
    await until('the answer on A', 15_000, async () => ((await (await fetch(`${a.url}/v1/sessions/${sid}`)).json()) as { status: string }).status === 'idle' || undefined);
    // when A is paused past its lease and B takes the session over (a read loads it)
    a.proc.child.kill('SIGSTOP');
    await until('A\u2019s lease to expire', 15_000, async () => ((await c.sql(`SELECT 1 FROM $s.leases WHERE sid = $1 AND expires_at <= now()`, [sid])).length > 0 ? true : undefined));
    const takeover = await fetch(`${b.url}/v1/sessions/${sid}`);
    assert.equal(takeover.status, 200);
    const takeoverSeq = ((await takeover.json()) as { seq: number }).seq;
    assert.deepEqual(await c.sql(`SELECT owner FROM $s.leases WHERE sid = $1`, [sid]), [{ owner: b.id }]);
    // and A wakes up and is sent a message directly (retried on 503, as a client does)
    a.proc.child.kill('SIGCONT');
    let stale: { status: number; forwardedBy: string | null; attempts: number } | undefined;
    for (let attempts = 1; stale === undefined || (stale.status === 503 && attempts <= 20); attempts += 1) {
      const res = await post(`${a.url}/v1/sessions/${sid}/messages`, { content: 'sent to the stale node', clientMessageId: 'stale-1' });
      await res.text();
      stale = { status: res.status, forwardedBy: res.headers.get(FORWARDED_BY), attempts };
      if (res.status === 503) await sleep(200);
    }
    // and then one to B, the owner
    const toB = await post(`${b.url}/v1/sessions/${sid}/messages`, { content: 'sent to the owner', clientMessageId: 'owner-1' });
    await toB.text();
    await sleep(500); // answers started by either node get their chance to write
    const rows = (await c.sql<{ seq: string; type: string; cid: string | null }>('SELECT seq, type, cid FROM $s.events WHERE sid = $1 ORDER BY seq', [sid])).map((r) => ({ seq: Number(r.seq), type: r.type, cid: r.cid }));
    const aHealth = (await (await fetch(`${a.url}/health`)).json()) as { node?: { sessionsLost: number } };
    result = { takeoverSeq, stale: stale!, toB: toB.status, rows, aHealth };
  }, (i): Record<string, string> => (i === 0 && !fencing ? { ARBOR_UNSAFE_DISABLE_FENCING: '1', NODE_ENV: 'test' } : {}));
  return result;
}

test('fencing across processes: a node paused past its lease commits nothing after the takeover; it steps back and forwards to the new owner', { skip: pgSkip, timeout: 120_000 }, async () => {
  const { takeoverSeq, stale, toB, rows, aHealth } = await staleOwnerScenario(true);
  // the message sent to the stale node was committed by the new owner (forwarded), never by A itself
  assert.equal(stale.status, 202, JSON.stringify(stale));
  assert.equal(stale.forwardedBy, 'node-0', 'A forwarded the request to B instead of writing');
  // the owner's history is intact: its own write succeeded, seqs 1..n, each message once
  assert.equal(toB, 202);
  assert.deepEqual(rows.map((r) => r.seq), rows.map((_, i) => i + 1));
  assert.deepEqual(rows.filter((r) => r.cid !== null).map((r) => r.cid), ['before', 'stale-1', 'owner-1']);
  assert.equal(rows.find((r) => r.cid === 'stale-1')!.seq, takeoverSeq + 1);
  // and A reports the session lost
  assert.ok((aHealth.node?.sessionsLost ?? 0) >= 1, JSON.stringify(aHealth.node));
});

test('a node paused mid-answer loses the session: the new owner marks the answer interrupted, the paused node\'s completion never commits, its next request is forwarded', { skip: pgSkip, timeout: 120_000 }, async () => {
  await withCluster(2, { ARBOR_MOCK_CHUNKS: '30', ARBOR_MOCK_CHUNK_DELAY_MS: '100' }, async (c) => {
    const [a, b] = c.nodes as [Node, Node];
    const sid = 'paused-stream';
    // given A streaming a slow answer (about 3 s)
    assert.equal((await post(`${a.url}/v1/sessions`, { id: sid })).status, 201);
    const stream = new SseClient(`${a.url}/v1/sessions/${sid}/stream`);
    await stream.next();
    await send([a], sid, 'slow');
    const firstChunk = (await stream.until((e) => e.event === 'chunk')).at(-1)!;
    stream.close();
    const answerId = (JSON.parse(firstChunk.data) as { messageId: string }).messageId;
    // when A is paused past its lease, B takes the session over with a new message, and A resumes
    a.proc.child.kill('SIGSTOP');
    const pausedAt = performance.now();
    await until('A\u2019s lease to expire', 15_000, async () => ((await c.sql('SELECT 1 FROM $s.leases WHERE sid = $1 AND expires_at <= now()', [sid])).length > 0 ? true : undefined));
    const ack = await send([b], sid, 'after-takeover');
    a.proc.child.kill('SIGCONT');
    // then B answers, and the answer A was streaming is interrupted, not completed
    await until('B\u2019s answer', 20_000, async () => ((await (await fetch(`${b.url}/v1/sessions/${sid}`)).json()) as { status: string }).status === 'idle' || undefined);
    // (A's answer would have finished 3 s after it started: wait past that before reading the table)
    await sleep(Math.max(0, 3_500 - (performance.now() - pausedAt)));
    const rows = (await c.sql<{ seq: string; type: string; data: string }>('SELECT seq, type, data FROM $s.events WHERE sid = $1 ORDER BY seq', [sid])).map((r) => ({ seq: Number(r.seq), type: r.type, data: JSON.parse(r.data) as { messageId?: string } }));
    assert.deepEqual(rows.map((r) => r.seq), rows.map((_, i) => i + 1), 'seqs 1..n');
    assert.equal(rows.some((r) => r.type === 'assistant_response_completed' && r.data.messageId === answerId), false, 'the paused node\'s answer never completed in the table');
    const interrupted = rows.findIndex((r) => r.type === 'stream_interrupted' && r.data.messageId === answerId);
    assert.ok(interrupted >= 0, `stream_interrupted for ${answerId} in ${JSON.stringify(rows.map((r) => r.type))}`);
    assert.ok(rows[interrupted]!.seq < ack.seq, 'marked interrupted by B when it took the session, before the new message');
    assert.equal(rows.filter((r) => r.type === 'assistant_response_completed').length, 1, 'only B\'s answer completed');
    // and A noticed: it reports the session lost, and forwards its next request for it to B
    const health = (await (await fetch(`${a.url}/health`)).json()) as { node: { id: string; sessionsLost: number } };
    assert.equal(health.node.id, 'node-0');
    assert.ok(health.node.sessionsLost >= 1, JSON.stringify(health.node));
    const viaA = await fetch(`${a.url}/v1/sessions/${sid}`);
    assert.equal(viaA.status, 200);
    assert.equal(viaA.headers.get(FORWARDED_BY), 'node-0');
    const view = (await viaA.json()) as { seq: number; messages: { role: string; metadata?: { interrupted?: boolean } }[] };
    assert.equal(view.seq, rows.length);
    assert.ok(view.messages.some((m) => m.metadata?.interrupted === true), 'the interrupted answer is shown as such');
  });
});

test('fencing negative control: the same scenario with fencing disabled on the paused node lets its stale write land and breaks the new owner', { skip: pgSkip, timeout: 120_000 }, async () => {
  // The outcome fencing prevents; if it stopped happening here, the test above would prove nothing.
  const { takeoverSeq, stale, toB, rows } = await staleOwnerScenario(false);
  assert.equal(stale.status, 202);
  assert.equal(stale.forwardedBy, null, 'the stale node wrote the message itself');
  assert.equal(rows.find((r) => r.cid === 'stale-1')?.seq, takeoverSeq + 1, 'the stale write landed after the takeover');
  assert.notEqual(toB, 202, "the new owner's own write collides with the stale row");
  assert.equal(rows.some((r) => r.cid === 'owner-1'), false);
});

test('a node stopped with SIGTERM hands its leases back: another node serves its sessions at once, without waiting out the lease', { skip: pgSkip, timeout: 60_000 }, async () => {
  await withCluster(2, { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '5', ARBOR_LEASE_MS: '60000' }, async (c) => {
    const [a, b] = c.nodes as [Node, Node];
    assert.equal((await post(`${a.url}/v1/sessions`, { id: 'handed-back' })).status, 201);
    const ack = await send([a], 'handed-back', 'h-1');
    // when A shuts down gracefully (a 60 s lease: only the hand-back can make B fast)
    assert.deepEqual(await a.proc.stop('SIGTERM'), { code: 0, signal: null });
    a.alive = false;
    assert.equal((await c.sql('SELECT 1 FROM $s.leases WHERE sid = $1 AND expires_at > now()', ['handed-back'])).length, 0, 'the lease was released');
    // then B serves the session straight away, with the acknowledged message
    const started = performance.now();
    const res = await fetch(`${b.url}/v1/sessions/handed-back`);
    const view = (await res.json()) as { messages: { id: string }[] };
    assert.equal(res.status, 200);
    assert.equal(res.headers.get(FORWARDED_BY), null, 'served by B itself');
    assert.ok(view.messages.some((m) => m.id === ack.messageId));
    assert.ok(performance.now() - started < 30_000);
  });
});

test('a node restarted on the port of its killed predecessor takes the predecessor\'s sessions over once their lease ran out, rather than forwarding to itself', { skip: pgSkip, timeout: 60_000 }, async () => {
  // A lease long enough to outlast the new process's start-up, so the old one still holds the session when it is asked.
  await withCluster(1, { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '5', ARBOR_LEASE_MS: '8000' }, async (c) => {
    const [a] = c.nodes as [Node];
    assert.equal((await post(`${a.url}/v1/sessions`, { id: 'reborn' })).status, 201);
    const ack = await send([a], 'reborn', 'r-1');
    a.proc.child.kill('SIGKILL');
    await a.proc.stop('SIGKILL');
    a.alive = false;
    // when a new process (another node id) listens on the same address
    const port = new URL(a.url).port;
    const again = await startServe(['--postgres', PG_URL!, '--port', port], { ARBOR_PG_SCHEMA: c.schema, ARBOR_NODE_ID: 'node-0-again', ARBOR_LEASE_MS: '8000', ARBOR_SNAPSHOT_EVERY_EVENTS: '100000' });
    c.nodes.push({ id: 'node-0-again', proc: again, url: again.url, alive: true });
    assert.equal(again.url, a.url);
    assert.equal((await c.sql('SELECT 1 FROM $s.leases WHERE sid = $1 AND expires_at > now()', ['reborn'])).length, 1, 'the dead process still holds the lease');
    // then it serves the session itself, after the old lease expired
    const res = await fetch(`${again.url}/v1/sessions/reborn`);
    const view = (await res.json()) as { messages: { id: string }[] };
    assert.equal(res.status, 200, JSON.stringify(view));
    assert.equal(res.headers.get(FORWARDED_BY), null);
    assert.ok(view.messages.some((m) => m.id === ack.messageId));
    assert.deepEqual(await c.sql('SELECT owner FROM $s.leases WHERE sid = $1', ['reborn']), [{ owner: 'node-0-again' }]);
  });
});

test('ARBOR_UNSAFE_DISABLE_FENCING is refused outside NODE_ENV=test (exit 2, before any connection)', async () => {
  const r = await runCli(['serve', '--port', '0', '--postgres', 'postgres://127.0.0.1:1/none'], { ARBOR_UNSAFE_DISABLE_FENCING: '1', NODE_ENV: 'production' });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /ARBOR_UNSAFE_DISABLE_FENCING=1 turns off PostgreSQL fencing .*refused unless NODE_ENV=test/);
});
