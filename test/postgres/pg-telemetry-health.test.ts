import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArbor, MockProvider, subscribeTelemetry, type ErrorMessage, type JournalWriteMessage, type LeaseMessage, type RecoveryMessage, type SnapshotMessage } from '../../src/index.ts';
import { HealthChecker } from '../../src/server.ts';
import { PgBackend } from '../../src/postgres/pg-backend.ts';
import { hooks } from '../crash/power-loss-harness.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip, testPool } from '../helpers/postgres.ts';

// PostgreSQL publishes the telemetry the file store does (batches, loads, snapshots, errors) plus leases,
// and its health checks are real: the pool, lease renewal lag, and a read-only recovery probe.
announcePostgres('test/postgres/pg-telemetry-health.test.ts');

test('PostgreSQL publishes batches, loads, snapshots, leases taken, released and lost, and errors', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('tel');
  dropSchemaAtEnd(schema);
  const seen = { writes: [] as JournalWriteMessage[], loads: [] as RecoveryMessage[], snapshots: [] as SnapshotMessage[], leases: [] as LeaseMessage[], errors: [] as ErrorMessage[] };
  const stop = subscribeTelemetry({ journalWrite: (m) => seen.writes.push(m), recovery: (m) => seen.loads.push(m), snapshot: (m) => seen.snapshots.push(m), lease: (m) => seen.leases.push(m), error: (m) => seen.errors.push(m) });
  t.after(stop);
  const arbor = await createArbor({ llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), postgres: { connectionString: PG_URL!, schema, nodeId: 'tel-1', leaseMs: 1000, renewEveryMs: 100 } });
  try {
    // when a session is written, snapshotted (passivated: its lease released) and loaded again
    const s = arbor.session('tel');
    await s.sendMessage({ content: 'hi' });
    await s.idle();
    assert.equal(await arbor.passivate('tel'), true);
    await s.load();
    const mine = (sid: string) => seen.leases.filter((l) => l.sessionId === sid).map((l) => l.event);
    // then each batch, the snapshot, both loads and the leases were published
    assert.ok(seen.writes.length >= 1 && seen.writes.every((w) => w.batchSize >= 1 && w.bytes > 0 && w.durationMs >= 0));
    assert.ok(seen.writes.reduce((n, w) => n + w.batchSize, 0) >= 3);
    assert.deepEqual(seen.snapshots.map((m) => [m.sessionId, m.seq > 0, m.bytes > 0]), [['tel', true, true]]);
    assert.deepEqual(seen.loads.filter((m) => m.sessionId === 'tel').map((m) => [m.kind, m.trigger]), [['new', 'access'], ['snapshot', 'access']]);
    assert.deepEqual(mine('tel'), ['taken', 'released', 'taken']);
    // and when another node takes the session over (its lease made to expire), the loss is published
    const pool = testPool(1);
    try {
      await pool.query(`UPDATE "${schema}".leases SET expires_at = now() WHERE sid = 'tel'`);
    } finally {
      await pool.end();
    }
    const other = await PgBackend.open({ connectionString: PG_URL!, schema, hooks, nodeId: 'tel-2', poolSize: 3 });
    try {
      await other.loadSession('tel');
      for (let i = 0; i < 100 && !mine('tel').includes('lost'); i += 1) await new Promise((r) => setTimeout(r, 20));
      const lost = seen.leases.find((l) => l.sessionId === 'tel' && l.event === 'lost' && l.nodeId === 'tel-1');
      assert.ok(lost?.reason !== undefined, JSON.stringify(seen.leases));
      // and a write of the lost session is fenced, which the runtime reports as an error
      await assert.rejects(s.changeConfig('x', 1));
    } finally {
      await other.close();
    }
  } finally {
    await arbor.close();
  }
});

test('PostgreSQL health: pool round trip and lease renewal lag are real checks, and held sessions are probed read-only', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('hlth');
  dropSchemaAtEnd(schema);
  const pool = testPool(3);
  let ended = false;
  t.after(() => (ended ? undefined : pool.end()));
  const arbor = await createArbor({ llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), postgres: { pool, schema, nodeId: 'h-1', leaseMs: 2000, renewEveryMs: 100 } });
  try {
    const health = new HealthChecker(arbor, { dataDir: '.', diskWarnPercent: 85, diskFailPercent: 95, probeEveryMs: 1 });
    const s = arbor.session('held');
    await s.sendMessage({ content: 'hello' });
    await s.idle();
    // when the database answers and leases are renewed
    const ok = await health.check();
    // (on a loaded machine a renewal may come late enough to warn: only 'fail' is excluded)
    assert.notEqual(ok.status, 'fail', JSON.stringify(ok.checks));
    assert.notEqual(ok.checks.database?.status, 'fail');
    assert.equal(typeof ok.checks.database?.roundTripMs, 'number');
    assert.deepEqual(Object.keys(ok.checks.database?.pool as object).sort(), ['idle', 'max', 'total', 'waiting']);
    assert.notEqual(ok.checks.leases?.status, 'fail');
    assert.equal(ok.checks.leases?.heldSessions, 1);
    // and the recovery probe rebuilt the held session from the database and compared it with memory
    assert.deepEqual([ok.checks.recovery.status, ok.checks.recovery.sessionId], ['ok', 'held']);
    assert.match(ok.checks.recovery.message, /rebuilt from postgres/);
    // when the database goes away: the round trip fails at once, the lease renewal lag grows past leaseMs
    await pool.end();
    ended = true;
    await new Promise((r) => setTimeout(r, 2300));
    const down = await health.check();
    assert.equal(down.status, 'fail');
    assert.equal(down.checks.database?.status, 'fail');
    assert.equal(down.checks.leases?.status, 'fail');
    assert.ok(Number(down.checks.leases?.renewalLagMs) > 2000);
  } finally {
    await arbor.close().catch(() => undefined);
  }
});
