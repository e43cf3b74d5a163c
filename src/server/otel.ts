import { context, metrics, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type BatchObservableCallback, type Context, type Link, type Meter, type Span, type Tracer } from '@opentelemetry/api';
import { subscribeTelemetry, withTraceParent, type Arbor } from '../index.ts';

/** Names of the OpenTelemetry instruments (meter `arbor`). Durations are in seconds (unit `s`), as the semantic conventions say. */
export const OTEL_INSTRUMENTS = Object.freeze({
  journalWriteDuration: 'arbor.journal.write.duration',
  journalBatchSize: 'arbor.journal.batch.size',
  snapshotSize: 'arbor.snapshot.size',
  snapshotDuration: 'arbor.snapshot.duration',
  recoveries: 'arbor.recoveries',
  recoveryDuration: 'arbor.recovery.duration',
  errors: 'arbor.errors',
  hotSessions: 'arbor.hot.sessions',
  hotBytes: 'arbor.hot.bytes',
  journalQueueDepth: 'arbor.journal.queue.depth',
  journalLastFlushAge: 'arbor.journal.last_flush.age',
  journalBytes: 'arbor.journal.bytes',
  activeSessions: 'arbor.sessions.active',
  mailboxDepth: 'arbor.mailbox.depth',
  llmStreamsStarted: 'arbor.llm.streams.started',
  llmStreamsCompleted: 'arbor.llm.streams.completed',
  llmStreamsInterrupted: 'arbor.llm.streams.interrupted',
  llmTimeToFirstChunk: 'arbor.llm.time_to_first_chunk',
  llmStreamDuration: 'arbor.llm.stream.duration',
  llmProviderErrors: 'arbor.llm.provider.errors',
  /** the GenAI semantic conventions' token histogram */
  llmTokenUsage: 'gen_ai.client.token.usage',
  toolStepDuration: 'arbor.tool.step.duration',
});

/** Names of the spans (tracer `arbor`); docs/metrics.md lists their attributes. */
export const OTEL_SPANS = Object.freeze({
  /** the HTTP request: `<METHOD> <route>`, e.g. `POST /v1/sessions/:id/messages` */
  turn: 'arbor.turn',
  /** the LLM call of a turn: `chat <model>` (GenAI conventions) */
  llmCallPrefix: 'chat',
  /** one tool step: `execute_tool <tool>` (GenAI conventions) */
  toolStepPrefix: 'execute_tool',
  journalBatch: 'arbor.journal.batch',
});

const SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304];

/**
 * OpenTelemetry metrics of one Arbor, from the telemetry channels and
 * `arbor.health()`. The instruments come from `metrics.getMeter('arbor')`
 * (the global API): they are no-ops unless the application installed an SDK
 * MeterProvider. Returns the function that stops them.
 */
export function startOtelMetrics(arbor: Arbor, meter: Meter = metrics.getMeter('arbor')): () => void {
  const I = OTEL_INSTRUMENTS;
  const seconds = (name: string, description: string) => meter.createHistogram(name, { unit: 's', description, advice: { explicitBucketBoundaries: SECONDS_BUCKETS } });
  const writeDuration = seconds(I.journalWriteDuration, 'Group-commit batch: write plus sync');
  const batchSize = meter.createHistogram(I.journalBatchSize, { unit: '{record}', description: 'Records per group-commit batch' });
  const snapshotSize = meter.createHistogram(I.snapshotSize, { unit: 'By', description: 'Snapshot size' });
  const snapshotDuration = seconds(I.snapshotDuration, 'Snapshot write (durable)');
  const recoveries = meter.createCounter(I.recoveries, { description: 'Sessions recovered' });
  const recoveryDuration = seconds(I.recoveryDuration, 'Recovery of one session');
  const errors = meter.createCounter(I.errors, { description: 'Errors the runtime handled' });
  const started = meter.createCounter(I.llmStreamsStarted, { unit: '{stream}', description: 'Answers (turns) started' });
  const completed = meter.createCounter(I.llmStreamsCompleted, { unit: '{stream}', description: 'Answers completed, by finish reason' });
  const interrupted = meter.createCounter(I.llmStreamsInterrupted, { unit: '{stream}', description: 'Answers interrupted, by reason' });
  const timeToFirstChunk = seconds(I.llmTimeToFirstChunk, 'From the LLM call to its first chunk');
  const streamDuration = seconds(I.llmStreamDuration, 'The LLM call, from the request to its last chunk or failure');
  const providerErrors = meter.createCounter(I.llmProviderErrors, { unit: '{error}', description: 'Provider failures, by HTTP status' });
  const tokenUsage = meter.createHistogram(I.llmTokenUsage, { unit: '{token}', description: 'Tokens per LLM call, by type (input, output)', advice: { explicitBucketBoundaries: TOKEN_BUCKETS } });
  const toolStepDuration = seconds(I.toolStepDuration, 'One tool step');
  const unsubscribe = subscribeTelemetry({
    journalWrite: (m) => {
      writeDuration.record(m.durationMs / 1000, { durability: m.durability });
      batchSize.record(m.batchSize);
    },
    snapshot: (m) => {
      snapshotSize.record(m.bytes);
      snapshotDuration.record(m.durationMs / 1000);
    },
    recovery: (m) => {
      recoveries.add(1, { kind: m.kind, trigger: m.trigger, status: m.status });
      recoveryDuration.record(m.durationMs / 1000, { kind: m.kind });
    },
    error: (m) => errors.add(1, { source: m.source, code: m.code }),
    turnStart: (m) => started.add(1, genAi(m.provider, m.model)),
    llmTurn: (m) => {
      const attrs = genAi(m.provider, m.model);
      if (m.outcome === 'completed') completed.add(1, { ...attrs, 'gen_ai.response.finish_reason': m.finishReason ?? 'unknown' });
      else interrupted.add(1, { ...attrs, 'arbor.turn.interruption': m.interruption ?? 'aborted' });
      if (m.interruption === 'provider_error') providerErrors.add(1, { ...attrs, ...(m.statusCode === undefined ? {} : { 'http.response.status_code': m.statusCode }) });
      if (m.timeToFirstChunkMs !== undefined) timeToFirstChunk.record(m.timeToFirstChunkMs / 1000, attrs);
      if (m.llmDurationMs !== undefined) streamDuration.record(m.llmDurationMs / 1000, { ...attrs, 'arbor.turn.outcome': m.outcome });
      if (m.usage?.inputTokens !== undefined) tokenUsage.record(m.usage.inputTokens, { ...attrs, 'gen_ai.operation.name': 'chat', 'gen_ai.token.type': 'input' });
      if (m.usage?.outputTokens !== undefined) tokenUsage.record(m.usage.outputTokens, { ...attrs, 'gen_ai.operation.name': 'chat', 'gen_ai.token.type': 'output' });
    },
    toolStep: (m) => toolStepDuration.record(m.durationMs / 1000, { 'gen_ai.tool.name': m.toolName, 'arbor.tool.outcome': m.outcome }),
  });
  const hotSessions = meter.createObservableGauge(I.hotSessions, { description: 'Sessions in the hot tier' });
  const hotBytes = meter.createObservableGauge(I.hotBytes, { unit: 'By', description: 'Approximate bytes of the hot tier' });
  const queueDepth = meter.createObservableGauge(I.journalQueueDepth, { unit: '{record}', description: 'Journal records waiting for the writer' });
  const lastFlushAge = meter.createObservableGauge(I.journalLastFlushAge, { unit: 's', description: 'Time since the journal last flushed' });
  const journalBytes = meter.createObservableGauge(I.journalBytes, { unit: 'By', description: 'Bytes in journal segments' });
  const activeSessions = meter.createObservableGauge(I.activeSessions, { unit: '{session}', description: 'Sessions with a live actor' });
  const mailboxDepth = meter.createObservableGauge(I.mailboxDepth, { unit: '{command}', description: "Commands queued or running in the sessions' mailboxes (all together)" });
  const observables = [hotSessions, hotBytes, queueDepth, lastFlushAge, journalBytes, activeSessions, mailboxDepth];
  // One health() read per collection for all gauges.
  const observe: BatchObservableCallback = (result) => {
    const h = arbor.health();
    result.observe(hotSessions, h.hot.sessions);
    result.observe(hotBytes, h.hot.approxBytes);
    result.observe(queueDepth, h.journal.queueDepth);
    result.observe(lastFlushAge, h.journal.lastFlushAgeMs / 1000);
    result.observe(journalBytes, h.journal.bytes);
    result.observe(activeSessions, h.sessions.active);
    result.observe(mailboxDepth, h.mailbox.queued);
  };
  meter.addBatchObservableCallback(observe, observables);
  return () => {
    unsubscribe();
    meter.removeBatchObservableCallback(observe, observables);
  };
}

function genAi(provider: string, model: string): Attributes {
  return { 'gen_ai.provider.name': provider, 'gen_ai.request.model': model };
}

function isContext(value: unknown): value is Context {
  return typeof value === 'object' && value !== null && typeof (value as Context).getValue === 'function' && typeof (value as Context).setValue === 'function';
}

/** Epoch milliseconds on the clock of the runtime's `*Time` fields. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What the HTTP layer tells the tracer about a request once it was handled. */
export interface HttpOutcome {
  /** the route pattern (`/v1/sessions/:id`), never the raw path */
  route: string;
  status: number;
}

/** Traces of one Arbor (see {@link startOtelTracing}). */
export interface OtelTracing {
  /**
   * Runs the handling of one HTTP request inside its SERVER span (a W3C
   * `traceparent` header continues the caller's trace when a propagator is
   * installed). The span is the trace parent of the turns the request starts.
   */
  request(method: string, path: string, headers: Headers, handle: () => Promise<void>, outcome: () => HttpOutcome): Promise<void>;
  stop(): void;
}

/**
 * OpenTelemetry traces of one Arbor, from the telemetry channels: a span per
 * HTTP request (through {@link OtelTracing.request}), per turn (the child of
 * the request that started it), per LLM call and per tool step (children of
 * their turn), and per journal batch, LINKED to the turns whose records it
 * acknowledged (a batch serves many turns, so it is their link, not their
 * child). Spans come from `trace.getTracer('arbor')` unless a tracer is
 * given: non-recording unless the application installed an SDK TracerProvider.
 */
export function startOtelTracing(tracer: Tracer = trace.getTracer('arbor')): OtelTracing {
  /** Open turns by their id (the assistant message), and the open turn of each session. */
  const turns = new Map<string, { span: Span; ctx: Context; sessionId: string }>();
  const turnOfSession = new Map<string, string>();
  const unsubscribe = subscribeTelemetry({
    turnStart: (m) => {
      const parent = isContext(m.parent) ? m.parent : ROOT_CONTEXT;
      const span = tracer.startSpan(
        OTEL_SPANS.turn,
        {
          kind: SpanKind.INTERNAL,
          startTime: m.startTime,
          attributes: {
            'arbor.session.id': m.sessionId,
            'arbor.message.id': m.messageId,
            'arbor.request_message.id': m.requestMessageId,
            ...(m.retryOf === undefined ? {} : { 'arbor.retry_of': m.retryOf }),
            ...genAi(m.provider, m.model),
          },
        },
        parent,
      );
      turns.set(m.messageId, { span, ctx: trace.setSpan(parent, span), sessionId: m.sessionId });
      turnOfSession.set(m.sessionId, m.messageId);
    },
    llmTurn: (m) => {
      const turn = turns.get(m.messageId);
      if (turn === undefined) return; // started before tracing did
      turns.delete(m.messageId);
      if (turnOfSession.get(m.sessionId) === m.messageId) turnOfSession.delete(m.sessionId);
      if (m.llmStartTime !== undefined) {
        const llm = tracer.startSpan(
          `${OTEL_SPANS.llmCallPrefix} ${m.model}`,
          {
            kind: SpanKind.CLIENT,
            startTime: m.llmStartTime,
            attributes: {
              'gen_ai.operation.name': 'chat',
              ...genAi(m.provider, m.model),
              'arbor.llm.chunks': m.chunks,
              ...(m.finishReason === undefined ? {} : { 'gen_ai.response.finish_reasons': [m.finishReason] }),
              ...(m.usage?.inputTokens === undefined ? {} : { 'gen_ai.usage.input_tokens': m.usage.inputTokens }),
              ...(m.usage?.outputTokens === undefined ? {} : { 'gen_ai.usage.output_tokens': m.usage.outputTokens }),
              ...(m.timeToFirstChunkMs === undefined ? {} : { 'arbor.llm.time_to_first_chunk': m.timeToFirstChunkMs / 1000 }),
              ...(m.statusCode === undefined ? {} : { 'http.response.status_code': m.statusCode }),
            },
          },
          turn.ctx,
        );
        if (m.interruption === 'provider_error') {
          llm.setAttribute('error.type', m.statusCode === undefined ? 'provider_error' : String(m.statusCode));
          llm.setStatus({ code: SpanStatusCode.ERROR, message: m.error ?? m.reason ?? 'provider error' });
        }
        llm.end(m.llmStartTime + (m.llmDurationMs ?? 0));
      }
      turn.span.setAttributes({ 'arbor.turn.outcome': m.outcome, 'arbor.llm.chunks': m.chunks, ...(m.interruption === undefined ? {} : { 'arbor.turn.interruption': m.interruption }), ...(m.reason === undefined ? {} : { 'arbor.turn.reason': m.reason }) });
      if (m.interruption === 'provider_error' || m.interruption === 'not_started') turn.span.setStatus({ code: SpanStatusCode.ERROR, message: m.reason ?? m.interruption });
      // The same clock as the start times the runtime gives (performance-based epoch ms), not Date.now().
      turn.span.end(now());
    },
    toolStep: (m) => {
      const parent = turns.get(m.messageId)?.ctx ?? ROOT_CONTEXT;
      const span = tracer.startSpan(
        `${OTEL_SPANS.toolStepPrefix} ${m.toolName}`,
        {
          kind: SpanKind.INTERNAL,
          startTime: m.startTime,
          attributes: {
            'gen_ai.operation.name': 'execute_tool',
            'gen_ai.tool.name': m.toolName,
            'arbor.session.id': m.sessionId,
            'arbor.message.id': m.messageId,
            'arbor.tool.outcome': m.outcome,
            ...(m.toolCallId === undefined ? {} : { 'gen_ai.tool.call.id': m.toolCallId }),
            ...(m.server === undefined ? {} : { 'arbor.tool.server': m.server }),
          },
        },
        parent,
      );
      if (m.outcome === 'error') span.setStatus({ code: SpanStatusCode.ERROR, message: m.error ?? 'tool failed' });
      span.end(m.startTime + m.durationMs);
    },
    journalWrite: (m) => {
      const end = now();
      const links: Link[] = [];
      for (const sid of m.sessionIds ?? []) {
        const id = turnOfSession.get(sid);
        const turn = id === undefined ? undefined : turns.get(id);
        if (turn !== undefined) links.push({ context: turn.span.spanContext(), attributes: { 'arbor.session.id': sid, 'arbor.message.id': id! } });
      }
      const span = tracer.startSpan(
        OTEL_SPANS.journalBatch,
        {
          kind: SpanKind.INTERNAL,
          startTime: end - m.durationMs,
          links,
          attributes: { 'arbor.journal.batch.records': m.batchSize, 'arbor.journal.batch.bytes': m.bytes, 'arbor.journal.batch.sessions': m.sessionIds?.length ?? 0, 'arbor.journal.durability': m.durability, 'arbor.journal.queue_depth': m.queueDepth },
        },
        ROOT_CONTEXT,
      );
      span.end(end);
    },
  });
  const getter = { keys: (h: Headers) => [...h.keys()], get: (h: Headers, key: string) => h.get(key) ?? undefined };
  return {
    async request(method, path, headers, handle, outcome) {
      const parent = propagation.extract(ROOT_CONTEXT, headers, getter);
      const span = tracer.startSpan(method, { kind: SpanKind.SERVER, attributes: { 'http.request.method': method, 'url.path': path, 'url.scheme': 'http' } }, parent);
      const ctx = trace.setSpan(parent, span);
      try {
        // The OTel context (for an application's own instrumentation) and Arbor's trace parent (for the turns).
        // Not when nothing records: an AsyncLocalStorage run is not free on every Node version.
        if (span.isRecording()) await context.with(ctx, () => withTraceParent(ctx, handle));
        else await handle();
      } catch (err) {
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: messageOf(err) });
        throw err;
      } finally {
        const { route, status } = outcome();
        span.updateName(`${method} ${route}`);
        span.setAttributes({ 'http.route': route, 'http.response.status_code': status });
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      }
    },
    stop() {
      unsubscribe();
      for (const turn of turns.values()) turn.span.end();
      turns.clear();
      turnOfSession.clear();
    },
  };
}
