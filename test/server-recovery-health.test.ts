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
import { announcePostgres, dropSchema, freshSchemaName, PG_URL, pgSkip } from './helpers/postgres.ts';

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

test('ownership: the PostgreSQL backend says which node this is; the file store is owned by no one', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('own');
  t.after(() => dropSchema(schema));
  const { dir, cleanup } = tempDir('arbor-ownership-');
  const pgArbor = await createArbor({ postgres: { connectionString: PG_URL!, schema, nodeId: 'node-x', nodeAddress: 'http://node-x.invalid:4000', leaseMs: 2500 } });
  const fileArbor = await createArbor({ dataDir: join(dir, 'data') });
  try {
    assert.deepEqual(pgArbor.backend.ownership, { nodeId: 'node-x', nodeAddress: 'http://node-x.invalid:4000', leaseMs: 2500 });
    assert.equal(fileArbor.backend.ownership, undefined);
  } finally {
    await pgArbor.close();
    await fileArbor.close();
    cleanup();
  }
});
