import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { MockProvider, publishToolStep, type LlmProvider, type LlmStreamPart, type StreamRequest } from '../src/index.ts';
import { textOfStream } from '../src/llm/provider.ts';
import { loadConfig, startServer } from '../src/server.ts';
import { tempDir } from './helpers/tmp.ts';

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
