import diagnostics_channel from 'node:diagnostics_channel';

/**
 * Arbor's telemetry: `node:diagnostics_channel` channels. A message is built
 * and published only when the channel has a subscriber (`hasSubscribers`), so
 * telemetry costs one property read when nobody listens.
 *
 * Subscribe with `diagnostics_channel.subscribe(CHANNELS.journalWrite, fn)` or
 * through `subscribeTelemetry`. The server turns these into Prometheus and
 * OpenTelemetry metrics and structured logs.
 */
export const CHANNELS = Object.freeze({
  /** One group-commit batch written (and synced under `fsync`). */
  journalWrite: 'arbor:journal:write',
  /** One snapshot written durably. */
  snapshot: 'arbor:snapshot',
  /** One session recovered (at start, on first access, or in the background). */
  recovery: 'arbor:recovery',
  /** An error the runtime handled: a failed sync, a failed snapshot, a crashed handler. */
  error: 'arbor:error',
});

export interface JournalWriteMessage {
  /** records in the batch */
  batchSize: number;
  bytes: number;
  /** from the start of the write to the end of the sync (or the write, when not syncing) */
  durationMs: number;
  durability: 'fsync' | 'write' | 'buffered';
  /** journal records queued behind this batch when it finished */
  queueDepth: number;
}

export interface SnapshotMessage {
  sessionId: string;
  seq: number;
  bytes: number;
  durationMs: number;
}

export interface RecoveryMessage {
  sessionId: string;
  /** where the state came from */
  kind: 'checkpoint' | 'snapshot' | 'journal' | 'new';
  /** when it happened: at open, on first access, or by the background pass */
  trigger: 'open' | 'access' | 'background';
  /** journal records replayed on top of the starting state */
  replayed: number;
  durationMs: number;
  status: string;
}

export interface ErrorMessage {
  /** what failed: 'journal', 'snapshot', 'handler', 'recovery', … */
  source: string;
  code: string;
  message: string;
  sessionId?: string;
}

export const journalWriteChannel = diagnostics_channel.channel(CHANNELS.journalWrite);
export const snapshotChannel = diagnostics_channel.channel(CHANNELS.snapshot);
export const recoveryChannel = diagnostics_channel.channel(CHANNELS.recovery);
export const errorChannel = diagnostics_channel.channel(CHANNELS.error);

export interface TelemetryListeners {
  journalWrite?: (m: JournalWriteMessage) => void;
  snapshot?: (m: SnapshotMessage) => void;
  recovery?: (m: RecoveryMessage) => void;
  error?: (m: ErrorMessage) => void;
}

/** Subscribes the given listeners; returns the function that unsubscribes them all. */
export function subscribeTelemetry(listeners: TelemetryListeners): () => void {
  const undo: (() => void)[] = [];
  const add = <T>(name: string, fn: ((m: T) => void) | undefined) => {
    if (fn === undefined) return;
    const handler = (m: unknown) => fn(m as T);
    diagnostics_channel.subscribe(name, handler);
    undo.push(() => diagnostics_channel.unsubscribe(name, handler));
  };
  add(CHANNELS.journalWrite, listeners.journalWrite);
  add(CHANNELS.snapshot, listeners.snapshot);
  add(CHANNELS.recovery, listeners.recovery);
  add(CHANNELS.error, listeners.error);
  return () => undo.forEach((f) => f());
}

/** Deleted sessions whose erasure from the data directory completed (file store): what was rewritten. */
export interface ErasureMessage {
  sessionIds: string[];
  segmentsRewritten: number;
  recordsErased: number;
  durationMs: number;
}

/** `arbor:erasure`: published once per completed erasure pass (see src/file/erasure.ts). */
export const ERASURE_CHANNEL = 'arbor:erasure';
export const erasureChannel = diagnostics_channel.channel(ERASURE_CHANNEL);
