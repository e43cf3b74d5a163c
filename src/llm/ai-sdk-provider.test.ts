import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startOpenAiCompatibleServer, type FakeLlmBehavior, type FakeLlmServer } from '../../test/helpers/openai-compatible-server.ts';
import { AiSdkProvider, type AiSdkProviderOptions } from './ai-sdk-provider.ts';
import { isAbortError, LlmProviderError, type ChatTurn, type StreamRequest } from './provider.ts';

const conversation: readonly ChatTurn[] = [
  { role: 'system', content: 'You answer in one sentence.' },
  { role: 'user', content: 'What is a journal?' },
  { role: 'assistant', content: 'An append-only log.' },
  { role: 'user', content: 'And a snapshot?' },
];

const answer = ['A snapshot ', 'is the full ', 'state at ', 'one seq.'];

async function serve(t: TestContext, behavior: Partial<FakeLlmBehavior>): Promise<FakeLlmServer> {
  const server = await startOpenAiCompatibleServer({ chunks: answer, ...behavior });
  t.after(() => server.close());
  return server;
}

function provider(server: FakeLlmServer, options: Partial<AiSdkProviderOptions> = {}): AiSdkProvider {
  // No retries: a scripted failure must surface at once, not after the SDK's 2 s + 4 s backoff.
  return new AiSdkProvider({ baseURL: server.baseURL, apiKey: 'sk-test', model: 'test-model', maxRetries: 0, ...options });
}

function request(signal: AbortSignal = new AbortController().signal, extra: Partial<StreamRequest> = {}): StreamRequest {
  return { sessionId: 's1', messageId: 'm1', messages: conversation, signal, ...extra };
}

/** Runs the stream to its end; returns the chunks and the error it ended with, if any. */
async function drain(stream: AsyncIterable<string>, onChunk?: (chunk: string) => void): Promise<{ chunks: string[]; error: unknown }> {
  const chunks: string[] = [];
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      onChunk?.(chunk);
    }
    return { chunks, error: undefined };
  } catch (error) {
    return { chunks, error };
  }
}

/** Resolves with `promise`, or rejects when it takes longer than `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

test('ok: chunks arrive in order and join to the expected text; nothing is logged', async (t) => {
  // given
  const server = await serve(t, { chunkDelayMs: 5 });
  const errors = t.mock.method(console, 'error', () => {});
  const warnings = t.mock.method(console, 'warn', () => {});
  // when
  const { chunks, error } = await drain(provider(server).stream(request()));
  // then
  assert.equal(error, undefined);
  assert.deepEqual(chunks, answer);
  assert.equal(chunks.join(''), 'A snapshot is the full state at one seq.');
  assert.equal(errors.mock.callCount(), 0);
  assert.equal(warnings.mock.callCount(), 0, 'a system message must not print an SDK warning');
});

test('the request carries the conversation, the model, stream: true and the Authorization header', async (t) => {
  // given
  const server = await serve(t, {});
  const p = provider(server, { headers: { 'x-arbor-test': 'yes' } });
  // when
  await drain(p.stream(request()));
  // then
  assert.equal(server.requests.length, 1);
  const [received] = server.requests;
  assert.ok(received);
  assert.equal(received.method, 'POST');
  assert.equal(received.url, '/v1/chat/completions');
  assert.equal(received.headers.authorization, 'Bearer sk-test');
  assert.equal(received.headers['x-arbor-test'], 'yes');
  const body = received.body as { model: unknown; stream: unknown; messages: unknown };
  assert.equal(body.model, 'test-model');
  assert.equal(body.stream, true);
  assert.deepEqual(body.messages, conversation);
});

test('request.model overrides the provider default model', async (t) => {
  const server = await serve(t, {});
  await drain(provider(server).stream(request(undefined, { model: 'other-model' })));
  assert.equal((server.requests[0]?.body as { model?: unknown }).model, 'other-model');
});

test('abort mid-stream (10 chunks × 300 ms): throws AbortError promptly and the server sees the connection closed', async (t) => {
  // given
  const server = await serve(t, { chunks: Array.from({ length: 10 }, (_, i) => `c${i} `), chunkDelayMs: 300 });
  const controller = new AbortController();
  // when: abort as soon as the first chunk is in
  const result = await drain(provider(server).stream(request(controller.signal)), () => controller.abort());
  // then: the stream ended before the server got past its second chunk (300 ms apart), so the
  // abort did not wait for the remaining 2.7 s of chunks. An order, not a timed bound.
  const [received] = server.requests;
  assert.ok(received);
  assert.ok(received.chunksSent <= 2, `the stream ended only after the server had sent ${received.chunksSent} chunks`);
  assert.ok(isAbortError(result.error), `expected an AbortError, got ${String(result.error)}`);
  assert.deepEqual(result.chunks, ['c0 ']);
  await within(10_000, received.settled, 'the server noticing the closed connection');
  assert.equal(received.outcome, 'client-closed');
  assert.ok(received.chunksSent < 10, `server sent ${received.chunksSent} chunks`);
});

test('abort before the first chunk arrives: throws AbortError promptly', async (t) => {
  const server = await serve(t, { chunkDelayMs: 5000 });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  const result = await drain(provider(server).stream(request(controller.signal)));
  // The first chunk was 5 s away: no chunk and an AbortError mean the abort did not wait for it.
  assert.ok(isAbortError(result.error), `expected an AbortError, got ${String(result.error)}`);
  assert.deepEqual(result.chunks, []);
});

test('an already-aborted signal throws AbortError and sends no request', async (t) => {
  const server = await serve(t, {});
  const controller = new AbortController();
  controller.abort();
  const result = await drain(provider(server).stream(request(controller.signal)));
  assert.ok(isAbortError(result.error));
  assert.equal(server.requests.length, 0);
});

test('HTTP 500: the iteration throws LlmProviderError with statusCode 500 (not a silent empty answer)', async (t) => {
  // given
  const server = await serve(t, { mode: 'http-500' });
  const errors = t.mock.method(console, 'error', () => {});
  // when
  const result = await drain(provider(server).stream(request()));
  // then
  assert.ok(result.error instanceof LlmProviderError, `expected LlmProviderError, got ${String(result.error)}`);
  assert.equal(result.error.statusCode, 500);
  assert.equal(result.error.provider, 'openai-compatible');
  assert.equal(result.error.model, 'test-model');
  assert.ok(result.error.cause !== undefined);
  assert.deepEqual(result.chunks, []);
  assert.equal(errors.mock.callCount(), 0, 'the SDK default onError must not print the error');
});

test('connection cut after 2 of 4 chunks: throws LlmProviderError (not a silent short answer)', async (t) => {
  const server = await serve(t, { mode: 'cut', cutAfterChunks: 2, chunkDelayMs: 5 });
  const result = await drain(provider(server).stream(request()));
  assert.ok(result.error instanceof LlmProviderError, `expected LlmProviderError, got ${String(result.error)}`);
  assert.ok(result.chunks.length <= 2, `got ${result.chunks.length} chunks`);
  assert.equal(server.requests[0]?.outcome, 'server-cut');
});

test('a malformed event after 2 chunks: yields those 2, then throws LlmProviderError', async (t) => {
  const server = await serve(t, { mode: 'malformed', cutAfterChunks: 2 });
  const result = await drain(provider(server).stream(request()));
  assert.ok(result.error instanceof LlmProviderError, `expected LlmProviderError, got ${String(result.error)}`);
  assert.deepEqual(result.chunks, answer.slice(0, 2));
});

test('a stream that ends without finish_reason or [DONE]: throws LlmProviderError', async (t) => {
  const server = await serve(t, { mode: 'no-finish' });
  const result = await drain(provider(server).stream(request()));
  assert.ok(result.error instanceof LlmProviderError, `expected LlmProviderError, got ${String(result.error)}`);
  assert.deepEqual(result.chunks, answer);
});

test('a consumer that stops iterating early closes the HTTP connection', async (t) => {
  // given
  const server = await serve(t, { chunks: Array.from({ length: 10 }, (_, i) => `c${i}`), chunkDelayMs: 200 });
  // when
  for await (const chunk of provider(server).stream(request())) {
    assert.equal(chunk, 'c0');
    break;
  }
  // then
  const [received] = server.requests;
  assert.ok(received);
  await within(1000, received.settled, 'the server noticing the closed connection');
  assert.equal(received.outcome, 'client-closed');
});

test('constructor: a non-http baseURL or an empty model is a TypeError, a bad maxRetries a RangeError', () => {
  assert.throws(() => new AiSdkProvider({ baseURL: 'localhost:1234', model: 'm' }), TypeError);
  assert.throws(() => new AiSdkProvider({ baseURL: 'http://127.0.0.1:1/v1', model: '' }), TypeError);
  for (const maxRetries of [-1, 1.5, 11]) {
    assert.throws(() => new AiSdkProvider({ baseURL: 'http://127.0.0.1:1/v1', model: 'm', maxRetries }), RangeError, `maxRetries=${maxRetries}`);
  }
  const p = new AiSdkProvider({ baseURL: 'http://127.0.0.1:1/v1', model: 'm', name: 'local' });
  assert.equal(p.name, 'local');
  assert.equal(p.model, 'm');
});
