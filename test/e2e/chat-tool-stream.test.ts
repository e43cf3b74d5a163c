import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DefaultChatTransport, readUIMessageStream, uiMessageChunkSchema, type UIMessage, type UIMessageChunk } from 'ai';
import { startServe } from '../helpers/serve-process.ts';
import { mcpTestServerConfig, readInvocations } from '../helpers/mcp-test-server.ts';
import { startOpenAiCompatibleServer } from '../helpers/openai-compatible-server.ts';
import { tempDir } from '../helpers/tmp.ts';

// End-to-end: the chunks of a multi-step turn with a tool, as the AI SDK's DefaultChatTransport reads them from a
// real `arbor serve` child (model: a local OpenAI-compatible server that streams the tool call's arguments in two
// pieces; tool: a real stdio MCP server): tool-input-start / tool-input-delta before tool-input-available, and
// start-step / finish-step around each step; a resume replays them from the first chunk.

const user = (id: string, text: string): UIMessage => ({ id, role: 'user', parts: [{ type: 'text', text }] });

async function readAll(reader: ReadableStreamDefaultReader<UIMessageChunk>, into: UIMessageChunk[] = []): Promise<UIMessageChunk[]> {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return into;
    into.push(value);
  }
}

/** Each chunk checked against the SDK's own schema, then the message the SDK's reader builds (it refuses chunks out of protocol order). */
async function messageOf(chunks: readonly UIMessageChunk[]): Promise<UIMessage> {
  const schema = uiMessageChunkSchema();
  for (const c of chunks) {
    const r = await schema.validate!(c);
    assert.equal(r.success, true, `not a UI message chunk: ${JSON.stringify(c)}`);
  }
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

/** The chunk types with text and input deltas collapsed (one entry per run). */
function shape(chunks: readonly UIMessageChunk[]): string[] {
  const out: string[] = [];
  for (const c of chunks) if (out.at(-1) !== c.type || !c.type.endsWith('-delta')) out.push(c.type);
  return out;
}

test('a turn with a tool streams tool-input-start/-delta before tool-input-available and start-step/finish-step around each step; a resume replays them from the first chunk', async (t) => {
  const llm = await startOpenAiCompatibleServer({ chunks: ['Let me ', 'look.'], toolCall: { name: 'lookup', arguments: '{"key":"k1"}' } });
  t.after(() => llm.close());
  const { dir, cleanup } = tempDir('arbor-tool-stream-');
  t.after(cleanup);
  const log = join(dir, 'invocations.log');
  const config = join(dir, 'arbor.json');
  writeFileSync(config, JSON.stringify({ mcpServers: { test: mcpTestServerConfig(log) } }));
  const server = await startServe(['--data-dir', join(dir, 'data'), '--config', config], { ARBOR_LLM: 'openai-compatible', ARBOR_LLM_BASE_URL: llm.baseURL, ARBOR_LLM_MODEL: 'test-model' });
  t.after(() => server.stop('SIGKILL'));
  const { url } = server;
  const transport = new DefaultChatTransport<UIMessage>({ api: `${url}/v1/chat` });

  // when the model calls a tool, streaming its input, and answers after the result
  const chunks = await readAll((await transport.sendMessages({ trigger: 'submit-message', chatId: 'tools', messageId: undefined, messages: [user('u-1', 'look k1 up')], abortSignal: undefined })).getReader());
  // then each step is framed, and the call's input streams before it is available, then its output
  assert.deepEqual(shape(chunks), [
    'start',
    'start-step', 'text-start', 'text-delta', 'text-end',
    'tool-input-start', 'tool-input-delta', 'tool-input-available', 'tool-output-available',
    'finish-step',
    'start-step', 'text-start', 'text-delta', 'text-end', 'finish-step',
    'finish',
  ]);
  const inputStart = chunks.find((c) => c.type === 'tool-input-start') as { toolCallId: string; toolName: string; dynamic?: boolean };
  assert.deepEqual([inputStart.toolName, inputStart.dynamic], ['lookup', true]);
  const deltas = chunks.filter((c): c is Extract<UIMessageChunk, { type: 'tool-input-delta' }> => c.type === 'tool-input-delta');
  assert.ok(deltas.length >= 2, 'the arguments came in pieces');
  assert.ok(deltas.every((d) => d.toolCallId === inputStart.toolCallId));
  assert.equal(deltas.map((d) => d.inputTextDelta).join(''), '{"key":"k1"}');
  // and the SDK's schema and reader take every chunk, and build the steps
  const message = await messageOf(chunks);
  assert.deepEqual(message.parts.map((p) => p.type), ['step-start', 'text', 'dynamic-tool', 'step-start', 'text']);
  assert.deepEqual((message.parts[2] as { state: string; input: unknown }).state, 'output-available');
  assert.deepEqual((message.parts[2] as { input: unknown }).input, { key: 'k1' });
  assert.equal(readInvocations(log).length, 1);
  assert.equal(chunks.at(-1)!.type, 'finish');
  assert.equal((chunks.at(-1) as { finishReason?: string }).finishReason, 'stop');

  // when a turn of another chat hangs in its second step (the model sends nothing) and a client reconnects meanwhile
  llm.setBehavior({ chunkDelayMs: 600_000 });
  const first = (await transport.sendMessages({ trigger: 'submit-message', chatId: 'resumed', messageId: undefined, messages: [user('u-2', 'look k1 up')], abortSignal: undefined })).getReader();
  const seen: UIMessageChunk[] = [];
  while (seen.filter((c) => c.type === 'start-step').length < 2) seen.push((await first.read()).value!);
  const resumed = await transport.reconnectToStream({ chatId: 'resumed' });
  assert.ok(resumed !== null, 'a turn is running');
  // and the turn is then stopped
  assert.equal((await fetch(`${url}/v1/chat/resumed/stop`, { method: 'POST' })).status, 200);
  const all = await readAll(first, seen);
  const replayed = await readAll(resumed.getReader());
  // then the resume got the same chunks from the first one (tool input deltas, steps and all), through the finish
  assert.deepEqual(replayed, all);
  assert.deepEqual(shape(replayed).slice(0, 10), ['start', 'start-step', 'text-start', 'text-delta', 'text-end', 'tool-input-start', 'tool-input-delta', 'tool-input-available', 'tool-output-available', 'finish-step']);
  assert.equal(replayed.at(-1)!.type, 'finish');
  const again = await messageOf(replayed);
  assert.deepEqual(again.parts.map((p) => p.type), ['step-start', 'text', 'dynamic-tool', 'step-start']);
  assert.equal((await fetch(`${url}/v1/chat/resumed/stream`)).status, 204);
});
