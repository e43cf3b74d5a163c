import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mockReplyChunks } from '../../src/llm/mock-provider.ts';
import { INTERRUPTED_NOTICE_CONTENT } from '../../src/index.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { SseClient, type SseEvent } from '../helpers/sse.ts';
import { tempDir } from '../helpers/tmp.ts';
import { startOpenAiCompatibleServer } from '../helpers/openai-compatible-server.ts';

// End-to-end: the real `arbor serve` process on loopback, used with fetch and an SSE client.

interface View {
  id: string;
  seq: number;
  status: string;
  messages: { id: string; role: string; content: string; seq: number; metadata?: Record<string, unknown> }[];
  config: Record<string, unknown>;
}

async function json<T>(res: Response, status: number): Promise<T> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function withServer(env: Record<string, string>, fn: (s: ServeProcess, dataDir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-e2e-');
  const dataDir = join(dir, 'data');
  const server = await startServe(['--data-dir', dataDir], env);
  try {
    await fn(server, dataDir);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
}

const completed = (e: SseEvent) => e.event === 'assistant_response_completed';
const chunkIndices = (events: SseEvent[]) => events.filter((e) => e.event === 'chunk').map((e) => (JSON.parse(e.data) as { index: number }).index);

test('chat over HTTP: create, send (202 once durable), stream the answer over SSE, read it back', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '6', ARBOR_MOCK_CHUNK_DELAY_MS: '5' }, async ({ url }) => {
    // given a session with a config value
    const created = await json<View>(await post(`${url}/v1/sessions`, { id: 'chat-1', config: { model: 'mock-echo' } }), 201);
    assert.deepEqual(created.config, { model: 'mock-echo' }, 'the tenant key is not shown');
    const stream = new SseClient(`${url}/v1/sessions/chat-1/stream`);
    const first = await stream.next();
    assert.equal(first?.event, 'state');
    assert.equal(first?.id, String(created.seq));
    // when a message is sent
    const ack = await json<{ messageId: string; seq: number }>(await post(`${url}/v1/sessions/chat-1/messages`, { content: 'hello there', clientMessageId: 'c-1' }), 202);
    // then the stream carries the user message, the start, 6 chunks and the answer, with seq / messageId:index ids
    const events = await stream.until(completed);
    stream.close();
    const expected = mockReplyChunks([{ role: 'user', content: 'hello there' }], 6);
    const user = events.find((e) => e.event === 'user_message_sent')!;
    assert.equal(user.id, String(ack.seq));
    const chunks = events.filter((e) => e.event === 'chunk');
    assert.deepEqual(chunks.map((e) => (JSON.parse(e.data) as { text: string }).text), expected);
    const answerId = (JSON.parse(chunks[0]!.data) as { messageId: string }).messageId;
    assert.deepEqual(chunks.map((e) => e.id), expected.map((_, i) => `${answerId}:${i}`));
    const done = JSON.parse(events.at(-1)!.data) as { seq: number; data: { content: string } };
    assert.equal(events.at(-1)!.id, String(done.seq));
    assert.equal(done.data.content, expected.join(''));
    // and GET shows both messages
    const view = await json<View>(await fetch(`${url}/v1/sessions/chat-1`), 200);
    assert.deepEqual(view.messages.map((m) => [m.role, m.content]), [['user', 'hello there'], ['assistant', expected.join('')]]);
    assert.equal(view.seq, done.seq);
    assert.equal(view.status, 'idle');
    // and a retried clientMessageId is acknowledged with the original message, no second answer
    const again = await json<{ messageId: string; seq: number; duplicate: boolean }>(await post(`${url}/v1/sessions/chat-1/messages`, { content: 'hello there', clientMessageId: 'c-1' }), 202);
    assert.deepEqual([again.messageId, again.seq, again.duplicate], [ack.messageId, ack.seq, true]);
  });
});

for (const resumeFrom of ['chunk id', 'seq id'] as const) {
  test(`reconnect mid-stream with Last-Event-ID (${resumeFrom}): the rest arrives exactly once`, async () => {
    await withServer({ ARBOR_MOCK_CHUNKS: '24', ARBOR_MOCK_CHUNK_DELAY_MS: '25' }, async ({ url }) => {
      // given a streaming answer, read up to chunk 5 by a first connection
      await json(await post(`${url}/v1/sessions`, { id: 'resume' }), 201);
      const first = new SseClient(`${url}/v1/sessions/resume/stream`);
      await first.next(); // state
      await json(await post(`${url}/v1/sessions/resume/messages`, { content: 'count to twenty-four' }), 202);
      const seen = await first.until((e) => e.event === 'chunk' && (JSON.parse(e.data) as { index: number }).index === 5);
      first.close();
      const lastChunk = seen.at(-1)!;
      const lastEventId = resumeFrom === 'chunk id' ? lastChunk.id! : seen.filter((e) => e.event !== 'chunk').at(-1)!.id!;
      // when the client reconnects with the id of the last update it saw
      const second = new SseClient(`${url}/v1/sessions/resume/stream`, { 'last-event-id': lastEventId });
      const rest = await second.until(completed);
      second.close();
      // then every chunk arrives exactly once across both connections (from a seq id the chunks after that event are resent)
      const all = resumeFrom === 'chunk id' ? [...seen, ...rest] : [...seen.filter((e) => e.event !== 'chunk' || Number(e.id!.split(':')[1]) < 0), ...rest];
      assert.deepEqual(chunkIndices(all), Array.from({ length: 24 }, (_, i) => i));
      // and no committed event twice, none missing
      const seqs = all.filter((e) => e.event !== 'chunk' && e.event !== 'state').map((e) => Number(e.id));
      assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b));
      assert.ok(rest.every((e) => e.event !== 'state'), 'a resumable position needs no state reset');
      const text = all.filter((e) => e.event === 'chunk').map((e) => (JSON.parse(e.data) as { text: string }).text).join('');
      assert.equal(text, mockReplyChunks([{ role: 'user', content: 'count to twenty-four' }], 24).join(''));
    });
  });
}

test('events committed while a client was away are replayed in order with the chunks, once', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '20', ARBOR_MOCK_CHUNK_DELAY_MS: '30' }, async ({ url }) => {
    await json(await post(`${url}/v1/sessions`, { id: 'busy' }), 201);
    const first = new SseClient(`${url}/v1/sessions/busy/stream`);
    await first.next();
    await json(await post(`${url}/v1/sessions/busy/messages`, { content: 'one' }), 202);
    const seen = await first.until((e) => e.event === 'chunk' && (JSON.parse(e.data) as { index: number }).index === 3);
    first.close();
    // given a second message committed while the first answer streams and the client is away
    const second = await json<{ seq: number }>(await post(`${url}/v1/sessions/busy/messages`, { content: 'two' }), 202);
    // when it comes back from its last chunk id
    const again = new SseClient(`${url}/v1/sessions/busy/stream`, { 'last-event-id': seen.at(-1)!.id! });
    let answers = seen.filter(completed).length;
    const rest = await again.until((e) => completed(e) && ++answers === 2);
    again.close();
    // then the second message arrives once, between the chunks, and both answers complete
    const all = [...seen, ...rest];
    assert.equal(all.filter((e) => e.event === 'user_message_sent').length, 2);
    assert.equal(all.filter((e) => e.event === 'assistant_response_completed').length, 2);
    const seqs = all.filter((e) => e.event !== 'chunk' && e.event !== 'state').map((e) => Number(e.id));
    assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b));
    assert.ok(seqs.includes(second.seq), `the message committed while the client was away (seq ${second.seq}) was not replayed: ${seqs.join(', ')}`);
    const messageIds = [...new Set(all.filter((e) => e.event === 'chunk').map((e) => e.id!.split(':')[0]))];
    assert.equal(messageIds.length, 2);
    for (const m of messageIds) assert.deepEqual(all.filter((e) => e.event === 'chunk' && e.id!.startsWith(`${m}:`)).map((e) => Number(e.id!.split(':')[1])), Array.from({ length: 20 }, (_, i) => i));
  });
});

test('SIGKILL mid-stream, restart on the same data dir: every acknowledged message, the interrupted notice, retry', async () => {
  const { dir, cleanup } = tempDir('arbor-e2e-kill-');
  const dataDir = join(dir, 'data');
  const env = { ARBOR_MOCK_CHUNKS: '40', ARBOR_MOCK_CHUNK_DELAY_MS: '40' };
  let server = await startServe(['--data-dir', dataDir], env);
  try {
    // given acknowledged messages and an answer streaming
    await json(await post(`${server.url}/v1/sessions`, { id: 'killed' }), 201);
    const acked: string[] = [];
    for (const content of ['first', 'second']) {
      const r = await json<{ messageId: string }>(await post(`${server.url}/v1/sessions/killed/messages`, { content }), 202);
      acked.push(r.messageId);
    }
    const stream = new SseClient(`${server.url}/v1/sessions/killed/stream`);
    await stream.until((e) => e.event === 'chunk' && (JSON.parse(e.data) as { index: number }).index === 2);
    // when the server is killed mid-stream
    const exit = await server.stop('SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
    assert.equal(await stream.next(), undefined, 'the stream is cut');
    // and restarted on the same data directory
    server = await startServe(['--data-dir', dataDir], env);
    const view = await json<View>(await fetch(`${server.url}/v1/sessions/killed`), 200);
    // then every acknowledged message is there, and the cut answer is an interrupted notice
    const users = view.messages.filter((m) => m.role === 'user');
    assert.deepEqual(users.map((m) => m.id), acked);
    const notices = view.messages.filter((m) => m.role === 'system');
    assert.ok(notices.length >= 1, JSON.stringify(view.messages));
    assert.equal(notices[0]!.content, INTERRUPTED_NOTICE_CONTENT);
    assert.equal(notices[0]!.metadata?.interrupted, true);
    assert.equal(view.messages.at(-1)!.role, 'system');
    // when the client retries
    const resumed = new SseClient(`${server.url}/v1/sessions/killed/stream`, { 'last-event-id': String(view.seq) });
    const retried = await json<{ requestMessageId: string }>(await post(`${server.url}/v1/sessions/killed/retry`, {}), 202);
    const events = await resumed.until(completed);
    resumed.close();
    // then the answer is regenerated and completes
    const done = JSON.parse(events.at(-1)!.data) as { data: { requestMessageId: string; content: string } };
    assert.equal(done.data.requestMessageId, retried.requestMessageId);
    assert.ok(acked.includes(retried.requestMessageId));
    assert.equal(chunkIndices(events).length, 40);
    const after = await json<View>(await fetch(`${server.url}/v1/sessions/killed`), 200);
    assert.equal(after.messages.at(-1)!.role, 'assistant');
    assert.equal(after.messages.at(-1)!.content, done.data.content);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
});

test('SIGTERM mid-stream: the stream gets stream_interrupted, the server exits 0, the restart shows the notice', async () => {
  const { dir, cleanup } = tempDir('arbor-e2e-term-');
  const dataDir = join(dir, 'data');
  const env = { ARBOR_MOCK_CHUNKS: '200', ARBOR_MOCK_CHUNK_DELAY_MS: '40' };
  let server = await startServe(['--data-dir', dataDir], env);
  try {
    await json(await post(`${server.url}/v1/sessions`, { id: 'term' }), 201);
    const stream = new SseClient(`${server.url}/v1/sessions/term/stream`);
    await stream.next();
    await json(await post(`${server.url}/v1/sessions/term/messages`, { content: 'long answer please' }), 202);
    await stream.until((e) => e.event === 'chunk');
    // when SIGTERM arrives
    const exited = server.stop('SIGTERM');
    // then the open stream receives the interruption before it ends, and the process exits 0
    const rest = await stream.until((e) => e.event === 'stream_interrupted');
    assert.equal(rest.at(-1)?.event, 'stream_interrupted');
    assert.equal(await stream.next(), undefined, 'the stream ends after its last event');
    assert.deepEqual(await exited, { code: 0, signal: null });
    // and a restart shows the notice, with nothing to interrupt again
    server = await startServe(['--data-dir', dataDir], env);
    const view = await json<View>(await fetch(`${server.url}/v1/sessions/term`), 200);
    assert.equal(view.messages.at(-1)!.content, INTERRUPTED_NOTICE_CONTENT);
    assert.equal(view.messages.filter((m) => m.role === 'system').length, 1);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
});

test('ARBOR_LLM=openai-compatible: the answer streams from the configured endpoint with its model and key; a provider failure is an interrupted, retryable turn', async () => {
  const llm = await startOpenAiCompatibleServer({ chunks: ['Bonjour', ' le', ' monde'] });
  try {
    await withServer({ ARBOR_LLM: 'openai-compatible', ARBOR_LLM_BASE_URL: llm.baseURL, ARBOR_LLM_MODEL: 'tiny-model', ARBOR_LLM_API_KEY: 'sk-test-key', ARBOR_LLM_MAX_RETRIES: '0' }, async ({ url }) => {
      await json(await post(`${url}/v1/sessions`, { id: 'real-llm' }), 201);
      const stream = new SseClient(`${url}/v1/sessions/real-llm/stream`);
      await stream.next();
      await json(await post(`${url}/v1/sessions/real-llm/messages`, { content: 'say hello' }), 202);
      const events = await stream.until(completed);
      assert.deepEqual(events.filter((e) => e.event === 'chunk').map((e) => (JSON.parse(e.data) as { text: string }).text), ['Bonjour', ' le', ' monde']);
      const request = llm.requests.at(-1)!;
      assert.equal((request.body as { model: string }).model, 'tiny-model');
      assert.equal(request.headers.authorization, 'Bearer sk-test-key');
      // when the provider fails, the turn ends interrupted and a retry succeeds once it is back
      llm.setBehavior({ mode: 'http-500' });
      await json(await post(`${url}/v1/sessions/real-llm/messages`, { content: 'again' }), 202);
      const failed = await stream.until((e) => e.event === 'stream_interrupted');
      assert.match((JSON.parse(failed.at(-1)!.data) as { data: { reason: string } }).data.reason, /provider error/);
      llm.setBehavior({ mode: 'ok' });
      await json(await post(`${url}/v1/sessions/real-llm/retry`, {}), 202);
      await stream.until(completed);
      stream.close();
      const view = await json<View>(await fetch(`${url}/v1/sessions/real-llm`), 200);
      assert.equal(view.messages.at(-1)!.content, 'Bonjour le monde');
    });
  } finally {
    await llm.close();
  }
});
