import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AiSdkProvider, createArbor, MockProvider, subscribeTelemetry, withTraceParent, type JournalWriteMessage, type LlmTurnMessage, type TurnStartMessage } from '../src/index.ts';
import { mockReplyChunks } from '../src/llm/mock-provider.ts';
import { startOpenAiCompatibleServer } from './helpers/openai-compatible-server.ts';
import { HangingProvider } from './helpers/hanging-provider.ts';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { tempDir } from './helpers/tmp.ts';

/** Collects what the runtime publishes on the turn channels and the journal channel while `fn` runs. */
async function recording(fn: (seen: { starts: TurnStartMessage[]; turns: LlmTurnMessage[]; batches: JournalWriteMessage[] }) => Promise<void>): Promise<void> {
  const seen = { starts: [] as TurnStartMessage[], turns: [] as LlmTurnMessage[], batches: [] as JournalWriteMessage[] };
  const stop = subscribeTelemetry({ turnStart: (m) => seen.starts.push(m), llmTurn: (m) => seen.turns.push(m), journalWrite: (m) => seen.batches.push(m) });
  try {
    await fn(seen);
  } finally {
    stop();
  }
}

test('a completed turn publishes its start (with the caller\'s trace parent) and its facts: finish reason, mock token usage, time to first chunk', async () => {
  const { dir, cleanup } = tempDir('arbor-turns-');
  const arbor = await createArbor({ dataDir: join(dir, 'data'), llm: new MockProvider({ chunks: 3, chunkDelayMs: 0 }) });
  try {
    await recording(async ({ starts, turns, batches }) => {
      // given a message sent inside a trace parent
      const chat = arbor.session('turns');
      const parent = { span: 'http-request-1' };
      const sent = await withTraceParent(parent, () => chat.sendMessage({ content: 'three small words' }));
      await chat.idle();
      // then the turn started with that parent, and ended completed with the mock's facts
      assert.equal(starts.length, 1);
      const start = starts[0]!;
      assert.deepEqual([start.sessionId, start.requestMessageId, start.provider, start.model, start.parent], ['turns', sent.messageId, 'mock', 'mock-echo', parent]);
      assert.equal(turns.length, 1);
      const turn = turns[0]!;
      assert.equal(turn.messageId, start.messageId);
      assert.equal(turn.outcome, 'completed');
      assert.equal(turn.finishReason, 'stop');
      assert.deepEqual(turn.usage, { inputTokens: 3, outputTokens: 3, totalTokens: 6 });
      assert.equal(turn.chunks, mockReplyChunks([{ role: 'user', content: 'three small words' }], 3).length);
      assert.ok(turn.timeToFirstChunkMs! >= 0 && turn.llmDurationMs! >= turn.timeToFirstChunkMs!, JSON.stringify(turn));
      assert.ok(turn.llmStartTime! >= start.startTime);
      // and the journal batches name the session they acknowledged
      assert.ok(batches.length > 0 && batches.every((b) => b.sessionIds?.includes('turns')), JSON.stringify(batches));
    });
  } finally {
    await arbor.close();
    cleanup();
  }
});

test('interrupted turns say why: provider_error with the HTTP status, shutdown at close', async () => {
  const fake = await startOpenAiCompatibleServer({ mode: 'http-500' });
  const { dir, cleanup } = tempDir('arbor-turns-err-');
  try {
    await recording(async ({ turns }) => {
      // given a provider that answers 500
      const failing = await createArbor({ dataDir: join(dir, 'a'), llm: new AiSdkProvider({ baseURL: fake.baseURL, model: 'test-model', maxRetries: 0 }) });
      await failing.session('bad').sendMessage({ content: 'hi' });
      await failing.session('bad').idle();
      await failing.close();
      // then the turn is a provider error carrying the status
      assert.equal(turns.length, 1);
      assert.deepEqual([turns[0]!.outcome, turns[0]!.interruption, turns[0]!.statusCode, turns[0]!.provider, turns[0]!.model], ['interrupted', 'provider_error', 500, 'openai-compatible', 'test-model']);
      assert.equal(turns[0]!.timeToFirstChunkMs, undefined);
      // given an answer streaming when the runtime closes
      const llm = new HangingProvider();
      const closing = await createArbor({ dataDir: join(dir, 'b'), llm });
      const hung = llm.nextHang();
      await closing.session('long').sendMessage({ content: 'hang on' });
      await hung;
      await closing.close();
      // then it ended as a shutdown, after its first chunk
      const last = turns.at(-1)!;
      assert.deepEqual([last.sessionId, last.outcome, last.interruption, last.chunks], ['long', 'interrupted', 'shutdown', 1]);
      assert.ok(last.timeToFirstChunkMs! >= 0);
    });
    // and an OpenAI-compatible answer reports the provider's finish reason
    fake.setBehavior({ mode: 'ok' });
    await recording(async ({ turns }) => {
      const ok = await createArbor({ dataDir: join(dir, 'c'), llm: new AiSdkProvider({ baseURL: fake.baseURL, model: 'test-model', maxRetries: 0 }) });
      await ok.session('good').sendMessage({ content: 'hi' });
      await ok.session('good').idle();
      await ok.close();
      assert.deepEqual([turns[0]!.outcome, turns[0]!.finishReason], ['completed', 'stop']);
    });
  } finally {
    await fake.close();
    cleanup();
  }
});

test('AiSdkProvider telemetry passes experimental_telemetry to the AI SDK: its spans carry the session and message ids; off by default', async () => {
  const fake = await startOpenAiCompatibleServer({ mode: 'ok' });
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const { dir, cleanup } = tempDir('arbor-aisdk-otel-');
  try {
    const tracer = provider.getTracer('ai-test');
    for (const [name, telemetry] of [['traced', { isEnabled: true, tracer }], ['quiet', undefined]] as const) {
      const arbor = await createArbor({ dataDir: join(dir, name), llm: new AiSdkProvider({ baseURL: fake.baseURL, model: 'test-model', maxRetries: 0, ...(telemetry === undefined ? {} : { telemetry }) }) });
      await arbor.session(name).sendMessage({ content: 'hi' });
      await arbor.session(name).idle();
      await arbor.close();
    }
    const spans = exporter.getFinishedSpans();
    const root = spans.find((s) => s.name === 'ai.streamText');
    assert.ok(root !== undefined, spans.map((s) => s.name).join(', '));
    assert.equal(root.attributes['ai.telemetry.metadata.arbor.session.id'], 'traced');
    assert.equal(typeof root.attributes['ai.telemetry.metadata.arbor.message.id'], 'string');
    assert.ok(!spans.some((s) => s.attributes['ai.telemetry.metadata.arbor.session.id'] === 'quiet'), 'telemetry is off unless asked for');
    assert.throws(() => new AiSdkProvider({ baseURL: fake.baseURL, model: 'm', telemetry: 'yes' as never }), TypeError);
  } finally {
    await provider.shutdown();
    await fake.close();
    cleanup();
  }
});
