import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { hashToken } from '../../src/server/auth.ts';
import { SESSION_ID_PATTERN } from '../../src/index.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { SseClient } from '../helpers/sse.ts';
import { tempDir } from '../helpers/tmp.ts';

// Security of the real `arbor serve` process: ids that would be paths, tokens and tenants, body and header limits, file modes.

const ACME = 'acme-token-0123456789';
const GLOBEX = 'globex-token-9876543210';
const auth = (token: string) => ({ authorization: `Bearer ${token}` });

let server: ServeProcess;
let root: string;
let dataDir: string;
let cleanup: () => void;

before(async () => {
  ({ dir: root, cleanup } = tempDir('arbor-sec-'));
  dataDir = join(root, 'data');
  server = await startServe(['--data-dir', dataDir], { ARBOR_TOKENS: `acme:${hashToken(ACME)},globex:${hashToken(GLOBEX)}`, ARBOR_MOCK_CHUNKS: '3', ARBOR_MOCK_CHUNK_DELAY_MS: '1' });
});

after(async () => {
  await server.stop('SIGKILL');
  cleanup();
});

async function call(method: string, path: string, token: string | undefined, body?: unknown): Promise<{ status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(token === undefined ? {} : auth(token)), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? {} : JSON.parse(text) };
}

/** A raw request line, so the client cannot normalise `..` or decode anything. */
function rawRequest(method: string, rawPath: string, token: string): Promise<{ status: number; body: string }> {
  const url = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path: rawPath, headers: auth(token) }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Every path under `dir`, relative to it. */
function tree(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).map(String).sort();
}

const HOSTILE_IDS = ['../../etc/passwd', '..%2f..%2fetc', '..', '.', '/etc/passwd', 'C:\\Windows\\system32', 'a\\..\\b', 'a\u0000b', 'x'.repeat(300), 'a/b', 'sp ace', 'ümlaut', ''];

test('hostile session ids are 400 on every route, and nothing is written outside the data directory', async () => {
  // given the files there are before
  const rootBefore = readdirSync(root).sort();
  for (const id of HOSTILE_IDS.filter((i) => i !== '')) {
    const encoded = encodeURIComponent(id);
    // when a hostile id is used on every route (percent-encoded, so it reaches the server whole)
    for (const [method, path, body] of [
      ['GET', `/v1/sessions/${encoded}`, undefined],
      ['POST', `/v1/sessions/${encoded}/messages`, { content: 'x' }],
      ['POST', `/v1/sessions/${encoded}/retry`, {}],
      ['GET', `/v1/sessions/${encoded}/stream`, undefined],
    ] as const) {
      const r = await call(method, path, ACME, body);
      // then it is refused with ARBOR_INVALID_SESSION_ID (a `..` or `.` segment is resolved away by the URL parser: no route)
      if (id === '..' || id === '.') assert.ok(r.status === 400 || r.status === 404, `${method} ${path}: ${r.status}`);
      else assert.deepEqual([r.status, r.body.error?.code], [400, 'ARBOR_INVALID_SESSION_ID'], `${method} ${path}`);
    }
  }
  for (const id of HOSTILE_IDS) {
    const r = await call('POST', '/v1/sessions', ACME, { id });
    assert.deepEqual([r.status, r.body.error?.code], [400, 'ARBOR_INVALID_SESSION_ID'], `create ${JSON.stringify(id)}`);
  }
  // and raw, unnormalised paths never reach a file either
  for (const raw of ['/v1/sessions/..%2f..%2fetc%2fpasswd', '/v1/sessions/%2e%2e', '/v1/sessions/a%00b/messages', '/v1/sessions/%5c%5cserver']) {
    const r = await rawRequest('GET', raw, ACME);
    assert.ok(r.status === 400 || r.status === 404, `${raw}: ${r.status} ${r.body}`);
    assert.ok(r.body.includes('"error"'), `${raw}: a JSON error body, got ${r.body}`);
  }
  assert.deepEqual(readdirSync(root).sort(), rootBefore, 'nothing new beside the data directory');
  assert.ok(tree(dataDir).every((p) => /^(LOCK|journals|snapshots)(\/[A-Za-z0-9_.-]+)?$/.test(p)), tree(dataDir).join(', '));
});

test('random strings that are not session ids are 400 (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.string({ unit: 'binary', minLength: 0, maxLength: 200 }).filter((s) => s.isWellFormed() && !SESSION_ID_PATTERN.test(s)),
      async (id) => {
        const created = await call('POST', '/v1/sessions', ACME, { id });
        assert.deepEqual([created.status, created.body.error?.code], [400, 'ARBOR_INVALID_SESSION_ID']);
        if (id === '' || id === '.' || id === '..') return; // no such route segment
        const read = await call('GET', `/v1/sessions/${encodeURIComponent(id)}`, ACME);
        assert.deepEqual([read.status, read.body.error?.code], [400, 'ARBOR_INVALID_SESSION_ID']);
      },
    ),
    { numRuns: 150 },
  );
  assert.ok(tree(dataDir).every((p) => /^(LOCK|journals|snapshots)(\/[A-Za-z0-9_.-]+)?$/.test(p)), tree(dataDir).join(', '));
});

test('missing or wrong bearer tokens are 401 with a JSON error; /health and /metrics stay open', async () => {
  // (the hash itself is not a token: only the token hashes to it)
  const attempts: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-token' }, { authorization: `Basic ${Buffer.from(`acme:${ACME}`).toString('base64')}` }, { authorization: `Bearer ${ACME}x` }, { authorization: `Bearer ${hashToken(ACME)}` }, { authorization: 'Bearer' }];
  for (const headers of attempts) {
    for (const [method, path] of [['GET', '/v1/sessions/abc'], ['POST', '/v1/sessions'], ['GET', '/v1/sessions/abc/stream']] as const) {
      const res = await fetch(`${server.url}${path}`, { method, headers });
      const body = (await res.json()) as { error: { code: string } };
      assert.deepEqual([res.status, body.error.code], [401, 'ARBOR_UNAUTHORIZED'], `${method} ${path} with ${JSON.stringify(headers)}`);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    }
  }
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  assert.equal((await fetch(`${server.url}/metrics`)).status, 200);
});

test("another tenant's session is 404 for read, write, retry and stream; its owner sees it", async () => {
  // given a session of tenant acme with a message
  assert.equal((await call('POST', '/v1/sessions', ACME, { id: 'acme-private' })).status, 201);
  assert.equal((await call('POST', '/v1/sessions/acme-private/messages', ACME, { content: 'secret plans' })).status, 202);
  // when globex reads, writes, retries or streams it: 404, exactly like a missing session
  for (const [method, path, body] of [
    ['GET', '/v1/sessions/acme-private', undefined],
    ['POST', '/v1/sessions/acme-private/messages', { content: 'hi' }],
    ['POST', '/v1/sessions/acme-private/retry', {}],
    ['GET', '/v1/sessions/acme-private/stream', undefined],
  ] as const) {
    const r = await call(method, path, GLOBEX, body);
    assert.deepEqual([r.status, r.body.error?.code], [404, 'ARBOR_SESSION_NOT_FOUND'], `${method} ${path}`);
    const missing = await call(method, path.replace('acme-private', 'no-such-session'), GLOBEX, body);
    assert.deepEqual([missing.status, missing.body.error?.code], [404, 'ARBOR_SESSION_NOT_FOUND']);
  }
  // then nothing globex sent reached the session, and acme still reads and streams it
  const own = await call('GET', '/v1/sessions/acme-private', ACME);
  assert.equal(own.status, 200);
  assert.deepEqual((own.body.messages as { role: string; content: string }[]).filter((m) => m.role === 'user').map((m) => m.content), ['secret plans']);
  const stream = new SseClient(`${server.url}/v1/sessions/acme-private/stream`, auth(ACME));
  assert.equal((await stream.next())?.event, 'state');
  stream.close();
  // and a replay from the start never shows the tenant record
  const replay = new SseClient(`${server.url}/v1/sessions/acme-private/stream`, { ...auth(ACME), 'last-event-id': '0' });
  const replayed = await replay.until((e) => e.event === 'user_message_sent');
  replay.close();
  assert.equal(replayed.at(-1)?.id, '2');
  assert.ok(replayed.every((e) => !e.data.includes('arbor.tenant') && e.event !== 'session_config_changed'), JSON.stringify(replayed));
  // and the tenant key can neither be set nor seen
  const reserved = await call('POST', '/v1/sessions', GLOBEX, { id: 'steal', config: { 'arbor.tenant': 'acme' } });
  assert.deepEqual([reserved.status, reserved.body.error?.code], [400, 'ARBOR_INVALID_INPUT']);
  assert.deepEqual(own.body.config, {});
});

/** Peak resident memory of the server process, KiB (Linux). */
function peakRssKiB(pid: number): number {
  return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** Sends `size` bytes of spaces as the body of POST /v1/sessions; resolves with the answer. */
function upload(target: ServeProcess, size: number, chunked: boolean): Promise<{ status: number; body: string }> {
  const url = new URL(target.url);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...auth(ACME), 'content-type': 'application/json', ...(chunked ? {} : { 'content-length': String(size) }) };
    const req = http.request({ host: url.hostname, port: url.port, path: '/v1/sessions', method: 'POST', headers }, (r) => {
      let body = '';
      r.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: r.statusCode!, body }));
    });
    // The server answers, then discards the rest for a while and may close: the upload may fail with
    // EPIPE/ECONNRESET after the answer arrived. A connection closed without an answer fails the test.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    req.on('close', () => setImmediate(() => reject(new Error('the connection closed before an answer arrived'))));
    const block = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    const pump = (): void => {
      while (sent < size) {
        sent += block.length;
        if (!req.write(block)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

// Each on a fresh server, so its peak memory (VmHWM) before the upload is its start-up peak. The control
// (a limit above the body, so the server reads all of it) shows the measure sees a buffered body.
for (const [chunked, maxBodyBytes, expected] of [
  [false, 1024 * 1024, 413],
  [true, 1024 * 1024, 413],
  [true, 64 * 1024 * 1024, 400],
] as const) {
  const name = expected === 413 ? `a 10 MiB body (${chunked ? 'chunked' : 'with Content-Length'}) is 413 and the server's peak memory grows by less than the body` : 'control: with a 64 MiB limit the 10 MiB body is read (400, not JSON) and the peak grows by more than the body';
  test(name, { skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
    const own = tempDir('arbor-body-');
    const target = await startServe(['--data-dir', join(own.dir, 'data')], { ARBOR_TOKENS: `acme:${hashToken(ACME)}`, ARBOR_MAX_BODY_BYTES: String(maxBodyBytes) });
    try {
      const size = 10 * 1024 * 1024;
      const before = peakRssKiB(target.child.pid!);
      // when a client sends 10 MiB
      const res = await upload(target, size, chunked);
      // then it is refused with a JSON error
      assert.equal(res.status, expected, res.body);
      assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, expected === 413 ? 'ARBOR_BODY_TOO_LARGE' : 'ARBOR_INVALID_JSON');
      const grewKiB = peakRssKiB(target.child.pid!) - before;
      if (expected === 413) assert.ok(grewKiB < size / 1024, `peak RSS grew by ${grewKiB} KiB for a ${size / 1024} KiB body`);
      else assert.ok(grewKiB > size / 1024, `control: peak RSS grew by only ${grewKiB} KiB while reading a ${size / 1024} KiB body`);
    } finally {
      await target.stop('SIGKILL');
      own.cleanup();
    }
  });
}

test('a 20 KiB header is 431 with a JSON error', async () => {
  const res = await fetch(`${server.url}/v1/sessions/abc`, { headers: { ...auth(ACME), 'x-padding': 'a'.repeat(20 * 1024) } });
  assert.equal(res.status, 431);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'ARBOR_HEADERS_TOO_LARGE');
  // and the server goes on serving
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('files the server wrote are 0600 and directories 0700', { skip: process.platform === 'win32' && 'POSIX modes' }, async () => {
  assert.equal((await call('POST', '/v1/sessions', ACME, { id: 'modes' })).status, 201);
  assert.equal((await call('POST', '/v1/sessions/modes/messages', ACME, { content: 'x' })).status, 202);
  const paths = [dataDir, ...tree(dataDir).map((p) => join(dataDir, p))];
  assert.ok(paths.length >= 4);
  for (const p of paths) {
    const st = statSync(p);
    assert.equal(st.mode & 0o777, st.isDirectory() ? 0o700 : 0o600, `${p} is ${(st.mode & 0o777).toString(8)}`);
  }
});
