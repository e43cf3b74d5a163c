/**
 * PostgreSQL-only behaviour: leases, takeover, fencing (with its negative
 * control), stepping back when a lease is not renewed in time, group commit,
 * back-pressure, retention in the tables, and concurrent migrations.
 *
 * Lease timing uses short leases and polls with generous deadlines; nothing
 * asserts how long anything took.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { PgBackend, type PgBackendInternals } from '../../src/postgres/pg-backend.ts';
import type { PgBackendOptions } from '../../src/postgres/options.ts';
import { migrate, SCHEMA_VERSION } from '../../src/postgres/migrations.ts';
import { isArborError } from '../../src/core/errors.ts';
import { subscribeTelemetry, type ErrorMessage } from '../../src/telemetry/channels.ts';
import { hooks, type ChatState } from '../crash/power-loss-harness.ts';
import { PG_URL, announcePostgres, dropSchema, freshSchemaName, pgSkip, testPool } from '../helpers/postgres.ts';
import { rejectsWith } from '../helpers/assertions.ts';

announcePostgres('test/postgres/pg-backend.test.ts');

const ev = (sid: string, n: number, extra: Record<string, unknown> = {}) => ({ sid, type: 'user_message_sent', data: { n }, ...extra });


async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A schema of its own, a helper pool on it, and every backend opened through `node()` closed after. */
async function withSchema(body: (ctx: { schema: string; sql: (text: string, params?: unknown[]) => Promise<any[]>; node: (name: string, o?: Partial<PgBackendOptions<ChatState>>, internals?: PgBackendInternals) => Promise<PgBackend<ChatState>> }) => Promise<void>): Promise<void> {
  const schema = freshSchemaName('p');
  const pool = testPool(3);
  const opened: PgBackend<ChatState>[] = [];
  try {
    await body({
      schema,
      sql: async (text, params) => (await pool.query(text.replaceAll('$s.', `"${schema}".`), params)).rows,
      node: async (name, o = {}, internals = {}) => {
        const b = await PgBackend.open<ChatState>({ connectionString: PG_URL!, schema, hooks, nodeId: name, poolSize: 3, ...o }, internals);
        opened.push(b);
        return b;
      },
    });
  } finally {
    for (const b of opened) await b.close();
    await pool.end();
    await dropSchema(schema);
  }
}

const pgTest = (name: string, fn: () => Promise<void>) => test(name, { skip: pgSkip, timeout: 90_000 }, fn);

pgTest('a session held by a live node: loadSession elsewhere rejects ARBOR_NOT_OWNER naming the owner and its address', async () => {
  await withSchema(async ({ node }) => {
    const a = await node('node-a', { nodeAddress: 'http://10.0.0.1:4000' });
    const b = await node('node-b');
    await a.loadSession('s');
    await a.append(ev('s', 1));
    // when another node asks for it
    const { details } = await rejectsWith(b.loadSession('s'), 'ARBOR_NOT_OWNER');
    // then it learns who owns it and where, and may not write
    assert.equal(details.sessionId, 's');
    assert.equal(details.owner, 'node-a');
    assert.equal(details.ownerAddress, 'http://10.0.0.1:4000');
    assert.equal(details.epoch, 1);
    assert.ok(typeof details.expiresInMs === 'number' && details.expiresInMs > 0);
    await rejectsWith(b.append(ev('s', 2)), 'ARBOR_NOT_OWNER');
    assert.deepEqual((await a.read('s')).map((r) => r.seq), [1]);
  });
});

pgTest('a killed owner: its lease expires and another node takes the session over with epoch + 1 and every acknowledged event', async () => {
  await withSchema(async ({ schema, sql, node }) => {
    // given a child node that took the session, had 5 appends acknowledged, then was SIGKILLed
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./lease-child.ts', import.meta.url)), PG_URL!, schema, 'chat-1', '5', '600'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    await eventually('the child to acknowledge its appends', () => out.includes('acknowledged'), 60_000);
    child.kill('SIGKILL');
    await once(child, 'exit');
    // (B's own lease is long: only the dead node's should expire here, however loaded the machine.)
    const b = await node('node-b');
    // while its lease runs, the dead node still owns it
    let firstRefusal: Record<string, unknown> | undefined;
    await eventually('the lease to expire and the takeover to succeed', async () => {
      try {
        await b.loadSession('chat-1');
        return true;
      } catch (err) {
        if (!isArborError(err, 'ARBOR_NOT_OWNER')) throw err;
        firstRefusal ??= err.details as Record<string, unknown>;
        return false;
      }
    });
    if (firstRefusal !== undefined) assert.equal(firstRefusal.owner, 'child-node');
    // then the new owner has epoch 2 and all five events
    const [lease] = await sql('SELECT owner, epoch FROM $s.leases WHERE sid = $1', ['chat-1']);
    assert.deepEqual({ owner: lease.owner, epoch: Number(lease.epoch) }, { owner: 'node-b', epoch: 2 });
    const loaded = await b.loadSession('chat-1');
    assert.deepEqual(loaded?.state.ns, [1, 2, 3, 4, 5]);
    assert.equal((await b.append(ev('chat-1', 6))).seq, 6);
  });
});

/**
 * The fencing scenario: node A holds s1 and s2 with a long lease, then stalls
 * (simulated by expiring its lease row, as the database would see a paused
 * node); node B takes s1 over. A, unaware, appends to s1 and s2 in one batch.
 */
async function staleWriterScenario(internals: PgBackendInternals): Promise<{ staleResult: PromiseSettledResult<unknown>; s2Result: PromiseSettledResult<unknown>; rows: { seq: number; n: number }[]; lost: string[]; bSeq: PromiseSettledResult<number> }> {
  let result!: Awaited<ReturnType<typeof staleWriterScenario>>;
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { leaseMs: 60_000, renewEveryMs: 30_000 }, internals);
    const lost: string[] = [];
    a.onSessionLost((sid) => lost.push(sid));
    await a.loadSession('s1');
    await a.loadSession('s2');
    await a.append(ev('s1', 1));
    await sql(`UPDATE $s.leases SET expires_at = now() - interval '1 second' WHERE sid = 's1'`);
    const b = await node('node-b');
    assert.deepEqual((await b.loadSession('s1'))?.state.ns, [1]);
    // when the stale owner writes
    const [staleResult, s2Result] = await Promise.allSettled([a.append(ev('s1', 666)), a.append(ev('s2', 1))]);
    const bSeq = await Promise.allSettled([b.append(ev('s1', 2)).then((r) => r.seq)]);
    const rows = (await sql('SELECT seq, data FROM $s.events WHERE sid = $1 ORDER BY seq', ['s1'])).map((r) => ({ seq: Number(r.seq), n: JSON.parse(r.data).n as number }));
    result = { staleResult, s2Result, rows, lost, bSeq: bSeq[0]! };
  });
  return result;
}

pgTest('fencing: a node whose lease was taken over cannot commit; its append rejects ARBOR_FENCED, the row is not in the table, other sessions of the batch commit', async () => {
  const { staleResult, s2Result, rows, lost, bSeq } = await staleWriterScenario({});
  assert.equal(staleResult.status, 'rejected');
  assert.ok(isArborError((staleResult as PromiseRejectedResult).reason, 'ARBOR_FENCED'), String((staleResult as PromiseRejectedResult).reason));
  assert.equal(s2Result.status, 'fulfilled', 'the other session in the same batch committed');
  assert.deepEqual(lost, ['s1']);
  // the new owner's history is intact: only its own write follows the first event
  assert.deepEqual(bSeq, { status: 'fulfilled', value: 2 });
  assert.deepEqual(rows, [{ seq: 1, n: 1 }, { seq: 2, n: 2 }]);
});

pgTest('fencing negative control: with the fence check disabled the same stale write commits and the new owner is broken', async () => {
  // This is the outcome the fence prevents; if it stopped happening here, the scenario above would prove nothing.
  const { staleResult, rows, bSeq } = await staleWriterScenario({ unsafeDisableFencing: true });
  assert.equal(staleResult.status, 'fulfilled', 'the stale node believed its write committed');
  assert.deepEqual(rows, [{ seq: 1, n: 1 }, { seq: 2, n: 666 }], 'the stale row is in the table');
  assert.equal(bSeq.status, 'rejected', "the owner's own seq 2 collides with the stale row");
});

pgTest('a takeover racing an in-flight write waits for its COMMIT and then sees its row: an acknowledged event is never lost', async () => {
  await withSchema(async ({ schema, sql, node }) => {
    const a = await node('node-a', { leaseMs: 60_000, renewEveryMs: 30_000 });
    const b = await node('node-b');
    await a.loadSession('s');
    await a.append(ev('s', 1));
    // given A's lease will end (in the database) in 3 s, and A's next insert will stall on a row lock
    await sql(`UPDATE $s.leases SET expires_at = now() + interval '3 seconds' WHERE sid = 's'`);
    const blocker = testPool(1);
    const client = await blocker.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO "${schema}".events (sid, seq, ts, type, v, data) VALUES ('s', 2, 0, 't', 1, '{}')`);
      const waiting = (app: string) => async () => (await sql(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [app])).length > 0;
      // when A's write is in flight (its lease row share-locked, the insert waiting)
      const write = a.append(ev('s', 2));
      await eventually("A's write to wait on the row lock", waiting('arbor node-a'));
      // and, once the lease has expired, B tries to take the session over
      await eventually('the lease to expire in the database', async () => (await sql(`SELECT 1 FROM $s.leases WHERE sid = 's' AND expires_at <= now()`)).length > 0);
      const takeover = b.loadSession('s');
      await eventually("B's takeover to wait for A's transaction", waiting('arbor node-b'));
      await client.query('ROLLBACK');
      // then A's write commits and is acknowledged, and B, which waited for it, has it
      assert.equal((await write).seq, 2);
      assert.deepEqual((await takeover)?.state.ns, [1, 2]);
      assert.equal((await b.append(ev('s', 3))).seq, 3);
    } finally {
      client.release();
      await blocker.end();
    }
  });
});

pgTest('a fenced node stays fenced: later appends and snapshots of the lost session reject ARBOR_FENCED until it is loaded again', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { leaseMs: 60_000, renewEveryMs: 30_000 });
    await a.loadSession('s');
    await a.append(ev('s', 1));
    await sql(`UPDATE $s.leases SET expires_at = now() - interval '1 second' WHERE sid = 's'`);
    const b = await node('node-b');
    await b.loadSession('s');
    await rejectsWith(a.append(ev('s', 2)), 'ARBOR_FENCED');
    await rejectsWith(a.append(ev('s', 3)), 'ARBOR_FENCED');
    await rejectsWith(a.snapshot('s', { ns: [1] }, 1), 'ARBOR_FENCED');
    assert.equal(await a.snapshotSeq('s'), 0);
    // releasing a lost session forgets the loss (and touches no lease): it is simply not held any more
    await a.release('s');
    await rejectsWith(a.append(ev('s', 4)), 'ARBOR_NOT_OWNER');
    // once B lets go, A may take it back, with a new epoch and B's writes
    await b.append(ev('s', 20));
    await b.release('s');
    assert.deepEqual((await a.loadSession('s'))?.state.ns, [1, 20]);
    assert.equal((await a.append(ev('s', 3))).seq, 3);
    const [lease] = await sql(`SELECT owner, epoch FROM $s.leases WHERE sid = 's'`);
    assert.deepEqual({ owner: lease.owner, epoch: Number(lease.epoch) }, { owner: 'node-a', epoch: 3 });
  });
});

pgTest('a lease the database did not renew (it expired) makes the node step back: onSessionLost, then ARBOR_FENCED', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { leaseMs: 5000, renewEveryMs: 100 });
    const lost: [string, string][] = [];
    a.onSessionLost((sid, reason) => lost.push([sid, reason]));
    await a.loadSession('s');
    await a.loadSession('keep');
    await a.append(ev('s', 1));
    // given the database sees the lease as expired (as after a pause longer than the lease)
    await sql(`UPDATE $s.leases SET expires_at = now() - interval '1 second' WHERE sid = 's'`);
    // then the next renewal finds it gone and the node lets the session go
    await eventually('the session to be reported lost', () => lost.length > 0);
    assert.equal(lost[0]![0], 's');
    await rejectsWith(a.append(ev('s', 2)), 'ARBOR_FENCED');
    // while the other session's lease keeps being renewed
    await a.append(ev('keep', 1));
    assert.deepEqual(lost.map(([sid]) => sid), ['s']);
    const b = await node('node-b');
    assert.deepEqual((await b.loadSession('s'))?.state.ns, [1]);
  });
});

pgTest('renewals that fail (database unreachable) make the node step back when its leases would end; the failures and a throwing listener reach the error channel', async () => {
  await withSchema(async ({ schema }) => {
    // given a node whose pool can be cut off from the database
    const pool = testPool(3);
    let cutOff = false;
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    (pool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) => (cutOff ? Promise.reject(new Error('connect ECONNREFUSED (simulated)')) : query(...args));
    const a = await PgBackend.open<ChatState>({ pool, schema, hooks, nodeId: 'node-a', leaseMs: 1000, renewEveryMs: 100 });
    const errors: ErrorMessage[] = [];
    const unsubscribe = subscribeTelemetry({ error: (m) => errors.push(m) });
    try {
      const lost: [string, string][] = [];
      a.onSessionLost(() => {
        throw new Error('a listener with a bug');
      });
      a.onSessionLost((sid, reason) => lost.push([sid, reason]));
      await a.loadSession('s');
      await a.append(ev('s', 1));
      // when every renewal fails from now on
      cutOff = true;
      // then the session is let go once its lease would have ended, without the database saying so
      await eventually('the session to be dropped', () => lost.length > 0);
      assert.deepEqual(lost, [['s', 'lease expired before it was renewed']]);
      await rejectsWith(a.append(ev('s', 2)), 'ARBOR_FENCED');
      cutOff = false;
      // and each failed renewal was reported, as was the listener that threw (the next listener still heard)
      assert.ok(errors.some((m) => m.source === 'postgres' && m.code === 'ARBOR_IO_ERROR'), JSON.stringify(errors));
      assert.ok(errors.some((m) => m.source === 'postgres' && m.code === 'ARBOR_HANDLER_CRASHED' && m.sessionId === 's'), JSON.stringify(errors));
    } finally {
      unsubscribe();
      await a.close();
      await pool.end();
    }
  });
});

pgTest('a load slower than the lease keeps its lease: it is renewed while the session is rebuilt', async () => {
  await withSchema(async ({ schema }) => {
    // given reads of a session's events that take twice the lease
    const pool = testPool(3);
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    let slow = false;
    (pool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (...args) => {
      if (slow && typeof args[0] === 'string' && args[0].startsWith('SELECT seq, ts, type')) await new Promise((r) => setTimeout(r, 2000));
      return query(...args);
    };
    const a = await PgBackend.open<ChatState>({ pool, schema, hooks, nodeId: 'node-a', leaseMs: 1000, renewEveryMs: 100 });
    try {
      await a.loadSession('s');
      await a.append(ev('s', 1));
      await a.release('s');
      // when the session is loaded again, slowly
      slow = true;
      const loaded = await a.loadSession('s');
      slow = false;
      // then it is held, writable, and nobody else could have taken it meanwhile
      assert.deepEqual(loaded?.state.ns, [1]);
      assert.equal((await a.append(ev('s', 2))).seq, 2);
    } finally {
      await a.close();
      await pool.end();
    }
  });
});

pgTest('a node paused past its lease steps back before writing, even before any renewal ran', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { leaseMs: 1000, renewEveryMs: 100 });
    const lost: string[] = [];
    a.onSessionLost((sid) => lost.push(sid));
    await a.loadSession('s');
    await a.append(ev('s', 1));
    // when the event loop is blocked for longer than the lease (a GC pause, a stopped VM)
    const until = performance.now() + 2500;
    while (performance.now() < until) {
      // busy: no timer, no renewal can run
    }
    // then the very next append is refused without reaching the database
    await rejectsWith(a.append(ev('s', 2)), 'ARBOR_FENCED');
    assert.deepEqual(lost, ['s']);
    assert.deepEqual((await sql('SELECT seq FROM $s.events')).map((r) => Number(r.seq)), [1]);
    // and loading it again takes a new lease
    assert.deepEqual((await a.loadSession('s'))?.state.ns, [1]);
    assert.equal((await a.append(ev('s', 2))).seq, 2);
  });
});

pgTest('release and close give leases up: another node takes them at once, with epoch + 1', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { leaseMs: 60_000, renewEveryMs: 30_000 });
    const b = await node('node-b', { leaseMs: 60_000, renewEveryMs: 30_000 });
    for (const sid of ['r', 'c1', 'c2']) {
      await a.loadSession(sid);
      await a.append(ev(sid, 1));
    }
    await a.release('r');
    await rejectsWith(a.append(ev('r', 2)), 'ARBOR_NOT_OWNER');
    assert.deepEqual((await b.loadSession('r'))?.state.ns, [1]);
    await rejectsWith(b.loadSession('c1'), 'ARBOR_NOT_OWNER');
    await a.close();
    for (const sid of ['c1', 'c2']) assert.deepEqual((await b.loadSession(sid))?.state.ns, [1]);
    const leases = await sql('SELECT sid, owner, epoch FROM $s.leases ORDER BY sid');
    assert.deepEqual(leases.map((l) => [l.sid, l.owner, Number(l.epoch)]), [['c1', 'node-b', 2], ['c2', 'node-b', 2], ['r', 'node-b', 2]]);
  });
});

pgTest('group commit: appends queued while a transaction waits form one next transaction; nothing is acknowledged before COMMIT', async () => {
  await withSchema(async ({ schema, node }) => {
    const a = await node('node-a', { leaseMs: 60_000, renewEveryMs: 30_000 });
    const sids = Array.from({ length: 30 }, (_, i) => `g${i}`);
    for (const sid of sids) await a.loadSession(sid);
    const before = a.stats().flushes;
    // given another transaction holding g0's lease row, so the flush's share lock waits
    const blocker = testPool(1);
    const client = await blocker.connect();
    try {
      await client.query('BEGIN');
      await client.query(`SELECT 1 FROM "${schema}".leases WHERE sid = 'g0' FOR UPDATE`);
      let acked = 0;
      // when 300 appends arrive in one tick, and 60 more while their transaction waits
      const first = sids.flatMap((sid) => Array.from({ length: 10 }, (_, n) => a.append(ev(sid, n)).then(() => (acked += 1))));
      await eventually('the first flush to be in flight', () => a.stats().queueDepth === 0);
      const second = sids.flatMap((sid) => [a.append(ev(sid, 100)), a.append(ev(sid, 101))].map((p) => p.then(() => (acked += 1))));
      for (let i = 0; i < 20; i += 1) await new Promise((r) => setTimeout(r, 5));
      assert.equal(acked, 0, 'nothing acknowledged while the transaction has not committed');
      assert.equal(a.stats().queueDepth, 60);
      await client.query('COMMIT');
      await Promise.all([...first, ...second]);
    } finally {
      client.release();
      await blocker.end();
    }
    // then two transactions carried all 360
    assert.equal(a.stats().flushes - before, 2);
    for (const sid of sids) assert.deepEqual((await a.read(sid)).map((r) => r.seq), Array.from({ length: 12 }, (_, i) => i + 1));
  });
});

pgTest('a full queue rejects at once with ARBOR_QUEUE_FULL and writes nothing for the refused append', async () => {
  await withSchema(async ({ node }) => {
    const a = await node('node-a', { maxQueueRecords: 5 });
    await a.loadSession('s');
    const accepted = Array.from({ length: 5 }, (_, n) => a.append(ev('s', n)));
    const { details } = await rejectsWith(a.append(ev('s', 99)), 'ARBOR_QUEUE_FULL');
    assert.equal(details.sessionId, 's');
    assert.deepEqual((await Promise.all(accepted)).map((r) => r.seq), [1, 2, 3, 4, 5]);
    assert.equal((await a.append(ev('s', 6))).seq, 6);
    assert.deepEqual((await a.read('s')).map((r) => (r.data as { n: number }).n), [0, 1, 2, 3, 4, 6]);
  });
});

pgTest('retention in the tables: at most maxSnapshotsPerSession rows, events up to the oldest kept snapshot deleted', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a', { maxSnapshotsPerSession: 3 });
    await a.loadSession('s');
    const ns: number[] = [];
    for (let n = 1; n <= 12; n += 1) {
      await a.append(ev('s', n));
      ns.push(n);
      if (n % 2 === 0) await a.snapshot('s', { ns: [...ns] }, n);
    }
    assert.deepEqual((await sql(`SELECT seq FROM $s.snapshots ORDER BY seq`)).map((r) => Number(r.seq)), [8, 10, 12]);
    assert.deepEqual((await sql(`SELECT seq FROM $s.events ORDER BY seq`)).map((r) => Number(r.seq)), [9, 10, 11, 12]);
    // a damaged newest snapshot falls back to the previous one plus the events after it
    await sql(`UPDATE $s.snapshots SET body = overlay(body placing '\\x00'::bytea from 60 for 1) WHERE seq = 12`);
    await a.release('s');
    const loaded = await a.loadSession('s');
    assert.deepEqual(loaded?.state.ns, ns);
    assert.equal(loaded?.report.snapshotSeq, 10);
    assert.equal(loaded?.report.damagedSnapshots.length, 1);
    assert.equal(loaded?.status, 'recovered');
  });
});

pgTest('a write that fails in the database rejects ARBOR_IO_ERROR for its whole batch, writes nothing, and drops those sessions for a reload', async () => {
  await withSchema(async ({ sql, node }) => {
    const a = await node('node-a');
    const lost: string[] = [];
    a.onSessionLost((sid) => lost.push(sid));
    for (const sid of ['s', 't']) {
      await a.loadSession(sid);
      await a.append(ev(sid, 1));
    }
    // given a table that refuses one of the rows of the next batch
    await sql(`ALTER TABLE $s.events ADD CONSTRAINT no_666 CHECK (data NOT LIKE '%666%')`);
    // when s and t append in one transaction and it fails
    const [bad, other] = await Promise.allSettled([a.append(ev('s', 666)), a.append(ev('t', 2))]);
    // then neither is acknowledged, nothing is written, and both sessions are dropped
    for (const r of [bad, other]) {
      assert.equal(r.status, 'rejected');
      assert.ok(isArborError((r as PromiseRejectedResult).reason, 'ARBOR_IO_ERROR'));
    }
    assert.equal(((bad as PromiseRejectedResult).reason.details as Record<string, unknown>).seq, 2);
    assert.deepEqual(lost.sort(), ['s', 't']);
    await rejectsWith(a.append(ev('t', 3)), 'ARBOR_FENCED');
    assert.deepEqual((await sql('SELECT sid, seq FROM $s.events ORDER BY sid, seq')).map((r) => `${r.sid}${r.seq}`), ['s1', 't1']);
    // and a reload learns what committed and carries on
    assert.equal((await a.loadSession('t'))?.seq, 1);
    assert.equal((await a.append(ev('t', 2))).seq, 2);
  });
});

pgTest('a clientMessageId older than the dedupe window is still answered as a duplicate while its row exists', async () => {
  await withSchema(async ({ node }) => {
    // given a window of 1, so 'x' is forgotten in memory once 'y' is appended
    const a = await node('node-a', { dedupeWindow: 1 });
    const lost: string[] = [];
    a.onSessionLost((sid) => lost.push(sid));
    await a.loadSession('s');
    await a.loadSession('other');
    await a.append(ev('s', 1, { clientMessageId: 'x' }));
    await a.append(ev('s', 2, { clientMessageId: 'y' }));
    // when 'x' comes again, in a batch with another session's append
    const [again, other] = await Promise.all([a.append(ev('s', 3, { clientMessageId: 'x' })), a.append(ev('other', 1))]);
    // then the unique index caught it: the original is answered, the other session's row committed
    assert.deepEqual([again.seq, again.duplicate], [1, true]);
    assert.equal(other.seq, 1);
    assert.deepEqual(lost, []);
    assert.equal((await a.append(ev('s', 3))).seq, 3);
    assert.deepEqual((await a.read('s')).map((r) => (r.data as { n: number }).n), [1, 2, 3]);
    // and the same after a reload, whose window holds only 'y'
    await a.release('s');
    await a.loadSession('s');
    assert.deepEqual(await a.append(ev('s', 9, { clientMessageId: 'x' })).then((r) => [r.seq, r.duplicate]), [1, true]);
  });
});

pgTest('migrations: four pools migrating one schema at once apply each version exactly once', async () => {
  const schema = freshSchemaName('m');
  const pools = Array.from({ length: 4 }, () => testPool(2));
  try {
    // when four processes' pools start at the same moment on a database without the schema
    const results = await Promise.all(pools.map((p) => migrate(p, schema)));
    // then exactly one applied the migrations, the rest found them done
    assert.deepEqual(results.map((r) => r.applied.length).sort(), [0, 0, 0, SCHEMA_VERSION]);
    const { rows } = await pools[0]!.query(`SELECT version FROM "${schema}".schema_migrations ORDER BY version`);
    assert.deepEqual(rows.map((r) => r.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
    // and backends open on it without migrating again
    const b = await PgBackend.open({ pool: pools[1]!, schema, hooks, nodeId: 'after' });
    await b.loadSession('s');
    assert.equal((await b.append(ev('s', 1))).seq, 1);
    await b.close();
    assert.equal((await pools[1]!.query('SELECT 1 AS one')).rows[0].one, 1, 'a caller-owned pool stays open after close');
  } finally {
    for (const p of pools) await p.end();
    await dropSchema(schema);
  }
});

pgTest('a schema migrated by a newer build is refused', async () => {
  await withSchema(async ({ schema, sql, node }) => {
    await (await node('first')).close();
    await sql(`INSERT INTO $s.schema_migrations (version, name) VALUES (${SCHEMA_VERSION + 1}, 'from the future')`);
    await assert.rejects(PgBackend.open({ connectionString: PG_URL!, schema, hooks }), /newer than this build/);
  });
});

test('PgBackend options are validated with the option named', async () => {
  await assert.rejects(PgBackend.open({ hooks } as never), /connectionString and pool/);
  for (const [o, name] of [
    [{ leaseMs: 10 }, 'leaseMs'],
    [{ leaseMs: 1000, renewEveryMs: 1000 }, 'renewEveryMs'],
    [{ schema: 'Robert"); DROP' }, 'schema'],
    [{ maxSnapshotsPerSession: 0 }, 'maxSnapshotsPerSession'],
  ] as const) {
    await assert.rejects(PgBackend.open({ connectionString: 'postgres://x', hooks, ...o }), new RegExp(name));
  }
});

pgTest('renewals and flushes of one node lock lease rows in one order: a busy node with frequent renewals never deadlocks', async () => {
  await withSchema(async ({ node }) => {
    // given one node renewing its 200 leases every 10 ms while it appends with 256 in flight
    const a = await node('busy', { leaseMs: 60_000, renewEveryMs: 10 });
    const sids = Array.from({ length: 200 }, (_, i) => `d${i}`);
    for (const sid of sids) await a.loadSession(sid);
    const failures: unknown[] = [];
    const inFlight = new Set<Promise<unknown>>();
    let n = 0;
    const until = Date.now() + 3_000;
    while (Date.now() < until && failures.length === 0) {
      while (inFlight.size < 256) {
        const p = a.append(ev(sids[n % sids.length]!, n)).catch((err: unknown) => void failures.push(err));
        n += 1;
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    // then no transaction failed (before lock ordering, PostgreSQL reported "deadlock detected" here)
    assert.deepEqual(failures.map(String).slice(0, 3), []);
    assert.ok(n > 1000, `only ${n} appends were made`);
  });
});
