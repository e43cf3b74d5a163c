import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SpanKind, trace } from '@opentelemetry/api';
import { tool } from 'ai';
import { z } from 'zod';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { MockProvider, publishToolStep, type LlmProvider, type LlmStreamPart, type StreamRequest } from '../src/index.ts';
import { textOfStream } from '../src/llm/provider.ts';
import { loadConfig, startServer } from '../src/server.ts';
import { tempDir } from './helpers/tmp.ts';
import { startOpenAiCompatibleServer } from './helpers/openai-compatible-server.ts';

/** The mock, plus one tool step inside each answer, published the way a tool runner does (publishToolStep). */
class ToolUsingProvider implements LlmProvider {
  readonly name = 'mock';
  readonly model = 'mock-echo';
  readonly #mock = new MockProvider({ chunks: 2, chunkDelayMs: 0 });

  stream(request: StreamRequest): AsyncIterable<string> {
    return textOfStream(this.streamParts(request));
  }

  /** Parts, so the mock's finish reason and token usage reach the turn. */
  async *streamParts(request: StreamRequest): AsyncGenerator<LlmStreamPart, void, undefined> {
    const startTime = performance.timeOrigin + performance.now();
    publishToolStep(() => ({ sessionId: request.sessionId, messageId: request.messageId, toolName: 'search', toolCallId: 'call-1', startTime, durationMs: 1, outcome: 'ok' }));
    yield* this.#mock.streamParts(request);
  }
}

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

test('traces: HTTP request → turn → LLM call and tool step; journal batches are linked to the turn they acknowledged', async () => {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const { dir, cleanup } = tempDir('arbor-traces-');
  const server = await startServer(loadConfig({ env: {}, overrides: { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent' } }), { tracerProvider, arborOverrides: { llm: new ToolUsingProvider() } });
  try {
    // when a session is created and a message answered over HTTP
    assert.equal((await fetch(`${server.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'traced' }) })).status, 201);
    assert.equal((await fetch(`${server.url}/v1/sessions/traced/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: 'find it' }) })).status, 202);
    await server.arbor.session('traced').idle();
    const spans = exporter.getFinishedSpans();
    const named = (name: string) => spans.filter((s) => s.name === name);
    // then the request has its SERVER span, named by its route
    const [request] = named('POST /v1/sessions/:id/messages');
    assert.ok(request !== undefined, spans.map((s) => s.name).join(', '));
    assert.equal(request.kind, SpanKind.SERVER);
    assert.deepEqual([request.attributes['http.route'], request.attributes['http.response.status_code'], request.attributes['http.request.method']], ['/v1/sessions/:id/messages', 202, 'POST']);
    // and the turn is its child, in its trace
    const [turn] = named('arbor.turn');
    assert.ok(turn !== undefined);
    assert.equal(turn.spanContext().traceId, request.spanContext().traceId);
    assert.equal(parentOf(turn), request.spanContext().spanId);
    assert.deepEqual([turn.attributes['arbor.session.id'], turn.attributes['arbor.turn.outcome'], turn.attributes['gen_ai.provider.name']], ['traced', 'completed', 'mock']);
    // and the LLM call and the tool step are the turn's children
    const [llm] = named('chat mock-echo');
    assert.ok(llm !== undefined);
    assert.equal(llm.kind, SpanKind.CLIENT);
    assert.equal(parentOf(llm), turn.spanContext().spanId);
    assert.deepEqual([llm.attributes['gen_ai.response.finish_reasons'], llm.attributes['gen_ai.usage.input_tokens'], llm.attributes['gen_ai.usage.output_tokens']], [['stop'], 2, 2]);
    const [tool] = named('execute_tool search');
    assert.ok(tool !== undefined);
    assert.equal(parentOf(tool), turn.spanContext().spanId);
    assert.equal(tool.attributes['gen_ai.tool.call.id'], 'call-1');
    // and the journal batches that acknowledged the turn's records (its start and its answer) link to it
    const linked = named('arbor.journal.batch').filter((b) => b.links.some((l) => l.context.spanId === turn.spanContext().spanId));
    assert.ok(linked.length >= 2, `batches linked to the turn: ${linked.length}`);
    assert.ok(linked.every((b) => b.parentSpanContext === undefined && (b.attributes['arbor.journal.batch.records'] as number) >= 1));
    // and the turn ends after its answer was journaled, the LLM call inside it
    const t = (hr: [number, number]) => hr[0] * 1e3 + hr[1] / 1e6;
    assert.ok(t(llm.startTime) >= t(turn.startTime) && t(llm.endTime) <= t(turn.endTime));
  } finally {
    await server.close();
    await tracerProvider.shutdown();
    cleanup();
  }
});

test('llmTelemetry: every model step of a multi-step tool turn passes experimental_telemetry to the AI SDK, its spans carrying the session and message ids', async () => {
  const fake = await startOpenAiCompatibleServer({ mode: 'ok', chunks: ['found ', 'it'], toolCall: { name: 'lookup', arguments: '{"key":"k1"}' } });
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  // llmTelemetry: true hands the SDK `isEnabled: true`, so its spans go to the global tracer provider
  trace.setGlobalTracerProvider(tracerProvider);
  const { dir, cleanup } = tempDir('arbor-step-traces-');
  const looked: unknown[] = [];
  const lookup = tool({ description: 'look a key up', inputSchema: z.object({ key: z.string() }), execute: async (input: { key: string }) => (looked.push(input), { value: 42 }) });
  const config = loadConfig({ env: {}, overrides: { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent', llm: 'openai-compatible', llmBaseUrl: fake.baseURL, llmModel: 'test-model', llmMaxRetries: 0, llmTelemetry: true } });
  const server = await startServer(config, { tracerProvider, arborOverrides: { tools: { lookup } } });
  try {
    // when a message is answered in two steps: the model calls the tool, then answers with its result
    assert.equal((await fetch(`${server.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'stepped' }) })).status, 201);
    assert.equal((await fetch(`${server.url}/v1/sessions/stepped/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: 'look k1 up' }) })).status, 202);
    await server.arbor.session('stepped').idle();
    assert.deepEqual(looked, [{ key: 'k1' }]);
    const answer = server.arbor.session('stepped').state.messages.at(-1)!;
    assert.equal(answer.role, 'assistant');

    // then each step has its own ai.streamText span, with the session and the answer's message id in its metadata
    const steps = exporter.getFinishedSpans().filter((s) => s.name === 'ai.streamText');
    assert.equal(steps.length, 2, exporter.getFinishedSpans().map((s) => s.name).join(', '));
    for (const s of steps) {
      assert.equal(s.attributes['ai.telemetry.functionId'], 'arbor.step');
      assert.equal(s.attributes['ai.telemetry.metadata.arbor.session.id'], 'stepped');
      assert.equal(s.attributes['ai.telemetry.metadata.arbor.message.id'], answer.id);
    }
    // and the SDK's call spans inside them too (one per step)
    const calls = exporter.getFinishedSpans().filter((s) => s.name === 'ai.streamText.doStream');
    assert.equal(calls.length, 2);
    assert.ok(calls.every((s) => s.attributes['ai.telemetry.metadata.arbor.message.id'] === answer.id));
  } finally {
    await server.close();
    trace.disable();
    await tracerProvider.shutdown();
    await fake.close();
    cleanup();
  }
});
