import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig } from '../src/server/config.ts';
import { startServer, type RunningServer, type StartServerOptions } from '../src/server/server.ts';
import type { StatFs } from '../src/server/health.ts';
import { createArbor, isArborError, MockProvider, NodeFileSystem, type Arbor, type SessionState } from '../src/index.ts';
import { ForwardingFileSystem } from '../src/testing.ts';
import { tempDir } from './helpers/tmp.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip } from './helpers/postgres.ts';

// /health while a restarted node recovers lazily, the recovery probe's comparison of rebuilt and
// live state, the write path's cost, and background failures in the log.
announcePostgres('test/server-recovery-health.test.ts');

type Reply = { status: number; headers: Headers; body: Record<string, any> };

async function call(s: RunningServer, method: string, path: string, body?: unknown): Promise<Reply> {
  const res = await fetch(`${s.url}${path}`, { method, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

/** A disk that is always 40% full, so that this machine's own disk cannot fail /health. */
const halfEmptyDisk: StatFs = async () => ({ blocks: 1000, bavail: 600, bsize: 4096 });

function start(dataDir: string, options: StartServerOptions = {}): Promise<RunningServer> {
  const config = loadConfig({ env: { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides: { dataDir, port: 0, logLevel: 'silent' } });
  return startServer(config, { ...options, health: { statfs: halfEmptyDisk, probeEveryMs: 0, ...options.health } });
}

/**
 * Holds the background recovery pass at its first step: it reads the
 * whole-table checkpoint file first, which nothing else reads, so holding
 * that read holds the pass (loads on first access go on).
 */
class HeldPassFileSystem extends ForwardingFileSystem {
  readonly #held: Promise<void>;
  release!: () => void;
  constructor() {
    super(new NodeFileSystem());
    this.#held = new Promise((r) => (this.release = r));
  }
  override async readFile(path: string): Promise<Uint8Array> {
    if (path.endsWith('table.ckpt')) await this.#held;
    return super.readFile(path);
  }
}

test('a node restarting on 3000 sessions without snapshots: /health is 200 through the lazy window, pending falls to 0 and completedAt is set', async () => {
  const { dir, cleanup } = tempDir('arbor-lazy-health-');
  const dataDir = join(dir, 'data');
  try {
    // given a data directory with 3000 sessions, journal only
    const writer = await createArbor({ dataDir, enableSnapshots: false, tableCheckpoint: false });
    const ids = Array.from({ length: 3000 }, (_, i) => `lazy-${i}`);
    for (let i = 0; i < ids.length; i += 500) {
      await Promise.all(ids.slice(i, i + 500).map((id, k) => writer.session(id).changeConfig('topic', `t${i + k}`)));
    }
    await writer.close();
    // when a server starts on it, with its background recovery pass held
    const fs = new HeldPassFileSystem();
    const server = await start(dataDir, { arborOverrides: { fs } });
    try {
      // then while the pass is held, /health is 200 and says how many sessions wait
      const held: Reply[] = [];
      for (let i = 0; i < 5; i += 1) held.push(await call(server, 'GET', '/health'));
      for (const r of held) {
        assert.equal(r.status, 200, JSON.stringify(r.body.checks));
        assert.equal(r.body.checks.recovery.status, 'ok');
        assert.ok(r.body.checks.recovery.pending > 0, `pending ${r.body.checks.recovery.pending}`);
        assert.equal(r.body.checks.recovery.completedAt, null);
      }
      // and the probe really rebuilt and compared a session (recovering it on access)
      assert.match(held[0]!.body.checks.recovery.message, /equal to the state in memory/);
      // when the pass runs, /health stays 200 all along, until every session is recovered
      fs.release();
      let last = held.at(-1)!;
      for (let i = 0; i < 2000 && last.body.checks.recovery.completedAt === null; i += 1) {
        last = await call(server, 'GET', '/health');
        assert.equal(last.status, 200, JSON.stringify(last.body.checks));
      }
      assert.equal(last.body.checks.recovery.pending, 0);
      assert.equal(typeof last.body.checks.recovery.completedAt, 'number');
      assert.equal(last.body.status, 'ok');
      // and the sessions are all there
      assert.equal((await call(server, 'GET', '/v1/sessions/lazy-2999')).body.config.topic, 't2999');
    } finally {
      // A held pass would hold close() too (it waits for the pass to stop).
      fs.release();
      await server.close();
    }
  } finally {
    cleanup();
  }
});

test('probeRecovery: a session rebuilt with a state other than the live one is a mismatch naming where; /health is 503', async () => {
  const { dir, cleanup } = tempDir('arbor-probe-mismatch-');
  try {
    const server = await start(join(dir, 'data'));
    try {
      assert.equal((await call(server, 'POST', '/v1/sessions', { id: 'drift' })).status, 201);
      assert.equal((await call(server, 'POST', '/v1/sessions/drift/messages', { content: 'hello' })).status, 202);
      await server.arbor.session('drift').idle();
      assert.equal((await server.arbor.probeRecovery('drift')).outcome, 'match');
      // given a backend whose rebuild of the session differs from what was committed, at the same seq
      const backend = server.arbor.backend;
      const load = backend.loadSession.bind(backend);
      backend.loadSession = async (sid) => {
        const r = await load(sid);
        if (r === undefined) return r;
        const state: SessionState = { ...r.state, messages: r.state.messages.map((m, i) => (i === 0 ? { ...m, content: 'something else' } : m)) };
        return { ...r, state };
      };
      // when the probe runs
      const probe = await server.arbor.probeRecovery('drift');
      // then it says what differs, and where
      const seq = server.arbor.session('drift').state.seq;
      assert.deepEqual([probe.outcome, probe.path, probe.seq, probe.liveSeq], ['mismatch', 'state.messages[0].content', seq, seq]);
      // and /health fails on it
      const health = await call(server, 'GET', '/health');
      assert.deepEqual([health.status, health.body.checks.recovery.status, health.body.checks.recovery.sessionId, health.body.checks.recovery.differsAt], [503, 'fail', 'drift', 'state.messages[0].content']);
    } finally {
      await server.close();
    }
  } finally {
    cleanup();
  }
});

test('probeRecovery: states rebuilt from a snapshot plus journal records equal the live ones (answers, config, commands, a cut answer), before and after a restart', async () => {
  const { dir, cleanup } = tempDir('arbor-probe-match-');
  const dataDir = join(dir, 'data');
  const options = { dataDir, llm: new MockProvider({ chunks: 3, chunkDelayMs: 0 }), commands: { add: ({ args }: { args: readonly unknown[] }) => Number(args[0]) + Number(args[1]) } };
  let arbor: Arbor | undefined;
  try {
    // given sessions with answers, config, commands and a snapshot in the middle of their history
    arbor = await createArbor(options);
    for (const id of ['p1', 'p2']) {
      const s = arbor.session(id);
      await s.sendMessage({ content: `first ${id}` });
      await s.idle();
      await s.changeConfig('model', { name: 'x', temperature: 0.5, stop: ['\n'] });
      await arbor.passivate(id);
      await s.executeCommand('add', [1, 2]);
      await s.sendMessage({ content: `second ${id}`, metadata: { tag: id } });
      await s.idle();
    }
    // then each rebuilt state equals the live one
    for (const id of ['p1', 'p2']) assert.deepEqual(await arbor.probeRecovery(id).then((p) => [p.outcome, p.seq]), ['match', arbor.session(id).state.seq], id);
    await arbor.close();
    // and a session whose answer a shutdown cut (the next start repairs it with a notice)
    arbor = await createArbor({ ...options, llm: new MockProvider({ chunks: 50, chunkDelayMs: 20 }) });
    const cut = arbor.session('p3');
    await cut.sendMessage({ content: 'a long answer please' });
    await new Promise<void>((resolve) => cut.subscribe((u) => u.kind === 'chunk' && resolve()));
    await arbor.close();
    // then after a restart (sessions loaded on access and by the pass, with their repairs) they are equal too
    arbor = await createArbor(options);
    for (const id of ['p1', 'p2', 'p3']) assert.equal((await arbor.probeRecovery(id)).outcome, 'match', id);
    assert.equal(arbor.session('p3').state.messages.at(-1)?.metadata?.interrupted, true);
    await arbor.whenRecovered();
    assert.equal((await arbor.probeRecovery('p2')).outcome, 'match');
    // and a session nothing was written for is no difference
    assert.deepEqual(await arbor.probeRecovery('never').then((p) => [p.outcome, p.seq]), ['match', 0]);
  } finally {
    await arbor?.close();
    cleanup();
  }
});

test('a write to a session in memory neither builds the health report nor loads the session before its command, and reads the disk once per writeGateMaxAgeMs', async () => {
  const { dir, cleanup } = tempDir('arbor-write-path-');
  let statfsCalls = 0;
  const countingDisk: StatFs = async (path) => {
    statfsCalls += 1;
    return halfEmptyDisk(path);
  };
  try {
    const server = await start(join(dir, 'data'), { health: { statfs: countingDisk, writeGateMaxAgeMs: 3_600_000 } });
    try {
      assert.equal((await call(server, 'POST', '/v1/sessions', { id: 'w' })).status, 201);
      // given counters on the runtime's health report and on the session's load
      const arbor = server.arbor;
      const session = arbor.session('w');
      const health = arbor.health.bind(arbor);
      const load = session.load.bind(session);
      let healthCalls = 0;
      let loadCalls = 0;
      arbor.health = () => {
        healthCalls += 1;
        return health();
      };
      session.load = () => {
        loadCalls += 1;
        return load();
      };
      statfsCalls = 0;
      // when messages are sent
      for (let i = 0; i < 10; i += 1) {
        const r = await call(server, 'POST', '/v1/sessions/w/messages', { content: `m${i}` });
        assert.equal(r.status, 202, JSON.stringify(r.body));
        await session.idle();
      }
      // then none of them built the health report, loaded the session first, or read the disk
      assert.deepEqual({ healthCalls, loadCalls, statfsCalls }, { healthCalls: 0, loadCalls: 0, statfsCalls: 0 });
      assert.equal(arbor.writable().ok, true);
    } finally {
      await server.close();
    }
  } finally {
    cleanup();
  }
});

test('a background failure the runtime publishes (a crashed command handler) reaches the log with its code and session', async () => {
  const { dir, cleanup } = tempDir('arbor-error-log-');
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  try {
    const commands = {
      boom: () => {
        throw new Error('the handler broke');
      },
    };
    const server = await start(join(dir, 'data'), { logger: pino({ level: 'info' }, sink), arborOverrides: { commands } });
    try {
      // when a command handler crashes
      await assert.rejects(server.arbor.session('crashy').executeCommand('boom'), (err: unknown) => isArborError(err) && err.code === 'ARBOR_HANDLER_CRASHED');
    } finally {
      await server.close();
    }
    // then the log has it at error, with the code and the session
    const logged = lines.find((l) => l.code === 'ARBOR_HANDLER_CRASHED');
    assert.deepEqual([logged?.level, logged?.source, logged?.sessionId], [50, 'handler', 'crashy']);
  } finally {
    cleanup();
  }
});

test('ownership: the PostgreSQL backend says which node this is; the file store is owned by no one; neither is probed wrongly', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('own');
  dropSchemaAtEnd(schema);
  const { dir, cleanup } = tempDir('arbor-ownership-');
  const pgArbor = await createArbor({ postgres: { connectionString: PG_URL!, schema, nodeId: 'node-x', nodeAddress: 'http://node-x.invalid:4000', leaseMs: 2500 } });
  const fileArbor = await createArbor({ dataDir: join(dir, 'data') });
  try {
    assert.deepEqual(pgArbor.backend.ownership, { nodeId: 'node-x', nodeAddress: 'http://node-x.invalid:4000', leaseMs: 2500 });
    assert.equal(fileArbor.backend.ownership, undefined);
    // a rebuild on PostgreSQL would take the lease from the live copy: refused, with the field named
    await assert.rejects(pgArbor.probeRecovery('s'), (err: unknown) => isArborError(err) && err.code === 'ARBOR_INVALID_INPUT' && err.details.field === 'backend');
  } finally {
    await pgArbor.close();
    await fileArbor.close();
    cleanup();
  }
});
