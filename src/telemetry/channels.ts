import { AsyncLocalStorage } from 'node:async_hooks';
import diagnostics_channel from 'node:diagnostics_channel';

/**
 * Arbor's telemetry: `node:diagnostics_channel` channels. A message is built
 * and published only when the channel has a subscriber (`hasSubscribers`), so
 * telemetry costs one property read when nobody listens.
 *
 * Subscribe with `diagnostics_channel.subscribe(CHANNELS.journalWrite, fn)` or
 * through `subscribeTelemetry`. The server turns these into Prometheus and
 * OpenTelemetry metrics, OpenTelemetry spans and structured logs
 * (docs/metrics.md lists what each becomes).
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
  /** A session's lease taken, released or lost (multi-node backends: PostgreSQL). */
  lease: 'arbor:lease',
  /** A turn (one assistant answer) starts: before its start is journaled. */
  turnStart: 'arbor:turn:start',
  /** A turn ended (completed or interrupted): its LLM call's facts — finish reason, token usage, time to first chunk. */
  llmTurn: 'arbor:llm:turn',
  /** One tool step of a turn ended (a tool call executed, refused or failed). */
  toolStep: 'arbor:tool:step',
});

export interface JournalWriteMessage {
  /** records in the batch */
  batchSize: number;
  /** the distinct sessions whose records the batch acknowledged (tracing links the batch to their turns) */
  sessionIds?: readonly string[];
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

export interface LeaseMessage {
  sessionId: string;
  /** `taken`: this node acquired it (a load); `released`: given up (passivation); `lost`: taken over, expired or fenced */
  event: 'taken' | 'released' | 'lost';
  nodeId: string;
  epoch: number;
  /** why it was lost */
  reason?: string;
}

/**
 * A turn starts: the answer to `requestMessageId` gets the assistant message
 * `messageId` (the turn's id in every later message). Published before
 * `assistant_stream_started` is journaled, so the journal batch that
 * acknowledges it can be linked to the turn.
 */
export interface TurnStartMessage {
  sessionId: string;
  /** the assistant message being produced: the turn's id */
  messageId: string;
  /** the user message it answers */
  requestMessageId: string;
  /** set when the turn regenerates an earlier answer (`retry()`) */
  retryOf?: string;
  provider: string;
  model: string;
  /** when it started, epoch milliseconds (fractional) */
  startTime: number;
  /**
   * The trace parent current where the request was made (`sendMessage` or
   * `retry`, see {@link withTraceParent}); opaque to Arbor. The OpenTelemetry
   * exporter puts its request span's context there, so the turn's span is its child.
   */
  parent?: unknown;
}

/** Tokens of one LLM call, as the provider reported them (absent: not reported). */
export interface TokenUsage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  /** part of outputTokens, when the provider says */
  reasoningTokens?: number;
  /** part of inputTokens served from the provider's cache, when it says */
  cachedInputTokens?: number;
}

/**
 * Why a turn ended without its answer, a closed set (a label value):
 * `provider_error` — the provider failed (HTTP error, cut connection, malformed stream);
 * `shutdown` — the runtime closed while it streamed;
 * `aborted` — it was aborted otherwise (the journal failed, the session moved to another node, a stop);
 * `not_started` — its start could not be journaled (stopped session, closing runtime, failed write).
 */
export type TurnInterruption = 'provider_error' | 'shutdown' | 'aborted' | 'not_started';

/**
 * One turn ended: published once per {@link TurnStartMessage}, after its
 * terminal event (`assistant_response_completed` or `stream_interrupted`)
 * was journaled, or when its start could not be. Carries the facts of its
 * LLM call. Times are milliseconds; `*Time` fields are epoch milliseconds.
 */
export interface LlmTurnMessage {
  sessionId: string;
  messageId: string;
  requestMessageId: string;
  provider: string;
  model: string;
  outcome: 'completed' | 'interrupted';
  /** interrupted: why, from a closed set */
  interruption?: TurnInterruption;
  /** interrupted: the reason as journaled (free text, never a label) */
  reason?: string;
  /** the provider's finish reason when it gave one ('stop', 'length', 'tool-calls', 'content-filter', 'other', …) */
  finishReason?: string;
  /** token usage when the provider reported it */
  usage?: TokenUsage;
  /** chunks relayed to subscribers */
  chunks: number;
  /** when the LLM was called; absent when the turn never called it (not_started) */
  llmStartTime?: number;
  /** from the LLM call to its first chunk; absent when no chunk came */
  timeToFirstChunkMs?: number;
  /** the LLM call, from the request to its last chunk or its failure */
  llmDurationMs?: number;
  /** the whole turn, from its start to its terminal event being journaled */
  durationMs: number;
  /** provider_error: the HTTP status, when the provider answered with one */
  statusCode?: number;
  /** provider_error: the error's message */
  error?: string;
}

/**
 * One tool step of a turn ended. Published by whatever runs the tool (see
 * {@link publishToolStep}); the OpenTelemetry exporter turns it into a span
 * under the turn's span, the Prometheus exporter counts it.
 */
export interface ToolStepMessage {
  sessionId: string;
  /** the turn (assistant message) the step belongs to */
  messageId: string;
  toolName: string;
  toolCallId?: string;
  /** the MCP server (or other source) of the tool, when there is one */
  server?: string;
  /** when the step started, epoch milliseconds */
  startTime: number;
  durationMs: number;
  /** `ok`, `error` (the tool failed), `denied` (permission refused) */
  outcome: 'ok' | 'error' | 'denied';
  error?: string;
}

export const journalWriteChannel = diagnostics_channel.channel(CHANNELS.journalWrite);
export const snapshotChannel = diagnostics_channel.channel(CHANNELS.snapshot);
export const recoveryChannel = diagnostics_channel.channel(CHANNELS.recovery);
export const errorChannel = diagnostics_channel.channel(CHANNELS.error);
export const leaseChannel = diagnostics_channel.channel(CHANNELS.lease);
export const turnStartChannel = diagnostics_channel.channel(CHANNELS.turnStart);
export const llmTurnChannel = diagnostics_channel.channel(CHANNELS.llmTurn);
export const toolStepChannel = diagnostics_channel.channel(CHANNELS.toolStep);

/** Epoch milliseconds with sub-millisecond precision (the `*Time` fields of the messages). */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Publishes one tool step (built only when someone listens: pass a function to skip building it otherwise). */
export function publishToolStep(message: ToolStepMessage | (() => ToolStepMessage)): void {
  if (!toolStepChannel.hasSubscribers) return;
  toolStepChannel.publish(typeof message === 'function' ? message() : message);
}

const traceParents = new AsyncLocalStorage<unknown>();

/**
 * Runs `fn` with `parent` as the current trace parent: a turn started by a
 * `sendMessage` or `retry` called inside it carries `parent` in its
 * {@link TurnStartMessage}. Opaque to Arbor: the server's OpenTelemetry
 * exporter passes its HTTP request span's context; an application can pass
 * its own (e.g. `context.active()`).
 */
export function withTraceParent<T>(parent: unknown, fn: () => T): T {
  return traceParents.run(parent, fn);
}

/** The trace parent set by the innermost {@link withTraceParent} around this call, if any. */
export function currentTraceParent(): unknown {
  return traceParents.getStore();
}

export interface TelemetryListeners {
  journalWrite?: (m: JournalWriteMessage) => void;
  snapshot?: (m: SnapshotMessage) => void;
  recovery?: (m: RecoveryMessage) => void;
  error?: (m: ErrorMessage) => void;
  lease?: (m: LeaseMessage) => void;
  turnStart?: (m: TurnStartMessage) => void;
  llmTurn?: (m: LlmTurnMessage) => void;
  toolStep?: (m: ToolStepMessage) => void;
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
  add(CHANNELS.lease, listeners.lease);
  add(CHANNELS.turnStart, listeners.turnStart);
  add(CHANNELS.llmTurn, listeners.llmTurn);
  add(CHANNELS.toolStep, listeners.toolStep);
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
