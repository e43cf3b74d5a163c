import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DefaultChatTransport, readUIMessageStream, type UIMessage, type UIMessageChunk } from 'ai';
import { mockReplyChunks } from '../../src/llm/mock-provider.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { tempDir } from '../helpers/tmp.ts';
import { startOpenAiCompatibleServer } from '../helpers/openai-compatible-server.ts';

// End-to-end: the AI SDK's own client (DefaultChatTransport, readUIMessageStream: what useChat uses) against
// the real `arbor serve` process.

async function withServer(env: Record<string, string>, fn: (s: ServeProcess) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-chat-');
  const server = await startServe(['--data-dir', join(dir, 'data')], env);
  try {
    await fn(server);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
}

const user = (id: string, text: string): UIMessage => ({ id, role: 'user', parts: [{ type: 'text', text }] });

/** The chunks of a UI message stream, all of them. */
async function chunksOf(stream: ReadableStream<UIMessageChunk>): Promise<UIMessageChunk[]> {
  const out: UIMessageChunk[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out.push(value);
  }
}

/** The message the SDK builds from the chunks (its own reader refuses what is not its protocol). */
async function messageOf(chunks: readonly UIMessageChunk[]): Promise<UIMessage> {
  let last: UIMessage | undefined;
  const stream = new ReadableStream<UIMessageChunk>({
    start(c) {
      chunks.forEach((x) => c.enqueue(x));
      c.close();
    },
  });
  for await (const m of readUIMessageStream({ stream, terminateOnError: true })) last = m;
  assert.ok(last !== undefined, 'no message');
  return last;
}

const textOf = (m: UIMessage): string => m.parts.map((p) => (p.type === 'text' ? p.text : '')).join('');

test('useChat over DefaultChatTransport: submit streams the answer (protocol v1), a retried POST does not duplicate, history has parts, regenerate answers again', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '5', ARBOR_MOCK_CHUNK_DELAY_MS: '5' }, async ({ url }) => {
    const transport = new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat` });
    const messages = [user('u-1', 'hello there')];
    // when the SDK sends a message to a chat that does not exist yet
    const chunks = await chunksOf(await transport.sendMessages({ trigger: 'submit-message', chatId: 'chat-e2e', messageId: undefined, messages, abortSignal: undefined }));
    // then the answer comes as the SDK's chunks, ending with the real finish reason and usage
    assert.deepEqual([chunks[0]!.type, chunks[1]!.type, chunks.at(-2)!.type, chunks.at(-1)!.type], ['start', 'text-start', 'text-end', 'finish']);
    const finish = chunks.at(-1) as { finishReason?: string; messageMetadata?: { usage?: { outputTokens?: number } } };
    assert.equal(finish.finishReason, 'stop');
    assert.equal(finish.messageMetadata?.usage?.outputTokens, 5);
    const answer = await messageOf(chunks);
    const expected = mockReplyChunks([{ role: 'user', content: 'hello there' }], 5).join('');
    assert.equal(textOf(answer), expected);
    // and the same POST again (a retry) starts no second answer: it gets the first one back
    const again = await messageOf(await chunksOf(await transport.sendMessages({ trigger: 'submit-message', chatId: 'chat-e2e', messageId: undefined, messages, abortSignal: undefined })));
    assert.equal(again.id, answer.id);
    // and the history is UIMessage[] with parts; the user message keeps the client's id
    const history = (await (await fetch(`${url}/v1/chat/chat-e2e/messages`)).json()) as UIMessage[];
    assert.deepEqual(history.map((m) => [m.id, m.role, textOf(m)]), [['u-1', 'user', 'hello there'], [answer.id, 'assistant', expected]]);
    // and the /v1/sessions view shows the same, with content
    const view = (await (await fetch(`${url}/v1/sessions/chat-e2e`)).json()) as { messages: { role: string; content: string }[] };
    assert.deepEqual(view.messages.map((m) => m.content), ['hello there', expected]);
    // when the SDK regenerates the answer
    const regenerated = await messageOf(await chunksOf(await transport.sendMessages({ trigger: 'regenerate-message', chatId: 'chat-e2e', messageId: answer.id, messages: [...messages, answer], abortSignal: undefined })));
    // then a new answer to the same request is streamed and kept
    assert.notEqual(regenerated.id, answer.id);
    assert.equal(textOf(regenerated), expected);
    const after = (await (await fetch(`${url}/v1/chat/chat-e2e/messages`)).json()) as UIMessage[];
    assert.deepEqual(after.map((m) => m.id), ['u-1', answer.id, regenerated.id]);
    assert.equal((after[2]!.metadata as { retryOf?: string }).retryOf, answer.id);
    // and nothing streams now: the resume URL answers 204, which the transport reads as null
    assert.equal(await transport.reconnectToStream({ chatId: 'chat-e2e' }), null);
  });
});

test('resume after the client aborts: reconnectToStream replays the running turn from its first chunk, then live, and ends with it', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '20', ARBOR_MOCK_CHUNK_DELAY_MS: '40' }, async ({ url }) => {
    const transport = new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat` });
    // given a turn the client abandons after its first deltas (a reload)
    const abort = new AbortController();
    const first = (await transport.sendMessages({ trigger: 'submit-message', chatId: 'resume', messageId: undefined, messages: [user('u-r', 'tell me more')], abortSignal: abort.signal })).getReader();
    let deltas = 0;
    while (deltas < 2) {
      const { value } = await first.read();
      if (value?.type === 'text-delta') deltas += 1;
    }
    abort.abort();
    // when it reconnects (another client, as after a reload)
    const resumed = await transport.reconnectToStream({ chatId: 'resume' });
    assert.ok(resumed !== null, 'a turn is running: the resume has a stream');
    const chunks = await chunksOf(resumed);
    // then it got the turn from its first chunk to its finish
    assert.equal(chunks[0]!.type, 'start');
    assert.equal(chunks.at(-1)!.type, 'finish');
    const message = await messageOf(chunks);
    assert.equal(textOf(message), mockReplyChunks([{ role: 'user', content: 'tell me more' }], 20).join(''));
    // and the answer is whole in the history, and a later resume has nothing
    const history = (await (await fetch(`${url}/v1/chat/resume/messages`)).json()) as UIMessage[];
    assert.deepEqual(history.map((m) => m.id), ['u-r', message.id]);
    assert.equal((await fetch(`${url}/v1/chat/resume/stream`)).status, 204);
  });
});

test('POST /v1/chat/:id/stop ends the running answer: the partial answer is kept, stopped, and a resume answers 204', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '200', ARBOR_MOCK_CHUNK_DELAY_MS: '20' }, async ({ url }) => {
    const transport = new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat` });
    const reader = (await transport.sendMessages({ trigger: 'submit-message', chatId: 'stop', messageId: undefined, messages: [user('u-s', 'a very long answer')], abortSignal: undefined })).getReader();
    const chunks: UIMessageChunk[] = [];
    while (chunks.filter((c) => c.type === 'text-delta').length < 3) chunks.push((await reader.read()).value!);
    // when
    const res = await fetch(`${url}/v1/chat/stop/stop`, { method: 'POST' });
    const body = (await res.json()) as { stopped: boolean; messageId: string };
    // then the stream ends with a finish that says stopped
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    assert.equal(res.status, 200);
    assert.equal(body.stopped, true);
    const finish = chunks.at(-1) as { type: string; messageMetadata?: { stopped?: boolean } };
    assert.deepEqual([finish.type, finish.messageMetadata?.stopped], ['finish', true]);
    const streamed = textOf(await messageOf(chunks));
    // and the partial answer is the final one
    const history = (await (await fetch(`${url}/v1/chat/stop/messages`)).json()) as UIMessage[];
    const kept = history.at(-1)!;
    assert.equal(kept.id, body.messageId);
    assert.equal(textOf(kept), streamed);
    assert.ok(streamed.length < mockReplyChunks([{ role: 'user', content: 'a very long answer' }], 200).join('').length);
    assert.equal((kept.metadata as { stopped?: boolean }).stopped, true);
    // and a resume has nothing; a second stop stops nothing
    assert.equal((await fetch(`${url}/v1/chat/stop/stream`)).status, 204);
    assert.deepEqual(await (await fetch(`${url}/v1/chat/stop/stop`, { method: 'POST' })).json(), { stopped: false, messageId: null });
  });
});

test('bad bodies get 400 naming the field, and nothing is journaled; tenants and tokens are those of /v1/sessions', async () => {
  await withServer({ ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, async ({ url }) => {
    const post = (body: unknown) => fetch(`${url}/v1/chat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const cases: [unknown, RegExp][] = [
      [{ id: 'bad', messages: 'hi', trigger: 'submit-message' }, /messages/],
      [{ id: 'bad', messages: [user('u', 'x')], trigger: 'resubmit' }, /trigger/],
      [{ id: 'bad', messages: [{ id: 'u', role: 'user' }], trigger: 'submit-message' }, /messages\.0\.parts/],
      [{ id: 'bad', messages: [{ id: 'u', role: 'user', parts: [{ type: 'file', url: 'x', mediaType: 'image/png' }] }], trigger: 'submit-message' }, /messages\.0\.parts\.0\.type/],
      [{ id: 'bad', messages: [{ id: 'u', role: 'user', parts: [] }], trigger: 'submit-message' }, /messages\.0\.parts/],
    ];
    for (const [body, field] of cases) {
      const res = await post(body);
      const err = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(err.error.code, 'ARBOR_INVALID_INPUT');
      assert.match(err.error.message, field);
    }
    // nothing was written: the session does not exist
    assert.equal((await fetch(`${url}/v1/sessions/bad`)).status, 404);
  });
});

test('finish reason and usage come from an OpenAI-compatible server, per-session settings go to it, reasoning streams as reasoning parts', async (t) => {
  const llm = await startOpenAiCompatibleServer({ chunks: ['Hi', ' there'], usage: { prompt_tokens: 12, completion_tokens: 3 }, finishReason: 'length', reasoning: ['plan'] });
  t.after(() => llm.close());
  await withServer({ ARBOR_LLM: 'openai-compatible', ARBOR_LLM_BASE_URL: llm.baseURL, ARBOR_LLM_MODEL: 'test-model' }, async ({ url }) => {
    // given per-session settings
    await fetch(`${url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'oai', config: { model: 'picked-model', system: 'Be brief.', temperature: 0.5, maxOutputTokens: 3 } }) });
    const transport = new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat` });
    // when
    const chunks = await chunksOf(await transport.sendMessages({ trigger: 'submit-message', chatId: 'oai', messageId: undefined, messages: [user('u-o', 'hi')], abortSignal: undefined }));
    // then the answer has the server's finish reason and usage
    const finish = chunks.at(-1) as { finishReason?: string; messageMetadata?: { usage?: Record<string, number>; finishReason?: string } };
    assert.equal(finish.finishReason, 'length');
    assert.deepEqual(finish.messageMetadata?.usage, { inputTokens: 12, outputTokens: 3, totalTokens: 15, reasoningTokens: 0, cachedInputTokens: 0 });
    const message = await messageOf(chunks);
    assert.deepEqual(message.parts.filter((p) => p.type === 'reasoning' || p.type === 'text').map((p) => [p.type, (p as { text: string }).text]), [['reasoning', 'plan'], ['text', 'Hi there']]);
    // and the request carried the session's settings
    const body = llm.requests.at(-1)!.body as { model: string; temperature: number; max_tokens: number; messages: { role: string; content: string }[] };
    assert.deepEqual([body.model, body.temperature, body.max_tokens, body.messages[0]], ['picked-model', 0.5, 3, { role: 'system', content: 'Be brief.' }]);
    // and the history keeps the reasoning part
    const history = (await (await fetch(`${url}/v1/chat/oai/messages`)).json()) as UIMessage[];
    assert.deepEqual(history.at(-1)!.parts.map((p) => p.type), ['reasoning', 'text']);
  });
});

test("tenants and tokens of /v1/sessions: no token is 401, another tenant's chat answers like a missing one and is untouched (the same id is the caller's own chat), a tenant with createSessions: false creates none", async () => {
  const { dir, cleanup } = tempDir('arbor-chat-');
  const { hashToken } = await import('../../src/server/auth.ts');
  const configFile = join(dir, 'config.json');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(configFile, JSON.stringify({ tokens: [{ tenant: 'acme', sha256: hashToken('acme-token') }, { tenant: 'globex', sha256: hashToken('globex-token') }, { tenant: 'readonly', sha256: hashToken('ro-token'), createSessions: false }] }));
  const server = await startServe(['--data-dir', join(dir, 'data'), '--config', configFile], { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
  try {
    const { url } = server;
    const as = (token: string) => new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat`, headers: { authorization: `Bearer ${token}` } });
    const send = (token: string, chatId: string) => as(token).sendMessages({ trigger: 'submit-message', chatId, messageId: undefined, messages: [user(`u-${chatId}`, 'secret')], abortSignal: undefined });
    // given acme's chat, created on first use
    await chunksOf(await send('acme-token', 'acme-chat'));
    // then without a token: 401
    assert.equal((await fetch(`${url}/v1/chat/acme-chat/messages`)).status, 401);
    // and for globex, acme's chat answers on every route exactly like a chat nobody has (each tenant has its own id space)
    const globex = { authorization: 'Bearer globex-token' };
    for (const [method, path] of [['GET', 'messages'], ['GET', 'stream'], ['POST', 'stop']] as const) {
      const theirs = await fetch(`${url}/v1/chat/acme-chat/${path}`, { method, headers: globex });
      const nobodys = await fetch(`${url}/v1/chat/nobody-chat/${path}`, { method, headers: globex });
      assert.equal(theirs.status, 404, path);
      assert.equal(theirs.status, nobodys.status, path);
    }
    await assert.rejects(as('globex-token').sendMessages({ trigger: 'regenerate-message', chatId: 'acme-chat', messageId: undefined, messages: [user('u-acme-chat', 'secret')], abortSignal: undefined }), /not found/);
    // and globex sending to the same id gets its own chat, while acme's stays as it was
    await chunksOf(await send('globex-token', 'acme-chat'));
    const own = (await (await fetch(`${url}/v1/chat/acme-chat/messages`, { headers: globex })).json()) as UIMessage[];
    assert.deepEqual(own.map((m) => m.role), ['user', 'assistant']);
    const history = (await (await fetch(`${url}/v1/chat/acme-chat/messages`, { headers: { authorization: 'Bearer acme-token' } })).json()) as UIMessage[];
    assert.deepEqual(history.map((m) => m.role), ['user', 'assistant']);
    assert.notEqual(history[1]!.id, own[1]!.id);
    // and a tenant whose token says createSessions: false gets 404 for a new chat, and nothing is created
    await assert.rejects(send('ro-token', 'ro-chat'), /not found/);
    assert.equal((await fetch(`${url}/v1/sessions/ro-chat`, { headers: { authorization: 'Bearer acme-token' } })).status, 404);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
});
