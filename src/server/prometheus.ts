import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { subscribeTelemetry, type Arbor } from '../index.ts';

/** Names of the Prometheus metrics (the README lists them with their meaning). */
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
});

/**
 * Prometheus metrics of one Arbor: histograms and counters fed by the
 * telemetry channels (journal writes, snapshots, recoveries, errors), gauges
 * read from `arbor.health()` at scrape time, HTTP request counters, and Node's
 * default process metrics. Its own registry, so two servers in one process do
 * not collide.
 */
export class PrometheusMetrics {
  readonly registry = new Registry();
  readonly #unsubscribe: () => void;
  readonly #httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly #httpSeconds: Histogram<'method' | 'route'>;

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
    });
    // Gauges are read from arbor.health() once per scrape.
    const gauge = (name: string, help: string, read: (h: ReturnType<Arbor['health']>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(arbor.health()));
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
    this.#httpRequests = new Counter({ name: M.httpRequests, help: 'HTTP requests, by method, route and status', labelNames: ['method', 'route', 'status'], registers });
    this.#httpSeconds = new Histogram({ name: M.httpSeconds, help: 'HTTP request handling until the response head, seconds', labelNames: ['method', 'route'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers });
    collectDefaultMetrics({ register: this.registry, prefix: 'arbor_process_' });
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
