import { metrics, type BatchObservableCallback, type Meter } from '@opentelemetry/api';
import { subscribeTelemetry, type Arbor } from '../index.ts';

/** Names of the OpenTelemetry instruments (meter `arbor`). */
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
});

/**
 * OpenTelemetry metrics of one Arbor, from the telemetry channels and
 * `arbor.health()`. The instruments come from `metrics.getMeter('arbor')`
 * (the global API): they are no-ops unless the application installed an SDK
 * MeterProvider. Returns the function that stops them.
 */
export function startOtelMetrics(arbor: Arbor, meter: Meter = metrics.getMeter('arbor')): () => void {
  const I = OTEL_INSTRUMENTS;
  const writeDuration = meter.createHistogram(I.journalWriteDuration, { unit: 'ms', description: 'Group-commit batch: write plus sync' });
  const batchSize = meter.createHistogram(I.journalBatchSize, { unit: '{record}', description: 'Records per group-commit batch' });
  const snapshotSize = meter.createHistogram(I.snapshotSize, { unit: 'By', description: 'Snapshot size' });
  const snapshotDuration = meter.createHistogram(I.snapshotDuration, { unit: 'ms', description: 'Snapshot write (durable)' });
  const recoveries = meter.createCounter(I.recoveries, { description: 'Sessions recovered' });
  const recoveryDuration = meter.createHistogram(I.recoveryDuration, { unit: 'ms', description: 'Recovery of one session' });
  const errors = meter.createCounter(I.errors, { description: 'Errors the runtime handled' });
  const unsubscribe = subscribeTelemetry({
    journalWrite: (m) => {
      writeDuration.record(m.durationMs, { durability: m.durability });
      batchSize.record(m.batchSize);
    },
    snapshot: (m) => {
      snapshotSize.record(m.bytes);
      snapshotDuration.record(m.durationMs);
    },
    recovery: (m) => {
      recoveries.add(1, { kind: m.kind, trigger: m.trigger, status: m.status });
      recoveryDuration.record(m.durationMs, { kind: m.kind });
    },
    error: (m) => errors.add(1, { source: m.source, code: m.code }),
  });
  const hotSessions = meter.createObservableGauge(I.hotSessions, { description: 'Sessions in the hot tier' });
  const hotBytes = meter.createObservableGauge(I.hotBytes, { unit: 'By', description: 'Approximate bytes of the hot tier' });
  const queueDepth = meter.createObservableGauge(I.journalQueueDepth, { unit: '{record}', description: 'Journal records waiting for the writer' });
  const lastFlushAge = meter.createObservableGauge(I.journalLastFlushAge, { unit: 'ms', description: 'Time since the journal last flushed' });
  const journalBytes = meter.createObservableGauge(I.journalBytes, { unit: 'By', description: 'Bytes in journal segments' });
  const observables = [hotSessions, hotBytes, queueDepth, lastFlushAge, journalBytes];
  // One health() read per collection for all gauges.
  const observe: BatchObservableCallback = (result) => {
    const h = arbor.health();
    result.observe(hotSessions, h.hot.sessions);
    result.observe(hotBytes, h.hot.approxBytes);
    result.observe(queueDepth, h.journal.queueDepth);
    result.observe(lastFlushAge, h.journal.lastFlushAgeMs);
    result.observe(journalBytes, h.journal.bytes);
  };
  meter.addBatchObservableCallback(observe, observables);
  return () => {
    unsubscribe();
    meter.removeBatchObservableCallback(observe, observables);
  };
}
