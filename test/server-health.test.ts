import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig } from '../src/server/config.ts';
import { startServer, type RunningServer, type StartServerOptions } from '../src/server/server.ts';
import { diskStatus, diskUsagePercent, type StatFs } from '../src/server/health.ts';
import { createArbor, MockProvider, NodeFileSystem, type FileHandle } from '../src/index.ts';
import { ForwardingFileHandle, ForwardingFileSystem } from '../src/testing.ts';
import { hashToken } from '../src/server/auth.ts';
import { tempDir } from './helpers/tmp.ts';
import { SseClient } from './helpers/sse.ts';

// The server in this process (real HTTP on loopback), with a disk and a filesystem the test controls.

async function withServer(env: Record<string, string>, options: StartServerOptions, fn: (s: RunningServer, dataDir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-health-');
  const dataDir = join(dir, 'data');
  const config = loadConfig({ env: { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0', ...env }, overrides: { dataDir, port: 0, logLevel: 'silent' } });
  const server = await startServer(config, { ...options, health: { probeEveryMs: 0, writeGateMaxAgeMs: 0, ...options.health } });
  try {
    await fn(server, dataDir);
  } finally {
    await server.close();
    cleanup();
  }
}

async function call(s: RunningServer, method: string, path: string, body?: unknown): Promise<{ status: number; headers: Headers; body: Record<string, any> }> {
  const res = await fetch(`${s.url}${path}`, { method, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

/** A disk whose fullness the test sets (percent used). */
function fakeDisk(initialUsedPercent: number): { statfs: StatFs; set(p: number): void } {
  let used = initialUsedPercent;
  return {
    statfs: async () => ({ blocks: 1000, bavail: 1000 - used * 10, bsize: 4096 }),
    set: (p) => (used = p),
  };
}

test('disk rule of seed §8.3: above 85% warn, above 95% fail (pure)', () => {
  for (const [pct, expected] of [[10, 'ok'], [85, 'ok'], [85.1, 'warn'], [95, 'warn'], [95.1, 'fail'], [100, 'fail']] as const) {
    assert.equal(diskStatus(pct, 85, 95), expected, `${pct}%`);
  }
  // as df counts it: reserved blocks (free but not available) count as neither used nor usable
  assert.equal(diskUsagePercent({ blocks: 100, bfree: 10, bavail: 5 }), (90 / 95) * 100);
});

test('/health: 200 with every check when healthy, warn stays 200, a failing disk is 503', async () => {
  const disk = fakeDisk(40);
  await withServer({}, { health: { statfs: disk.statfs } }, async (s) => {
    assert.equal((await call(s, 'POST', '/v1/sessions', { id: 'h1' })).status, 201);
    const ok = await call(s, 'GET', '/health');
    assert.equal(ok.status, 200);
    assert.equal(ok.body.status, 'ok');
    assert.deepEqual(Object.keys(ok.body.checks).sort(), ['diskSpace', 'exposure', 'hotStorage', 'journalWriter', 'recovery', 'tools']);
    assert.equal(ok.body.checks.hotStorage.sessions, 1);
    assert.equal(typeof ok.body.checks.journalWriter.lastFlushAgeMs, 'number');
    assert.match(ok.body.checks.recovery.message, /session h1 rebuilt from disk at seq 1/);
    disk.set(90);
    const warn = await call(s, 'GET', '/health');
    assert.deepEqual([warn.status, warn.body.status, warn.body.checks.diskSpace.status], [200, 'warn', 'warn']);
    disk.set(97);
    const fail = await call(s, 'GET', '/health');
    assert.deepEqual([fail.status, fail.body.status, fail.body.checks.diskSpace.status], [503, 'fail', 'fail']);
    assert.match(fail.body.checks.diskSpace.message, /97% used/);
  });
});

test('a full disk: reads go on, writes are 507 with Retry-After, and writing resumes when space returns, without a restart', async () => {
  const disk = fakeDisk(40);
  await withServer({ ARBOR_RETRY_AFTER_SECONDS: '7' }, { health: { statfs: disk.statfs } }, async (s) => {
    assert.equal((await call(s, 'POST', '/v1/sessions', { id: 'full' })).status, 201);
    // given the disk past the fail threshold
    disk.set(99);
    // then writes are refused with a code and Retry-After, and reads are served
    for (const [method, path, body] of [['POST', '/v1/sessions/full/messages', { content: 'x' }], ['POST', '/v1/sessions', { id: 'other' }], ['POST', '/v1/sessions/full/retry', {}]] as const) {
      const r = await call(s, method, path, body);
      assert.deepEqual([r.status, r.body.error.code, r.headers.get('retry-after')], [507, 'ARBOR_DISK_FULL', '7'], `${method} ${path}`);
    }
    assert.equal((await call(s, 'GET', '/v1/sessions/full')).status, 200);
    assert.equal((await call(s, 'GET', '/health')).status, 503);
    // when space returns
    disk.set(50);
    // then the same server writes again
    const sent = await call(s, 'POST', '/v1/sessions/full/messages', { content: 'back' });
    assert.equal(sent.status, 202);
    assert.equal((await call(s, 'GET', '/health')).status, 200);
  });
});

/** A filesystem whose journal writes and syncs fail with `code` while `failing` is set. */
class FailingFileSystem extends ForwardingFileSystem {
  failing: string | undefined;
  constructor() {
    super(new NodeFileSystem());
  }
  protected override wrapHandle(handle: FileHandle, path: string): FileHandle {
    const fs = this;
    if (!path.includes('journals')) return handle;
    return new (class extends ForwardingFileHandle {
      override write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
        if (fs.failing !== undefined) return Promise.reject(Object.assign(new Error(`${fs.failing}: injected`), { code: fs.failing }));
        return super.write(buffer, offset, length, position);
      }
      override datasync(): Promise<void> {
        if (fs.failing !== undefined) return Promise.reject(Object.assign(new Error(`${fs.failing}: injected`), { code: fs.failing }));
        return super.datasync();
      }
    })(handle);
  }
}

for (const [errno, status, code] of [['ENOSPC', 507, 'ARBOR_DISK_FULL'], ['EIO', 503, 'ARBOR_IO_ERROR']] as const) {
  test(`a journal write failing with ${errno}: ${status} with Retry-After, refused while the disk fails, /health 503, reads served; resumes in place once it works`, async () => {
    const fs = new FailingFileSystem();
    await withServer({ ARBOR_RETRY_AFTER_SECONDS: '1' }, { arborOverrides: { fs } }, async (s) => {
      assert.equal((await call(s, 'POST', '/v1/sessions', { id: 'io' })).status, 201);
      // given the disk starts failing
      fs.failing = errno;
      // when a message is sent
      const first = await call(s, 'POST', '/v1/sessions/io/messages', { content: 'lost?' });
      // then it is refused (never acknowledged) with a coded error and Retry-After
      assert.deepEqual([first.status, first.body.error.code], [status, code]);
      assert.equal(first.headers.get('retry-after'), '1');
      // and while the disk still fails, later writes are refused too (a failed sync is never retried and trusted)
      const second = await call(s, 'POST', '/v1/sessions/io/messages', { content: 'still failing' });
      assert.equal(second.status, status);
      assert.ok(second.headers.get('retry-after'));
      const health = await call(s, 'GET', '/health');
      assert.deepEqual([health.status, health.body.checks.journalWriter.status, health.body.checks.journalWriter.state], [503, 'fail', 'failed']);
      assert.equal(health.body.checks.journalWriter.failure.errno, errno);
      // and reads still work, showing only what was acknowledged
      const view = await call(s, 'GET', '/v1/sessions/io');
      assert.equal(view.status, 200);
      assert.deepEqual(view.body.messages, []);
      // when the disk works again, the same server reopens its journal and takes writes (after Retry-After at most)
      fs.failing = undefined;
      let after: Awaited<ReturnType<typeof call>> | undefined;
      for (let i = 0; i < 40 && after?.status !== 202; i += 1) {
        if (after !== undefined) await new Promise((r) => setTimeout(r, 250));
        after = await call(s, 'POST', '/v1/sessions/io/messages', { content: 'after' });
      }
      assert.equal(after?.status, 202, JSON.stringify(after?.body));
      assert.equal((await call(s, 'GET', '/health')).status, 200);
    });
  });
}

test('the recovery probe reads the disk for real: journal bytes damaged under the server make /health 503', async () => {
  await withServer({}, {}, async (s, dataDir) => {
    assert.equal((await call(s, 'POST', '/v1/sessions', { id: 'probe', config: { a: 1 } })).status, 201);
    assert.equal((await call(s, 'GET', '/health')).body.checks.recovery.status, 'ok');
    // given the journal's records overwritten behind the server's back (the header is left alone)
    for (const name of readdirSync(join(dataDir, 'journals'))) {
      const file = join(dataDir, 'journals', name);
      const size = statSync(file).size;
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.alloc(size - 64, 0x58), 0, size - 64, 64);
      closeSync(fd);
    }
    // then the probe cannot rebuild the session, and says which
    const health = await call(s, 'GET', '/health');
    assert.equal(health.status, 503);
    assert.equal(health.body.checks.recovery.status, 'fail');
    assert.equal(health.body.checks.recovery.sessionId, 'probe');
  });
});

test('errors are JSON with stable codes: bad JSON, unknown route, unknown body field, nothing to retry, an existing id', async () => {
  await withServer({}, {}, async (s) => {
    const badJson = await fetch(`${s.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"id":' });
    assert.deepEqual([badJson.status, ((await badJson.json()) as any).error.code], [400, 'ARBOR_INVALID_JSON']);
    assert.deepEqual([(await call(s, 'GET', '/nope')).status, (await call(s, 'GET', '/nope')).body.error.code], [404, 'ARBOR_NOT_FOUND']);
    const unknown = await call(s, 'POST', '/v1/sessions', { id: 'e1', colour: 'red' });
    assert.deepEqual([unknown.status, unknown.body.error.code], [400, 'ARBOR_INVALID_INPUT']);
    assert.match(unknown.body.error.message, /colour/);
    assert.equal((await call(s, 'POST', '/v1/sessions', { id: 'e1' })).status, 201);
    const again = await call(s, 'POST', '/v1/sessions', { id: 'e1' });
    assert.deepEqual([again.status, again.body.error.code], [409, 'ARBOR_SESSION_EXISTS']);
    const racing = await Promise.all(Array.from({ length: 8 }, () => call(s, 'POST', '/v1/sessions', { id: 'race', config: { k: 1 } })));
    assert.deepEqual(racing.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409, 409, 409], 'one concurrent create wins');
    const retry = await call(s, 'POST', '/v1/sessions/e1/retry', {});
    assert.deepEqual([retry.status, retry.body.error.code], [409, 'ARBOR_NOTHING_TO_RETRY']);
    const empty = await call(s, 'POST', '/v1/sessions/e1/messages', { content: '' });
    assert.deepEqual([empty.status, empty.body.error.code], [400, 'ARBOR_INVALID_INPUT']);
    const badResume = await fetch(`${s.url}/v1/sessions/e1/stream`, { headers: { 'last-event-id': '../x' } });
    assert.deepEqual([badResume.status, ((await badResume.json()) as any).error.code], [400, 'ARBOR_INVALID_INPUT']);
  });
});

test('logs: one line per request at debug with route and status; a refused write at warn', async () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const disk = fakeDisk(10);
  await withServer({}, { logger: pino({ level: 'debug' }, sink), health: { statfs: disk.statfs } }, async (s) => {
    await call(s, 'POST', '/v1/sessions', { id: 'logged' });
    await call(s, 'GET', '/v1/sessions/logged');
    disk.set(99);
    await call(s, 'POST', '/v1/sessions/logged/messages', { content: 'x' });
  });
  const requests = lines.filter((l) => l.msg === 'request');
  assert.deepEqual(requests.map((l) => [l.method, l.route, l.status]), [['POST', '/v1/sessions', 201], ['GET', '/v1/sessions/:id', 200], ['POST', '/v1/sessions/:id/messages', 507]]);
  assert.ok(requests.every((l) => l.level === 20), 'request lines are at debug');
  const refused = lines.find((l) => l.code === 'ARBOR_DISK_FULL');
  assert.equal(refused?.level, 40, 'a refused write is logged at warn');
});

test('many open streams: each gets the answer, and no listener-limit warning', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    await withServer({}, {}, async (s) => {
      await call(s, 'POST', '/v1/sessions', { id: 'crowd' });
      const clients = Array.from({ length: 20 }, () => new SseClient(`${s.url}/v1/sessions/crowd/stream`));
      for (const c of clients) assert.equal((await c.next())?.event, 'state');
      await call(s, 'POST', '/v1/sessions/crowd/messages', { content: 'to all' });
      for (const c of clients) {
        const got = await c.until((e) => e.event === 'assistant_response_completed');
        assert.equal(got.filter((e) => e.event === 'chunk').length, 2);
        c.close();
      }
    });
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(warnings.map((w) => w.name), []);
});

test('a journal directory on another, full disk: /health names it and writes are refused', async () => {
  const { dir, cleanup } = tempDir('arbor-journal-elsewhere-');
  try {
    const journalDir = join(dir, 'journals');
    // given the data disk at 10% and the journal's disk at 99%
    const statfs: StatFs = async (path) => ({ blocks: 1000, bavail: path === journalDir ? 10 : 900, bsize: 4096 });
    await withServer({ ARBOR_JOURNAL_DIR: journalDir }, { health: { statfs } }, async (s) => {
      const health = await call(s, 'GET', '/health');
      assert.deepEqual([health.status, health.body.checks.diskSpace.dir, health.body.checks.diskSpace.usedPercent], [503, journalDir, 99]);
      const refused = await call(s, 'POST', '/v1/sessions', { id: 'nope' });
      assert.deepEqual([refused.status, refused.body.error.code], [507, 'ARBOR_DISK_FULL']);
    });
  } finally {
    cleanup();
  }
});

test('an open server also serves sessions the library wrote without it', async () => {
  const { dir, cleanup } = tempDir('arbor-open-');
  try {
    const dataDir = join(dir, 'data');
    // given a session written through createArbor, with no tenant record
    const arbor = await createArbor({ dataDir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    await arbor.session('from-library').sendMessage({ content: 'written without the server' });
    await arbor.session('from-library').idle();
    await arbor.close();
    // when an open server (no tokens) starts on the same directory
    const server = await startServer(loadConfig({ env: {}, overrides: { dataDir, port: 0, logLevel: 'silent' } }));
    try {
      // then it serves the session
      const view = await call(server, 'GET', '/v1/sessions/from-library');
      assert.equal(view.status, 200);
      assert.equal(view.body.messages[0].content, 'written without the server');
    } finally {
      await server.close();
    }
    // and a server with tokens serves it to no tenant
    const locked = await startServer(loadConfig({ env: { ARBOR_TOKENS: `acme:${hashToken('t')}` }, overrides: { dataDir, port: 0, logLevel: 'silent' } }));
    try {
      const res = await fetch(`${locked.url}/v1/sessions/from-library`, { headers: { authorization: 'Bearer t' } });
      assert.equal(res.status, 404);
    } finally {
      await locked.close();
    }
  } finally {
    cleanup();
  }
});
