import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics_channel from 'node:diagnostics_channel';
import { MockLanguageModelV3 } from 'ai/test';
import { readUIMessageStream, simulateReadableStream, type UIMessage, type UIMessageChunk } from 'ai';
import type { LanguageModelV3StreamPart } from '@ai-sdk/provider';
import { CHANNELS, createArbor, MockProvider, type LlmTurnMessage, type UIChunk } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';

// The library side of the AI SDK chat protocol: createArbor({ model }) with any LanguageModel, the answer's
// UI message stream, per-session settings, finish reason and usage, stop().

/** A LanguageModelV3 that streams reasoning, then `text` in pieces, then a finish with usage. */
function scriptedModel(text: string[], options: { modelId?: string; finish?: 'stop' | 'length'; gate?: Promise<void> } = {}): MockLanguageModelV3 {
  return new MockLanguageModelV3({
    provider: 'scripted',
    modelId: options.modelId ?? 'scripted-1',
    doStream: async () => {
      const chunks: LanguageModelV3StreamPart[] = [
        { type: 'stream-start', warnings: [] },
        { type: 'reasoning-start', id: 'r' },
        { type: 'reasoning-delta', id: 'r', delta: 'thinking' },
        { type: 'reasoning-end', id: 'r' },
        { type: 'text-start', id: 't' },
        ...text.map((delta): LanguageModelV3StreamPart => ({ type: 'text-delta', id: 't', delta })),
        { type: 'text-end', id: 't' },
        {
          type: 'finish',
          finishReason: { unified: options.finish ?? 'stop', raw: options.finish ?? 'stop' },
          usage: { inputTokens: { total: 11, noCache: 11, cacheRead: undefined, cacheWrite: undefined }, outputTokens: { total: 7, text: 5, reasoning: 2 } },
        },
      ];
      return { stream: simulateReadableStream({ chunks, chunkDelayInMs: null }) };
    },
  });
}

async function collect(stream: AsyncIterable<UIChunk>): Promise<UIChunk[]> {
  const out: UIChunk[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

/** The SDK's own reader turns our chunks into the final UIMessage (it throws on a chunk it does not know). */
async function toMessage(chunks: readonly UIChunk[]): Promise<UIMessage | undefined> {
  const stream = new ReadableStream<UIMessageChunk>({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk as unknown as UIMessageChunk);
      c.close();
    },
  });
  let last: UIMessage | undefined;
  for await (const m of readUIMessageStream({ stream, terminateOnError: true })) last = m;
  return last;
}

test('createArbor({ model }) takes an AI SDK LanguageModelV3: reasoning and text stream as UI chunks, finish reason and usage are recorded', async (t) => {
  // given
  const { dir, cleanup } = tempDir();
  const model = scriptedModel(['Hel', 'lo', '!']);
  const arbor = await createArbor({ dataDir: dir, model });
  let again: Awaited<ReturnType<typeof createArbor>> | undefined;
  const turns: LlmTurnMessage[] = [];
  const onTurn = (m: unknown): void => void turns.push(m as LlmTurnMessage);
  diagnostics_channel.subscribe(CHANNELS.llmTurn, onTurn);
  t.after(async () => {
    diagnostics_channel.unsubscribe(CHANNELS.llmTurn, onTurn);
    await arbor.close();
    await again?.close();
    cleanup();
  });
  const session = arbor.session('lm');
  // when
  const r = await session.sendMessageStream({ parts: [{ type: 'text', text: 'Hi ' }, { type: 'text', text: 'there' }], clientMessageId: 'ui-1' });
  const chunks = await collect(r.stream);
  // then the stream is the SDK's protocol, from start to finish with the real reason
  assert.deepEqual(chunks.map((c) => c.type), ['start', 'reasoning-start', 'reasoning-delta', 'reasoning-end', 'text-start', 'text-delta', 'text-delta', 'text-delta', 'text-end', 'finish']);
  assert.equal(chunks.at(-1)!.finishReason, 'stop');
  const ui = await toMessage(chunks);
  assert.deepEqual(ui?.parts.map((p) => [p.type, (p as { text?: string }).text]), [['reasoning', 'thinking'], ['text', 'Hello!']]);
  // and the answer is journaled with its parts, finish reason and usage
  const answer = session.state.messages.at(-1)!;
  assert.equal(answer.content, 'Hello!');
  assert.deepEqual(answer.parts, [{ type: 'reasoning', text: 'thinking' }, { type: 'text', text: 'Hello!' }]);
  assert.equal(answer.metadata?.finishReason, 'stop');
  assert.deepEqual(answer.metadata?.usage, { inputTokens: 11, outputTokens: 7, totalTokens: 18, reasoningTokens: 2 });
  assert.equal(answer.metadata?.provider, 'scripted');
  assert.equal(answer.metadata?.model, 'scripted-1');
  // and the user message kept its parts and client id
  assert.deepEqual(session.uiMessages()[0], { id: 'ui-1', role: 'user', metadata: { clientMessageId: 'ui-1' }, parts: [{ type: 'text', text: 'Hi ', state: 'done' }, { type: 'text', text: 'there', state: 'done' }] });
  // and the model got the conversation
  assert.equal(model.doStreamCalls.length, 1);
  // and the turn was published for metrics
  assert.equal(turns.length, 1);
  assert.deepEqual({ ...turns[0], timeToFirstChunkMs: typeof turns[0]!.timeToFirstChunkMs, durationMs: typeof turns[0]!.durationMs, llmStartTime: typeof turns[0]!.llmStartTime, llmDurationMs: typeof turns[0]!.llmDurationMs }, {
    sessionId: 'lm',
    messageId: answer.id,
    requestMessageId: session.state.messages[0]!.id,
    llmStartTime: 'number',
    llmDurationMs: 'number',
    provider: 'scripted',
    model: 'scripted-1',
    outcome: 'completed',
    finishReason: 'stop',
    usage: { inputTokens: 11, outputTokens: 7, totalTokens: 18, reasoningTokens: 2 },
    timeToFirstChunkMs: 'number',
    durationMs: 'number',
    chunks: 4,
  });
  // and the state survives a restart with its parts
  await arbor.close();
  again = await createArbor({ dataDir: dir, model });
  assert.deepEqual((await again.session('lm').load()).messages.at(-1)!.parts, answer.parts);
});

test('per-session model, system, temperature and maxOutputTokens set through changeConfig apply to the next turn', async (t) => {
  // given two models and a session that picks the second, with settings
  const { dir, cleanup } = tempDir();
  const first = scriptedModel(['one']);
  const second = scriptedModel(['two'], { modelId: 'scripted-2', finish: 'length' });
  const arbor = await createArbor({ dataDir: dir, model: first, models: { 'scripted-2': second } });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  const session = arbor.session('settings');
  await session.changeConfig('model', 'scripted-2');
  await session.changeConfig('system', 'Be brief.');
  await session.changeConfig('temperature', 0.3);
  await session.changeConfig('maxOutputTokens', 50);
  // when
  await collect((await session.sendMessageStream({ parts: [{ type: 'text', text: 'go' }] })).stream);
  // then the second model answered, with the settings
  assert.equal(first.doStreamCalls.length, 0);
  assert.equal(second.doStreamCalls.length, 1);
  const call = second.doStreamCalls[0]!;
  assert.deepEqual(call.prompt[0], { role: 'system', content: 'Be brief.' });
  assert.deepEqual([call.temperature, call.maxOutputTokens], [0.3, 50]);
  const answer = session.state.messages.at(-1)!;
  assert.deepEqual([answer.content, answer.metadata?.model, answer.metadata?.finishReason], ['two', 'scripted-2', 'length']);
  // and a setting of the wrong type is not applied (config holds any JSON), the rest still is
  await session.changeConfig('temperature', 'hot');
  await collect((await session.sendMessageStream({ parts: [{ type: 'text', text: 'more' }] })).stream);
  assert.deepEqual([second.doStreamCalls[1]!.temperature, second.doStreamCalls[1]!.maxOutputTokens], [undefined, 50]);
  // and an unknown model fails the turn with an interruption naming it
  await session.changeConfig('model', 'nope');
  const chunks = await collect((await session.sendMessageStream({ parts: [{ type: 'text', text: 'again' }] })).stream);
  assert.deepEqual(chunks.map((c) => c.type), ['start', 'error']);
  assert.match(String(chunks[1]!.errorText), /no model "nope"/);
  assert.equal(session.state.messages.at(-1)!.metadata?.interrupted, true);
});

test('the mock provider reports usage, and maxOutputTokens below its chunk count ends the answer with finish reason length', async (t) => {
  const { dir, cleanup } = tempDir();
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 4, chunkDelayMs: 0 }) });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  const session = arbor.session('mock');
  await collect((await session.sendMessageStream({ parts: [{ type: 'text', text: 'abcd' }] })).stream);
  await session.changeConfig('maxOutputTokens', 2);
  const chunks = await collect((await session.sendMessageStream({ parts: [{ type: 'text', text: 'abcdefgh' }] })).stream);
  const [full, cut] = session.state.messages.filter((m) => m.role === 'assistant');
  assert.deepEqual([full!.metadata?.finishReason, full!.metadata?.usage], ['stop', { inputTokens: 1, outputTokens: 4, totalTokens: 5 }]);
  assert.equal(cut!.metadata?.finishReason, 'length');
  assert.equal((cut!.metadata?.usage as { outputTokens: number }).outputTokens, 2);
  assert.equal(chunks.at(-1)!.finishReason, 'length');
});

test('session.stop() aborts the provider request and keeps the partial answer as the final one, stopped, with one terminal event', async (t) => {
  // given an answer that streams slowly
  const { dir, cleanup } = tempDir();
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 50, chunkDelayMs: 20 }) });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  const session = arbor.session('stop');
  const r = await session.sendMessageStream({ parts: [{ type: 'text', text: 'a long answer please' }] });
  const seen: UIChunk[] = [];
  let twoChunks!: () => void;
  const streaming = new Promise<void>((resolve) => (twoChunks = resolve));
  const reading = (async () => {
    for await (const c of r.stream) {
      seen.push(c);
      if (seen.filter((x) => x.type === 'text-delta').length === 2) twoChunks();
    }
  })();
  await streaming;
  // when
  const result = await session.stop();
  await reading;
  // then the stream ended with a finish saying stopped, and the partial answer is the final one
  assert.equal(result.stopped, true);
  assert.equal(seen.at(-1)!.type, 'finish');
  assert.equal((seen.at(-1)!.messageMetadata as { stopped?: boolean }).stopped, true);
  const answer = session.state.messages.at(-1)!;
  assert.equal(answer.role, 'assistant');
  assert.equal(answer.metadata?.stopped, true);
  assert.ok(answer.content.length > 0 && answer.content.length < 'Echo: a long answer please'.length + 30);
  const text = seen.filter((c) => c.type === 'text-delta').map((c) => c.delta).join('');
  assert.equal(answer.content, text);
  // and exactly one terminal event after the start
  const events = await session.events();
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(-3), ['user_message_sent', 'assistant_stream_started', 'assistant_response_completed']);
  // and nothing streams any more: a resume has nothing, and a second stop stops nothing
  assert.equal(session.resumeStream(), undefined);
  assert.deepEqual(await session.stop(), { stopped: false, messageId: undefined });
});
