import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig, type ArborConfig } from '../src/server/config.ts';
import { startServer, type RunningServer, type StartServerOptions } from '../src/server/server.ts';
import { hashToken } from '../src/server/auth.ts';
import { tempDir } from './helpers/tmp.ts';

// Browser-safe HTTP (docs/http-safety.md), through the real server in this process on
// loopback: JSON bodies only, CORS for the allowed origins, the Host check, the
// non-loopback warning, slow clients cut off with 408, a client's abort logged at
// debug, security headers.

type LogLine = Record<string, unknown> & { level: number; msg: string };

interface Harness {
  server: RunningServer;
  url: string;
  port: number;
  logs: LogLine[];
}

async function withServer(overrides: Partial<Record<keyof ArborConfig, unknown>>, fn: (h: Harness) => Promise<void>, options: StartServerOptions = {}): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-browser-');
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') logs.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const config = loadConfig({ env: { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides: { dataDir: join(dir, 'data'), port: 0, ...overrides } });
  const server = await startServer(config, { logger: pino({ level: 'debug' }, sink), health: { probeEveryMs: 0 }, ...options });
  const port = Number(new URL(server.url).port);
  try {
    // Whatever the server listens on, the test reaches it on loopback.
    await fn({ server, url: `http://127.0.0.1:${port}`, port, logs });
  } finally {
    await server.close();
    cleanup();
  }
}

const JSON_TYPE = { 'content-type': 'application/json' };

async function errorCode(res: Response): Promise<string | undefined> {
  return ((await res.json()) as { error?: { code?: string } }).error?.code;
}

/** A request with headers fetch would not send as given (Host). */
function rawRequest(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A raw TCP client: what the server wrote, and whether it closed the connection. */
class RawClient {
  readonly socket: Socket;
  received = '';
  readonly closed: Promise<void>;
  #connected: Promise<void>;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setEncoding('utf8').on('data', (d: string) => (this.received += d));
    this.socket.on('error', () => undefined);
    this.#connected = new Promise((r) => this.socket.once('connect', () => r()));
    this.closed = new Promise((r) => this.socket.once('close', () => r()));
  }

  async write(text: string): Promise<void> {
    await this.#connected;
    if (!this.socket.destroyed) this.socket.write(text);
  }

  /** Writes `text` one byte at a time every `everyMs` until the server closes the connection (or the text runs out). */
  async trickle(text: string, everyMs: number): Promise<void> {
    await this.#connected;
    let closed = false;
    void this.closed.then(() => (closed = true));
    for (const ch of text) {
      if (closed || this.socket.destroyed) return;
      this.socket.write(ch);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  /** Resolves once `predicate(received)` holds, or rejects when the connection closes before. */
  async until(predicate: (received: string) => boolean, what: string): Promise<void> {
    for (;;) {
      if (predicate(this.received)) return;
      if (this.socket.destroyed) throw new Error(`connection closed before ${what}; received ${JSON.stringify(this.received)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function statusOf(raw: string): number | undefined {
  const m = /^HTTP\/1\.1 ([0-9]{3}) /.exec(raw);
  return m === null ? undefined : Number(m[1]);
}

function bodyOf(raw: string): unknown {
  return JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
}

/** Waits (polling; no timing is asserted) until `predicate` holds. */
async function eventually(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('writes with a body must be JSON: text/plain and no Content-Type are 415 and write nothing; a charset is fine; body-less writes need none', async () => {
  await withServer({}, async ({ url }) => {
    // given a text/plain post (what any web page may send without a preflight)
    const plain = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"id":"p1"}' });
    // then it is refused with a code naming the type it sent
    assert.equal(plain.status, 415);
    const body = (await plain.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'ARBOR_UNSUPPORTED_MEDIA_TYPE');
    assert.match(body.error.message, /text\/plain/);
    // and nothing was created
    assert.equal((await fetch(`${url}/v1/sessions/p1`)).status, 404);
    // a form post, and a body without any Content-Type, likewise
    const form = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'id=p2' });
    assert.deepEqual([form.status, await errorCode(form)], [415, 'ARBOR_UNSUPPORTED_MEDIA_TYPE']);
    const none = await rawRequest(Number(new URL(url).port), 'POST', '/v1/sessions', { 'content-length': '11' }, '{"id":"p3"}');
    assert.deepEqual([none.status, (JSON.parse(none.body) as { error: { code: string } }).error.code], [415, 'ARBOR_UNSUPPORTED_MEDIA_TYPE']);
    // and the chat route too
    const chat = await fetch(`${url}/v1/chat`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ id: 'c1', trigger: 'submit-message', messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }] }) });
    assert.deepEqual([chat.status, await errorCode(chat)], [415, 'ARBOR_UNSUPPORTED_MEDIA_TYPE']);
    assert.equal((await fetch(`${url}/v1/chat/c1/messages`)).status, 404);
    // JSON with a charset parameter (any case) is taken
    const ok = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' }, body: '{"id":"j1"}' });
    assert.equal(ok.status, 201);
    // and writes without a body need no Content-Type: retry (409: nothing to retry), stop, delete
    const retry = await fetch(`${url}/v1/sessions/j1/retry`, { method: 'POST' });
    assert.deepEqual([retry.status, await errorCode(retry)], [409, 'ARBOR_NOTHING_TO_RETRY']);
    assert.equal((await fetch(`${url}/v1/chat/j1/stop`, { method: 'POST' })).status, 200);
    assert.equal((await fetch(`${url}/v1/sessions/j1`, { method: 'DELETE' })).status, 204);
  });
});

test('CORS: an allowed origin gets its preflight (204, methods, Authorization/Content-Type/Last-Event-ID) and its answers; another origin gets no CORS header, and its writes are refused', async () => {
  const app = 'https://app.example';
  await withServer({ corsOrigins: [app] }, async ({ url }) => {
    // a preflight from the allowed origin
    const pre = await fetch(`${url}/v1/chat`, { method: 'OPTIONS', headers: { origin: app, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), app);
    assert.match(pre.headers.get('access-control-allow-methods')!, /POST/);
    assert.match(pre.headers.get('access-control-allow-methods')!, /DELETE/);
    const allowHeaders = pre.headers.get('access-control-allow-headers')!.toLowerCase().split(',');
    for (const h of ['authorization', 'content-type', 'last-event-id']) assert.ok(allowHeaders.includes(h), `${h} is allowed: ${allowHeaders.join(',')}`);
    // its chat post is answered with the origin allowed and the AI SDK's stream header readable
    const chat = await fetch(`${url}/v1/chat`, { method: 'POST', headers: { ...JSON_TYPE, origin: app }, body: JSON.stringify({ id: 'cors-chat', trigger: 'submit-message', messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }] }) });
    assert.equal(chat.status, 200);
    await chat.text();
    assert.equal(chat.headers.get('access-control-allow-origin'), app);
    assert.ok(chat.headers.get('access-control-expose-headers')!.toLowerCase().split(',').includes('x-vercel-ai-ui-message-stream'));
    assert.equal(chat.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
    assert.match(chat.headers.get('vary') ?? '', /Origin/);

    // another origin: its preflight is refused, with no CORS header
    const evil = 'https://evil.example';
    const evilPre = await fetch(`${url}/v1/chat`, { method: 'OPTIONS', headers: { origin: evil, 'access-control-request-method': 'POST' } });
    assert.deepEqual([evilPre.status, await errorCode(evilPre)], [403, 'ARBOR_ORIGIN_NOT_ALLOWED']);
    assert.equal(evilPre.headers.get('access-control-allow-origin'), null);
    // its reads are answered without CORS headers (its page cannot read them)
    const read = await fetch(`${url}/v1/sessions`, { headers: { origin: evil } });
    assert.equal(read.status, 200);
    for (const [name] of read.headers) assert.ok(!name.startsWith('access-control-'), `no CORS header for another origin: ${name}`);
    // and its writes, even those a page may send without a preflight (no body, or JSON it cannot label), are refused before they run
    const retry = await fetch(`${url}/v1/sessions/cors-chat/retry`, { method: 'POST', headers: { origin: evil } });
    assert.deepEqual([retry.status, await errorCode(retry)], [403, 'ARBOR_ORIGIN_NOT_ALLOWED']);
    const create = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { ...JSON_TYPE, origin: evil }, body: '{"id":"evil"}' });
    assert.deepEqual([create.status, await errorCode(create)], [403, 'ARBOR_ORIGIN_NOT_ALLOWED']);
    assert.equal((await fetch(`${url}/v1/sessions/evil`)).status, 404);
    // a page this server served (same origin) writes as before
    const same = await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { ...JSON_TYPE, origin: url }, body: '{"id":"same"}' });
    assert.equal(same.status, 201);
  });
});

test('CORS with tokens: the preflight needs no token; a 401 reaches the allowed page with its CORS headers, so it can ask for a token', async () => {
  const app = 'http://localhost:5173';
  await withServer({ corsOrigins: [app], tokens: [{ tenant: 'acme', sha256: hashToken('t-acme') }] }, async ({ url }) => {
    const pre = await fetch(`${url}/v1/sessions`, { method: 'OPTIONS', headers: { origin: app, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    assert.deepEqual([pre.status, pre.headers.get('access-control-allow-origin')], [204, app]);
    const denied = await fetch(`${url}/v1/sessions`, { headers: { origin: app } });
    assert.deepEqual([denied.status, await errorCode(denied), denied.headers.get('access-control-allow-origin')], [401, 'ARBOR_UNAUTHORIZED', app]);
    const allowed = await fetch(`${url}/v1/sessions`, { headers: { origin: app, authorization: 'Bearer t-acme' } });
    assert.deepEqual([allowed.status, allowed.headers.get('access-control-allow-origin')], [200, app]);
  });
});

test('CORS by default: same origin only; no origin is allowed, so no CORS header is ever sent', async () => {
  await withServer({}, async ({ url }) => {
    const pre = await fetch(`${url}/v1/sessions`, { method: 'OPTIONS', headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST' } });
    assert.deepEqual([pre.status, await errorCode(pre)], [403, 'ARBOR_ORIGIN_NOT_ALLOWED']);
    const read = await fetch(`${url}/health`, { headers: { origin: 'http://localhost:3000' } });
    assert.equal(read.headers.get('access-control-allow-origin'), null);
  });
});

test('Host check: evil.example is refused (403 ARBOR_HOST_NOT_ALLOWED); loopback names, IP addresses and allowedHosts are served', async () => {
  await withServer({ allowedHosts: ['arbor.internal', '.svc.example'] }, async ({ port }) => {
    // given a request naming another host (DNS rebinding: a page at evil.example whose name now points here)
    const evil = await rawRequest(port, 'GET', '/v1/sessions', { host: 'evil.example' });
    assert.equal(evil.status, 403);
    assert.equal((JSON.parse(evil.body) as { error: { code: string } }).error.code, 'ARBOR_HOST_NOT_ALLOWED');
    assert.equal((await rawRequest(port, 'GET', '/health', { host: `evil.example:${port}` })).status, 403);
    assert.equal((await rawRequest(port, 'POST', '/v1/sessions', { host: 'evil.example', ...JSON_TYPE }, '{"id":"rebound"}')).status, 403);
    assert.equal((await rawRequest(port, 'GET', '/v1/sessions/rebound', { host: 'localhost' })).status, 404, 'nothing was created');
    // then the names this server answers to are served, with or without the port
    for (const host of ['localhost', `localhost:${port}`, '127.0.0.1', `127.0.0.1:${port}`, '[::1]', `[::1]:${port}`, 'LOCALHOST.', '10.1.2.3:8080', 'arbor.internal', `arbor.internal:${port}`, 'api.svc.example', 'svc.example']) {
      assert.equal((await rawRequest(port, 'GET', '/health', { host })).status, 200, `Host ${host}`);
    }
    // and look-alikes are not
    for (const host of ['localhost.evil.example', 'arbor.internal.evil.example', 'evilsvc.example', 'a b']) {
      assert.equal((await rawRequest(port, 'GET', '/health', { host })).status, host === 'a b' ? 400 : 403, `Host ${host}`);
    }
  });
  // allowedHosts "*" turns the check off (with a warning)
  await withServer({ allowedHosts: ['*'] }, async ({ port, logs }) => {
    assert.equal((await rawRequest(port, 'GET', '/health', { host: 'evil.example' })).status, 200);
    assert.ok(logs.some((l) => l.level === 40 && /allowedHosts/.test(l.msg)), 'a warning at start');
  });
});

test('listening beyond loopback with no tokens: a warning at start and checks.exposure warn in /health; with tokens, or on loopback, none', async () => {
  // given a server on every address and no tokens
  await withServer({ host: '0.0.0.0' }, async ({ url, logs }) => {
    const warning = logs.find((l) => l.level === 40 && /no tokens/.test(l.msg));
    assert.ok(warning !== undefined, `a warning at start: ${JSON.stringify(logs.map((l) => l.msg))}`);
    const health = (await (await fetch(`${url}/health`)).json()) as { status: string; checks: { exposure: { status: string; message: string } } };
    assert.equal(health.checks.exposure.status, 'warn');
    assert.match(health.checks.exposure.message, /no tokens/);
    assert.equal(health.status, 'warn');
    // and on every address it answers to the machine's name too (what it prints as its address to other nodes)
    assert.equal((await rawRequest(Number(new URL(url).port), 'GET', '/health', { host: hostname() })).status, 200);
  });
  // with tokens
  const token = 'browser-safety-token';
  await withServer({ host: '0.0.0.0', tokens: [{ tenant: 'acme', sha256: hashToken(token) }], operatorTokens: [hashToken('op')] }, async ({ url, logs }) => {
    assert.ok(!logs.some((l) => l.level >= 40 && /no tokens/.test(l.msg)), 'no warning');
    const health = (await (await fetch(`${url}/health`, { headers: { authorization: 'Bearer op' } })).json()) as { status: string; checks: { exposure: { status: string } } };
    assert.equal(health.checks.exposure.status, 'ok');
  });
  // on loopback (the default)
  await withServer({}, async ({ url, logs }) => {
    assert.ok(!logs.some((l) => l.level >= 40 && /no tokens/.test(l.msg)), 'no warning');
    const health = (await (await fetch(`${url}/health`)).json()) as { checks: { exposure: { status: string } } };
    assert.equal(health.checks.exposure.status, 'ok');
  });
});

test('slow clients: headers trickled past headersTimeoutMs and a body past requestTimeoutMs get 408 ARBOR_REQUEST_TIMEOUT and the connection closed', async () => {
  await withServer({ headersTimeoutMs: 300, requestTimeoutMs: 600 }, async ({ port, logs }) => {
    // given a client that sends its request head a byte at a time and never finishes it
    const head = new RawClient(port);
    await head.write('GET /health HTTP/1.1\r\nHost: localhost\r\n');
    await head.trickle('X-Slow: ' + 'a'.repeat(2_000), 20);
    await head.closed;
    // then it got a 408 with a JSON code, and the server closed the connection
    assert.equal(statusOf(head.received), 408, head.received);
    assert.deepEqual(bodyOf(head.received), { error: { code: 'ARBOR_REQUEST_TIMEOUT', message: (bodyOf(head.received) as { error: { message: string } }).error.message } });
    assert.match(head.received, /\r\nConnection: close\r\n/i);
    assert.match(head.received, /\r\nX-Content-Type-Options: nosniff\r\n/i);

    // given a client whose head is complete but whose body trickles in
    const body = new RawClient(port);
    const json = JSON.stringify({ id: 'slow', config: { note: 'x'.repeat(1_000) } });
    await body.write(`POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n`);
    await body.trickle(json, 20);
    await body.closed;
    assert.equal(statusOf(body.received), 408, body.received);
    assert.equal((bodyOf(body.received) as { error: { code: string } }).error.code, 'ARBOR_REQUEST_TIMEOUT');
    // and the half-read request is the client's doing: no error logged, no 500
    await eventually(() => logs.some((l) => l.code === 'ARBOR_CLIENT_CLOSED_REQUEST'), 'the abandoned request to be logged');
    assert.deepEqual(logs.filter((l) => l.level >= 50), []);
  });
});

test('a client that aborts mid-body is logged at debug as a client abort, never as a server error, and counted as 499, not 500', async () => {
  await withServer({}, async ({ url, port, logs }) => {
    // given a client that sends half its body and goes away
    const client = new RawClient(port);
    // (Expect: 100-continue: the server says when the request reached it, so the abort comes mid-body, not mid-head)
    await client.write('POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n');
    await client.until((r) => r.startsWith('HTTP/1.1 100 Continue'), 'the 100 Continue');
    await client.write('{"id":"gone",');
    await new Promise((r) => setTimeout(r, 50));
    client.socket.destroy();
    // then a debug line says so
    await eventually(() => logs.some((l) => l.code === 'ARBOR_CLIENT_CLOSED_REQUEST'), 'the client abort to be logged');
    const line = logs.find((l) => l.code === 'ARBOR_CLIENT_CLOSED_REQUEST')!;
    assert.equal(line.level, 20, 'at debug');
    assert.match(line.msg, /client abort/);
    // and nothing at error, no ARBOR_INTERNAL
    assert.deepEqual(logs.filter((l) => l.level >= 50 || l.code === 'ARBOR_INTERNAL'), []);
    // and the request counter has it as 499, no 5xx
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const posts = metrics.split('\n').filter((l) => l.startsWith('arbor_http_requests_total{') && l.includes('method="POST"'));
    assert.ok(posts.some((l) => l.includes('status="499"')), posts.join('\n'));
    assert.ok(!posts.some((l) => /status="5[0-9][0-9]"/.test(l)), posts.join('\n'));
  });
});

test('maxConnections: a connection beyond the cap is closed at once; those open keep working', async () => {
  await withServer({ maxConnections: 2, keepAliveTimeoutMs: 600_000 }, async ({ port, logs }) => {
    const request = 'GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const a = new RawClient(port);
    const b = new RawClient(port);
    await a.write(request);
    await b.write(request);
    await a.until((r) => statusOf(r) === 200 && r.includes('"checks"'), 'the first answer');
    await b.until((r) => statusOf(r) === 200 && r.includes('"checks"'), 'the second answer');
    // when a third connects
    const c = new RawClient(port);
    await c.write(request);
    await c.closed;
    // then it was closed with nothing written, and a warning was logged
    assert.equal(c.received, '');
    await eventually(() => logs.some((l) => l.level === 40 && /maxConnections/.test(l.msg)), 'the warning');
    // and the open ones still answer
    a.received = '';
    await a.write(request);
    await a.until((r) => statusOf(r) === 200, 'a second answer on the first connection');
    a.socket.destroy();
    b.socket.destroy();
  });
});

test('security headers: nosniff, no-referrer and a CSP that loads nothing on JSON answers, errors, metrics and event streams', async () => {
  await withServer({}, async ({ url }) => {
    await fetch(`${url}/v1/sessions`, { method: 'POST', headers: JSON_TYPE, body: '{"id":"h1"}' });
    const answers = [await fetch(`${url}/v1/sessions/h1`), await fetch(`${url}/nope`), await fetch(`${url}/health`), await fetch(`${url}/metrics`), await fetch(`${url}/v1/sessions`, { method: 'POST', body: 'x' })];
    const controller = new AbortController();
    const stream = await fetch(`${url}/v1/sessions/h1/stream`, { signal: controller.signal });
    answers.push(stream);
    for (const res of answers) {
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', res.url);
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer', res.url);
      assert.equal(res.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'", res.url);
    }
    controller.abort();
  });
});
