import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { subscribeTelemetry, type Arbor } from '../index.ts';

/** Names of Arbor's own Prometheus metrics (docs/metrics.md lists them with their labels and meaning). */
export const PROMETHEUS_METRICS = Object.freeze({
  journalWriteSeconds: 'arbor_journal_write_duration_seconds',
  journalBatchRecords: 'arbor_journal_batch_records',
  journalWriteBytes: 'arbor_journal_written_bytes_total',
  snapshotBytes: 'arbor_snapshot_bytes',
  snapshotSeconds: 'arbor_snapshot_duration_seconds',
  recoveries: 'arbor_recoveries_total',
  recoverySeconds: 'arbor_recovery_duration_seconds',
  errors: 'arbor_errors_total',
  leases: 'arbor_leases_total',
  hotSessions: 'arbor_hot_sessions',
  hotBytes: 'arbor_hot_bytes',
  journalQueueDepth: 'arbor_journal_queue_depth',
  journalLastFlushAge: 'arbor_journal_last_flush_age_seconds',
  journalSegments: 'arbor_journal_segments',
  journalBytes: 'arbor_journal_bytes',
  journalUp: 'arbor_journal_up',
  activeSessions: 'arbor_sessions_active',
  httpRequests: 'arbor_http_requests_total',
  httpSeconds: 'arbor_http_request_duration_seconds',
  sseConnections: 'arbor_sse_connections',
  sseConnectionsTotal: 'arbor_sse_connections_total',
  mailboxQueued: 'arbor_mailbox_depth',
  mailboxMax: 'arbor_mailbox_depth_max',
  llmStreamsStarted: 'arbor_llm_streams_started_total',
  llmStreamsCompleted: 'arbor_llm_streams_completed_total',
  llmStreamsInterrupted: 'arbor_llm_streams_interrupted_total',
  llmTimeToFirstChunk: 'arbor_llm_time_to_first_chunk_seconds',
  llmStreamSeconds: 'arbor_llm_stream_duration_seconds',
  llmTokens: 'arbor_llm_tokens_total',
  llmProviderErrors: 'arbor_llm_provider_errors_total',
  toolSteps: 'arbor_tool_steps_total',
  toolStepSeconds: 'arbor_tool_step_duration_seconds',
});

/**
 * Node's default process metrics (prom-client's `collectDefaultMetrics`),
 * unprefixed as every Node exporter names them, so stock dashboards work.
 * These are the ones docs/grafana-dashboard.json and the tests rely on.
 */
export const PROCESS_METRICS = Object.freeze({
  cpuSeconds: 'process_cpu_seconds_total',
  residentMemory: 'process_resident_memory_bytes',
  openFds: 'process_open_fds',
  eventLoopLag: 'nodejs_eventloop_lag_seconds',
  eventLoopLagP99: 'nodejs_eventloop_lag_p99_seconds',
  heapUsed: 'nodejs_heap_size_used_bytes',
  heapTotal: 'nodejs_heap_size_total_bytes',
  gcSeconds: 'nodejs_gc_duration_seconds',
});

/**
 * Prometheus metrics of one Arbor: histograms and counters fed by the
 * telemetry channels (journal writes, snapshots, recoveries, errors, turns and
 * their LLM calls, tool steps), gauges read from `arbor.health()` at scrape
 * time, HTTP request and SSE connection counters, and Node's default process
 * metrics (unprefixed). Its own registry, so two servers in one process do
 * not collide.
 */
export class PrometheusMetrics {
  readonly registry = new Registry();
  readonly #unsubscribe: () => void;
  readonly #httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly #httpSeconds: Histogram<'method' | 'route'>;
  readonly #sseOpen: Gauge;
  readonly #sseTotal: Counter;

  constructor(arbor: Arbor) {
    const registers = [this.registry];
    const M = PROMETHEUS_METRICS;
    const writeSeconds = new Histogram({ name: M.journalWriteSeconds, help: 'Group-commit batch: write plus sync, seconds', labelNames: ['durability'], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers });
    const batchRecords = new Histogram({ name: M.journalBatchRecords, help: 'Records per group-commit batch', buckets: [1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000], registers });
    const writeBytes = new Counter({ name: M.journalWriteBytes, help: 'Bytes written to the journal', registers });
    const snapshotBytes = new Histogram({ name: M.snapshotBytes, help: 'Snapshot size, bytes', buckets: [1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216], registers });
    const snapshotSeconds = new Histogram({ name: M.snapshotSeconds, help: 'Snapshot write (durable), seconds', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers });
    const recoveries = new Counter({ name: M.recoveries, help: 'Sessions recovered, by where the state came from, when, and outcome', labelNames: ['kind', 'trigger', 'status'], registers });
    const recoverySeconds = new Histogram({ name: M.recoverySeconds, help: 'Recovery of one session, seconds', labelNames: ['kind'], buckets: [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers });
    const errors = new Counter({ name: M.errors, help: 'Errors the runtime handled, by source and code', labelNames: ['source', 'code'], registers });
    const leases = new Counter({ name: M.leases, help: 'Session leases taken, released and lost by this node (PostgreSQL)', labelNames: ['event'], registers });
    const llm = ['provider', 'model'] as const;
    const streamsStarted = new Counter({ name: M.llmStreamsStarted, help: 'Answers (turns) started, by provider and model', labelNames: llm, registers });
    const streamsCompleted = new Counter({ name: M.llmStreamsCompleted, help: 'Answers completed, by provider, model and the finish reason the provider gave', labelNames: [...llm, 'finish_reason'], registers });
    const streamsInterrupted = new Counter({ name: M.llmStreamsInterrupted, help: 'Answers interrupted, by provider, model and reason (provider_error, shutdown, aborted, not_started)', labelNames: [...llm, 'reason'], registers });
    const timeToFirstChunk = new Histogram({ name: M.llmTimeToFirstChunk, help: 'From the LLM call to its first chunk, seconds', labelNames: llm, buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
    const streamSeconds = new Histogram({ name: M.llmStreamSeconds, help: 'The LLM call, from the request to its last chunk or failure, seconds', labelNames: [...llm, 'outcome'], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300], registers });
    const tokens = new Counter({ name: M.llmTokens, help: 'Tokens the provider reported, by provider, model and type (input, output)', labelNames: [...llm, 'type'], registers });
    const providerErrors = new Counter({ name: M.llmProviderErrors, help: 'Provider failures (HTTP error, cut connection, malformed stream), by provider, model and HTTP status (none when there was no status)', labelNames: [...llm, 'status'], registers });
    const toolSteps = new Counter({ name: M.toolSteps, help: 'Tool steps, by tool and outcome (ok, error, denied)', labelNames: ['tool', 'outcome'], registers });
    const toolStepSeconds = new Histogram({ name: M.toolStepSeconds, help: 'One tool step, seconds', labelNames: ['tool'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
    this.#unsubscribe = subscribeTelemetry({
      lease: (m) => leases.inc({ event: m.event }),
      journalWrite: (m) => {
        writeSeconds.observe({ durability: m.durability }, m.durationMs / 1000);
        batchRecords.observe(m.batchSize);
        writeBytes.inc(m.bytes);
      },
      snapshot: (m) => {
        snapshotBytes.observe(m.bytes);
        snapshotSeconds.observe(m.durationMs / 1000);
      },
      recovery: (m) => {
        recoveries.inc({ kind: m.kind, trigger: m.trigger, status: m.status });
        recoverySeconds.observe({ kind: m.kind }, m.durationMs / 1000);
      },
      error: (m) => errors.inc({ source: m.source, code: m.code }),
      turnStart: (m) => streamsStarted.inc({ provider: m.provider, model: m.model }),
      llmTurn: (m) => {
        const labels = { provider: m.provider, model: m.model };
        if (m.outcome === 'completed') streamsCompleted.inc({ ...labels, finish_reason: m.finishReason ?? 'unknown' });
        else streamsInterrupted.inc({ ...labels, reason: m.interruption ?? 'aborted' });
        if (m.interruption === 'provider_error') providerErrors.inc({ ...labels, status: m.statusCode === undefined ? 'none' : String(m.statusCode) });
        if (m.timeToFirstChunkMs !== undefined) timeToFirstChunk.observe(labels, m.timeToFirstChunkMs / 1000);
        if (m.llmDurationMs !== undefined) streamSeconds.observe({ ...labels, outcome: m.outcome }, m.llmDurationMs / 1000);
        if (m.usage?.inputTokens !== undefined) tokens.inc({ ...labels, type: 'input' }, m.usage.inputTokens);
        if (m.usage?.outputTokens !== undefined) tokens.inc({ ...labels, type: 'output' }, m.usage.outputTokens);
      },
      toolStep: (m) => {
        toolSteps.inc({ tool: m.toolName, outcome: m.outcome });
        toolStepSeconds.observe({ tool: m.toolName }, m.durationMs / 1000);
      },
    });
    // Gauges are read from arbor.health() once per scrape: the registry collects every gauge in the same
    // macrotask, so the first gauge's read is kept until the next one (health() sizes part of the hot tier).
    let scraped: ReturnType<Arbor['health']> | undefined;
    const health = (): ReturnType<Arbor['health']> => {
      if (scraped === undefined) {
        scraped = arbor.health();
        setImmediate(() => (scraped = undefined));
      }
      return scraped;
    };
    const gauge = (name: string, help: string, read: (h: ReturnType<Arbor['health']>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(health()));
        },
      });
    gauge(M.hotSessions, 'Sessions in the hot tier', (h) => h.hot.sessions);
    gauge(M.hotBytes, 'Approximate bytes of the hot tier', (h) => h.hot.approxBytes);
    gauge(M.journalQueueDepth, 'Journal records waiting for the writer', (h) => h.journal.queueDepth);
    gauge(M.journalLastFlushAge, 'Seconds since the journal last flushed', (h) => h.journal.lastFlushAgeMs / 1000);
    gauge(M.journalSegments, 'Journal segment files', (h) => h.journal.segments);
    gauge(M.journalBytes, 'Bytes in journal segments', (h) => h.journal.bytes);
    gauge(M.journalUp, '1 while the journal accepts writes, 0 once it failed or closed', (h) => (h.journal.state === 'open' ? 1 : 0));
    gauge(M.activeSessions, 'Sessions with a live actor', (h) => h.sessions.active);
    gauge(M.mailboxQueued, 'Commands queued or running in the sessions\' mailboxes, all sessions together', (h) => h.mailbox.queued);
    gauge(M.mailboxMax, 'Commands queued or running in the fullest mailbox', (h) => h.mailbox.max);
    this.#sseOpen = new Gauge({ name: M.sseConnections, help: 'Open SSE connections (GET /v1/sessions/:id/stream)', registers });
    this.#sseTotal = new Counter({ name: M.sseConnectionsTotal, help: 'SSE connections opened', registers });
    this.#httpRequests = new Counter({ name: M.httpRequests, help: 'HTTP requests, by method, route and status', labelNames: ['method', 'route', 'status'], registers });
    this.#httpSeconds = new Histogram({ name: M.httpSeconds, help: 'HTTP request handling until the response head, seconds', labelNames: ['method', 'route'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers });
    // Unprefixed (process_*, nodejs_*), as every Node exporter names them.
    collectDefaultMetrics({ register: this.registry });
  }

  /** An SSE connection opened; returns the function that counts it closed (idempotent). */
  sseOpened(): () => void {
    this.#sseOpen.inc();
    this.#sseTotal.inc();
    let open = true;
    return () => {
      if (open) this.#sseOpen.dec();
      open = false;
    };
  }

  /** Counts one HTTP request; `route` is the route pattern (`/v1/sessions/:id`), never the raw path. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.#httpRequests.inc({ method, route, status: String(status) });
    this.#httpSeconds.observe({ method, route }, seconds);
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.#unsubscribe();
    this.registry.clear();
  }
}
