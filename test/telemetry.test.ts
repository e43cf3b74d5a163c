import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AggregationTemporality, DataPointType, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type HistogramMetricData, type MetricData } from '@opentelemetry/sdk-metrics';
import { createArbor, subscribeTelemetry, type JournalWriteMessage } from '../src/index.ts';
import { errorChannel, journalWriteChannel, recoveryChannel, snapshotChannel } from '../src/telemetry/channels.ts';
import { PrometheusMetrics } from '../src/server/prometheus.ts';
import { OTEL_INSTRUMENTS, startOtelMetrics } from '../src/server/otel.ts';
import { loadConfig } from '../src/server/config.ts';
import { startServer } from '../src/server/server.ts';
import { tempDir } from './helpers/tmp.ts';
import { sample } from './helpers/prometheus.ts';

const write: JournalWriteMessage = { batchSize: 7, bytes: 2100, durationMs: 1.5, durability: 'fsync', queueDepth: 3 };

test('Prometheus: gauges follow a real write; channel messages land in histograms and counters', async () => {
  const { dir, cleanup } = tempDir('arbor-prom-');
  const arbor = await createArbor({ dataDir: join(dir, 'data') });
  const metrics = new PrometheusMetrics(arbor);
  try {
    const before = await metrics.text();
    assert.equal(sample(before, 'arbor_hot_sessions'), 0);
    // when a message is written through the runtime
    const chat = arbor.session('metered');
    await chat.sendMessage({ content: 'count me' });
    await chat.idle();
    // then the gauges read from arbor.health() show it
    const after = await metrics.text();
    assert.equal(sample(after, 'arbor_hot_sessions'), 1);
    assert.ok(sample(after, 'arbor_journal_bytes')! > sample(before, 'arbor_journal_bytes')!, 'journal bytes grew');
    assert.equal(sample(after, 'arbor_journal_up'), 1);
    // when the runtime publishes a batch, a snapshot, a recovery and an error (the shapes of channels.ts)
    const batches = sample(after, 'arbor_journal_batch_records_count')!;
    journalWriteChannel.publish(write);
    snapshotChannel.publish({ sessionId: 'metered', seq: 4, bytes: 5000, durationMs: 2 });
    recoveryChannel.publish({ sessionId: 'metered', kind: 'snapshot', trigger: 'access', replayed: 3, durationMs: 4, status: 'recovered' });
    errorChannel.publish({ source: 'journal', code: 'ARBOR_IO_ERROR', message: 'EIO' });
    // then each one is counted once, with its labels
    const text = await metrics.text();
    assert.equal(sample(text, 'arbor_journal_batch_records_count'), batches + 1);
    assert.equal(sample(text, 'arbor_journal_write_duration_seconds_bucket', 'le="0.0025",durability="fsync"')! - (sample(after, 'arbor_journal_write_duration_seconds_bucket', 'le="0.0025",durability="fsync"') ?? 0), 1);
    assert.ok(sample(text, 'arbor_snapshot_bytes_count')! >= 1);
    assert.ok(sample(text, 'arbor_recoveries_total', 'kind="snapshot",trigger="access",status="recovered"')! >= 1);
    assert.ok(sample(text, 'arbor_errors_total', 'source="journal",code="ARBOR_IO_ERROR"')! >= 1);
  } finally {
    metrics.close();
    await arbor.close();
    cleanup();
  }
});

test('Prometheus: one scrape reads arbor.health() once for all its gauges', async () => {
  const { dir, cleanup } = tempDir('arbor-prom-');
  const arbor = await createArbor({ dataDir: join(dir, 'data') });
  const metrics = new PrometheusMetrics(arbor);
  try {
    // given: health() counted on this instance
    let reads = 0;
    const health = arbor.health.bind(arbor);
    arbor.health = () => {
      reads += 1;
      return health();
    };
    // when: two scrapes, one after the other
    const first = await metrics.text();
    await new Promise((resolve) => setImmediate(resolve));
    await metrics.text();
    // then: one read each, and every gauge still has its figure
    assert.equal(reads, 2);
    for (const name of ['arbor_hot_sessions', 'arbor_hot_bytes', 'arbor_journal_up', 'arbor_mailbox_depth']) assert.notEqual(sample(first, name), undefined, name);
  } finally {
    metrics.close();
    await arbor.close();
    cleanup();
  }
});

test('Prometheus over HTTP: /metrics counts requests by route pattern, never by raw path', async () => {
  const { dir, cleanup } = tempDir('arbor-prom-http-');
  const server = await startServer(loadConfig({ env: { ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides: { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent' } }));
  try {
    await fetch(`${server.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'm1' }) });
    await fetch(`${server.url}/v1/sessions/m1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: 'hi' }) });
    await fetch(`${server.url}/v1/sessions/m2`);
    const res = await fetch(`${server.url}/metrics`);
    assert.match(res.headers.get('content-type')!, /^text\/plain/);
    const text = await res.text();
    assert.equal(sample(text, 'arbor_http_requests_total', 'method="POST",route="/v1/sessions",status="201"'), 1);
    assert.equal(sample(text, 'arbor_http_requests_total', 'method="POST",route="/v1/sessions/:id/messages",status="202"'), 1);
    assert.equal(sample(text, 'arbor_http_requests_total', 'method="GET",route="/v1/sessions/:id",status="404"'), 1);
    assert.ok(!text.includes('m1'), 'no session id in a label');
  } finally {
    await server.close();
    cleanup();
  }
});

test('OpenTelemetry: instruments on the meter report channel messages and health gauges', async () => {
  const { dir, cleanup } = tempDir('arbor-otel-');
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const provider = new MeterProvider({ readers: [reader] });
  const arbor = await createArbor({ dataDir: join(dir, 'data') });
  const stop = startOtelMetrics(arbor, provider.getMeter('arbor'));
  const collect = async (): Promise<Map<string, MetricData>> => {
    exporter.reset();
    await reader.forceFlush();
    const out = new Map<string, MetricData>();
    for (const rm of exporter.getMetrics()) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) out.set(m.descriptor.name, m);
    return out;
  };
  try {
    // given a real write
    await arbor.session('otel').sendMessage({ content: 'observe me' });
    await arbor.session('otel').idle();
    const before = await collect();
    const count = (m: MetricData | undefined) => (m as HistogramMetricData | undefined)?.dataPoints.reduce((n, p) => n + p.value.count, 0) ?? 0;
    // when the runtime publishes a batch write
    journalWriteChannel.publish(write);
    const after = await collect();
    // then the histograms count it once, and the gauges show the session and its bytes
    assert.equal(count(after.get(OTEL_INSTRUMENTS.journalWriteDuration)) - count(before.get(OTEL_INSTRUMENTS.journalWriteDuration)), 1);
    assert.equal(after.get(OTEL_INSTRUMENTS.journalBatchSize)?.dataPointType, DataPointType.HISTOGRAM);
    // in seconds, as the semantic conventions say: the 1.5 ms batch is 0.0015 s
    const duration = after.get(OTEL_INSTRUMENTS.journalWriteDuration) as HistogramMetricData;
    assert.equal(duration.descriptor.unit, 's');
    const sum = (m: MetricData | undefined) => (m as HistogramMetricData | undefined)?.dataPoints.reduce((n, p) => n + (p.value.sum ?? 0), 0) ?? 0;
    assert.ok(Math.abs(sum(duration) - sum(before.get(OTEL_INSTRUMENTS.journalWriteDuration)) - 0.0015) < 1e-9, `recorded ${sum(duration) - sum(before.get(OTEL_INSTRUMENTS.journalWriteDuration))}`);
    assert.equal(after.get(OTEL_INSTRUMENTS.journalLastFlushAge)?.descriptor.unit, 's');
    // and the turn was counted, with its tokens
    const total = (m: MetricData | undefined) => (m?.dataPoints as { value: number }[] | undefined)?.reduce((n, p) => n + p.value, 0) ?? 0;
    assert.equal(total(after.get(OTEL_INSTRUMENTS.llmStreamsStarted)), 1);
    assert.equal(total(after.get(OTEL_INSTRUMENTS.llmStreamsCompleted)), 1);
    assert.equal(count(after.get(OTEL_INSTRUMENTS.llmTokenUsage)), 2);
    assert.equal(count(after.get(OTEL_INSTRUMENTS.llmTimeToFirstChunk)), 1);
    const gauge = (name: string) => after.get(name)?.dataPoints[0]?.value as number | undefined;
    assert.equal(gauge(OTEL_INSTRUMENTS.hotSessions), 1);
    assert.ok(gauge(OTEL_INSTRUMENTS.journalBytes)! > 0);
  } finally {
    stop();
    await provider.shutdown();
    await arbor.close();
    cleanup();
  }
});

test('the runtime publishes on every channel: a real batch, snapshot, recovery and handler crash, and Prometheus counts them', async () => {
  const { dir, cleanup } = tempDir('arbor-chan-');
  const seen: Record<string, unknown[]> = { journalWrite: [], snapshot: [], recovery: [], error: [] };
  const unsubscribe = subscribeTelemetry({
    journalWrite: (m) => seen.journalWrite!.push(m),
    snapshot: (m) => seen.snapshot!.push(m),
    recovery: (m) => seen.recovery!.push(m),
    error: (m) => seen.error!.push(m),
  });
  try {
    // given a runtime that writes, snapshots (threshold 2) and runs a crashing command
    const options = { dataDir: join(dir, 'data'), snapshotEveryEvents: 2, commands: { boom: () => { throw new Error('kaboom'); } } };
    const arbor = await createArbor(options);
    const metrics = new PrometheusMetrics(arbor);
    const chat = arbor.session('wired');
    await chat.sendMessage({ content: 'hello' });
    await chat.idle();
    await assert.rejects(chat.executeCommand('boom'));
    for (let i = 0; i < 50 && seen.snapshot!.length === 0; i += 1) await new Promise((r) => setTimeout(r, 10));
    const text = await metrics.text();
    await arbor.close();
    // then each channel carried a real message
    const batch = seen.journalWrite![0] as JournalWriteMessage;
    assert.ok(batch.batchSize >= 1 && batch.bytes > 0 && batch.durability === 'fsync', JSON.stringify(batch));
    assert.ok(seen.snapshot!.some((m) => (m as { sessionId: string }).sessionId === 'wired'), 'no snapshot message');
    assert.ok(seen.error!.some((m) => (m as { source: string; code: string }).source === 'handler' && (m as { code: string }).code === 'ARBOR_HANDLER_CRASHED'), JSON.stringify(seen.error));
    assert.ok(sample(text, 'arbor_journal_batch_records_count')! >= 1, 'Prometheus did not count the real batch');
    // and a restart publishes the session's recovery
    const again = await createArbor(options);
    await again.session('wired').load();
    await again.close();
    assert.ok(seen.recovery!.some((m) => (m as { sessionId: string; trigger: string }).sessionId === 'wired' && (m as { trigger: string }).trigger === 'access'), JSON.stringify(seen.recovery));
  } finally {
    unsubscribe();
    cleanup();
  }
});
