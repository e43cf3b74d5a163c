import { z } from 'zod';
import { ArborError, ErrorCodes } from './errors.ts';
import type { JournalRecord } from './record.ts';

/**
 * Every event a session produces, with a runtime schema for its `data`.
 *
 * Critical events are journaled (durable once acknowledged) and replayed by the
 * reducer after a restart; recoverable events live in memory and go to
 * subscribers only, and are never written to disk.
 *
 * Every value a critical event carries must be plain JSON: the journal stores
 * `data` as JSON text and recovery replays what JSON.parse gives back, so a
 * value JSON would silently change (`undefined`, NaN, a Date, a Map) would make
 * the recovered state differ from the live one. Such values are refused here,
 * before anything is written.
 */

/** A value that survives JSON.stringify → JSON.parse unchanged. */
export type JsonValue = z.infer<ReturnType<typeof z.json>>;

const JSON_VALUE_ERROR = 'expected a JSON value (string, finite number, boolean, null, array or plain object of those)';

// Bounds. String lengths are in UTF-16 code units (String#length).
const MAX_ID_CHARS = 200;
const MAX_NAME_CHARS = 200;
const MAX_USER_CONTENT_CHARS = 100_000;
const MAX_ASSISTANT_CONTENT_CHARS = 1_000_000;
const MAX_REASON_CHARS = 10_000;
const MAX_CHUNK_CHARS = 100_000;

/**
 * The path (e.g. `data.content`) of the first value that would not come back
 * the same from the journal (JSON) or a snapshot (msgpack): -0, which both write
 * as 0, and a string with a lone surrogate, which UTF-8 cannot carry. Refused
 * like every other value JSON would change, so a recovered state always equals
 * the live one.
 */
export function unfaithfulValuePath(value: unknown, path = 'data'): string | undefined {
  if (typeof value === 'number') return Object.is(value, -0) ? path : undefined;
  if (typeof value === 'string') return value.isWellFormed() ? undefined : path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i += 1) {
      const bad = unfaithfulValuePath(value[i], `${path}.${i}`);
      if (bad !== undefined) return bad;
    }
    return undefined;
  }
  if (typeof value === 'object' && value !== null) {
    for (const [key, v] of Object.entries(value)) {
      const bad = key.isWellFormed() ? unfaithfulValuePath(v, `${path}.${key}`) : `${path}.${key}`;
      if (bad !== undefined) return bad;
    }
  }
  return undefined;
}

/**
 * `unfaithfulValuePath(value) === undefined`, without building a path string
 * (or an entry pair) for every value on the way: every journaled event is
 * checked, so the path is only spelt out for data that fails.
 */
function isFaithful(value: unknown): boolean {
  if (typeof value === 'number') return !Object.is(value, -0);
  if (typeof value === 'string') return value.isWellFormed();
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i += 1) if (!isFaithful(value[i])) return false;
    return true;
  }
  if (typeof value === 'object' && value !== null) {
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      if (!key.isWellFormed() || !isFaithful((value as Record<string, unknown>)[key])) return false;
    }
  }
  return true;
}

const json = () => z.json({ error: JSON_VALUE_ERROR });
const jsonRecord = () => z.record(z.string(), json());
const id = () => z.string().min(1).max(MAX_ID_CHARS);
const name = () => z.string().min(1).max(MAX_NAME_CHARS);
/**
 * A string that becomes a key of a state record (config key, permission, MCP
 * server). `__proto__` is refused: some codecs drop or misread it, so a
 * snapshot would not give back the state it was taken from.
 */
const stateKey = () => name().refine((s) => s !== '__proto__', { error: '"__proto__" is reserved' });

// Message parts (state version 3; the types are in core/state.ts). Each maps
// 1:1 onto a part of the AI SDK's UIMessage (see core/ui-message.ts).
const textPartSchema = () => z.strictObject({ type: z.literal('text'), text: z.string().max(MAX_ASSISTANT_CONTENT_CHARS) });
const reasoningPartSchema = () => z.strictObject({ type: z.literal('reasoning'), text: z.string().max(MAX_ASSISTANT_CONTENT_CHARS) });
const stepStartPartSchema = () => z.strictObject({ type: z.literal('step-start') });
const MAX_PARTS = 10_000;

/** The states a stored tool part can be in (the AI SDK's, less the wire-only `input-streaming`). */
export const TOOL_PART_STATES = ['input-available', 'approval-requested', 'approval-responded', 'output-available', 'output-error', 'output-denied'] as const;

/**
 * A tool part as stored in a message (`ToolPart` in core/state.ts). For the
 * data of events that carry a whole tool part.
 */
export const TOOL_PART_SCHEMA = z.strictObject({
  type: z.literal('tool'),
  toolCallId: id(),
  toolName: name(),
  dynamic: z.boolean().optional(),
  title: z.string().max(MAX_NAME_CHARS).optional(),
  input: json().optional(),
  state: z.enum(TOOL_PART_STATES),
  output: json().optional(),
  errorText: z.string().max(MAX_REASON_CHARS).optional(),
  outcome: z.literal('unknown').optional(),
  approval: z.strictObject({ id: id(), approved: z.boolean().optional(), reason: z.string().max(MAX_REASON_CHARS).optional() }).optional(),
  providerExecuted: z.boolean().optional(),
});

/** A part an answer's own events carry: text, reasoning or a step boundary (tool parts come from the tool events). */
export const ANSWER_PART_SCHEMA = z.discriminatedUnion('type', [textPartSchema(), reasoningPartSchema(), stepStartPartSchema()]);

/** Critical event schemas: journaled, replayed by the reducer. */
const CRITICAL_SCHEMAS = {
  user_message_sent: z.strictObject({
    messageId: id(),
    content: z.string().min(1).max(MAX_USER_CONTENT_CHARS),
    clientMessageId: id().optional(),
    metadata: jsonRecord().optional(),
    /** The message's parts when it came with them (POST /v1/chat); absent: one text part of `content`. Text only, joined they are `content`. */
    parts: z.array(textPartSchema()).min(1).max(MAX_PARTS).optional(),
  }),
  command_executed: z.strictObject({
    commandId: id(),
    command: name(),
    args: z.array(json()).optional(),
    result: json().optional(),
    error: z.string().max(MAX_REASON_CHARS).optional(),
  }),
  assistant_stream_started: z.strictObject({
    /** the assistant message being streamed */
    messageId: id(),
    /** the user message it answers */
    requestMessageId: id(),
    provider: name(),
    model: name().optional(),
    /** messageId of the interrupted or failed answer this one retries */
    retryOf: id().optional(),
  }),
  assistant_response_completed: z.strictObject({
    messageId: id(),
    requestMessageId: id(),
    content: z.string().max(MAX_ASSISTANT_CONTENT_CHARS),
    stats: z
      .strictObject({
        chunks: z.int().nonnegative().optional(),
        durationMs: z.number().nonnegative().optional(),
        inputTokens: z.int().nonnegative().optional(),
        outputTokens: z.int().nonnegative().optional(),
        finishReason: name().optional(),
        totalTokens: z.int().nonnegative().optional(),
        reasoningTokens: z.int().nonnegative().optional(),
        cachedInputTokens: z.int().nonnegative().optional(),
        /** from the request to the first chunk */
        timeToFirstChunkMs: z.number().nonnegative().optional(),
      })
      .optional(),
    /**
     * The answer's parts after those journaled during the turn (its stream's
     * `parts`): absent means one text part of `content` less the text those
     * already hold. Written when the answer has reasoning or several parts.
     */
    parts: z.array(ANSWER_PART_SCHEMA).max(MAX_PARTS).optional(),
    /** Ended on purpose (stop()): the partial answer is the final one. */
    stopped: z.literal(true).optional(),
  }),
  stream_interrupted: z.strictObject({
    messageId: id(),
    requestMessageId: id(),
    reason: z.string().min(1).max(MAX_REASON_CHARS),
  }),
  mcp_server_connected: z.strictObject({
    server: stateKey(),
    config: jsonRecord(),
  }),
  mcp_tool_executed: z.strictObject({
    executionId: id(),
    server: name(),
    tool: name(),
    args: json(),
    result: json().optional(),
    isError: z.boolean().optional(),
    durationMs: z.number().nonnegative().optional(),
  }),
  session_config_changed: z.strictObject({
    key: stateKey(),
    oldValue: json().optional(),
    newValue: json(),
  }),
  /** A visible system message from the runtime itself (e.g. "restored from a backup; later events were lost"). */
  system_notice_added: z.strictObject({
    noticeId: id(),
    content: z.string().min(1).max(MAX_REASON_CHARS),
    metadata: jsonRecord().optional(),
  }),
  permission_decided: z.strictObject({
    permission: stateKey(),
    decision: z.enum(['granted', 'denied']),
    scope: z.enum(['once', 'session', 'always']).optional(),
    reason: z.string().max(MAX_REASON_CHARS).optional(),
    /** The tool call this decision answers (an approval request); a `once` grant is good for it alone. */
    toolCallId: id().optional(),
    approvalId: id().optional(),
    /** Who decided: the tenant and the id of the token (never the token). */
    decidedBy: z.strictObject({ tenant: name().optional(), tokenId: name().optional() }).optional(),
    /** Wall-clock ms after which the decision no longer answers. */
    expiresAt: z.int().positive().optional(),
  }),
  /**
   * A tool call is about to run: journaled (durable) BEFORE the tool runs, so
   * a crash between this and its tool_call_finished leaves a known intent
   * with an unknown outcome, never a side effect nobody recorded.
   */
  tool_call_started: z.strictObject({
    /** the answer the call belongs to */
    messageId: id(),
    toolCallId: id(),
    tool: name(),
    input: json(),
    /** the answer's parts streamed before this call and not journaled yet (text, reasoning, step starts) */
    before: z.array(ANSWER_PART_SCHEMA).max(MAX_PARTS).optional(),
    /** shown as a dynamic tool (MCP) */
    dynamic: z.boolean().optional(),
    /** safe to repeat (MCP readOnlyHint/idempotentHint, or `idempotent: true`): what recovery and retry() go by */
    idempotent: z.boolean().optional(),
    /** the grant this call runs under; a `once` grant is used up by it */
    grant: z.strictObject({ permission: stateKey(), seq: z.int().positive() }).optional(),
  }),
  /**
   * A tool call ended: `output`, or `error`; `outcome: 'unknown'` when recovery
   * found it started and never finished (the process stopped in between);
   * `refused` when it never ran (denied, or a repeat that is not safe), with
   * `tool`/`input`/`before` since no start was journaled.
   */
  tool_call_finished: z.strictObject({
    messageId: id(),
    toolCallId: id(),
    output: json().optional(),
    error: z.string().max(MAX_REASON_CHARS).optional(),
    outcome: z.literal('unknown').optional(),
    refused: z.enum(['denied', 'repeat-refused']).optional(),
    tool: name().optional(),
    input: json().optional(),
    before: z.array(ANSWER_PART_SCHEMA).max(MAX_PARTS).optional(),
    dynamic: z.boolean().optional(),
    durationMs: z.number().nonnegative().optional(),
  }),
  /** A tool call waits for an approval; the turn pauses (its answer ends with the request pending). */
  tool_approval_requested: z.strictObject({
    messageId: id(),
    toolCallId: id(),
    approvalId: id(),
    tool: name(),
    input: json(),
    reason: z.enum(['needs-approval', 'repeat-of-unknown-outcome', 'repeat-in-retried-turn']),
    before: z.array(ANSWER_PART_SCHEMA).max(MAX_PARTS).optional(),
    dynamic: z.boolean().optional(),
  }),
  /** The first event of a fork: this session began as a copy of `sourceId` at its seq `atSeq` (docs/sessions-api.md). */
  forked_from: z.strictObject({
    sourceId: id(),
    atSeq: z.int().nonnegative(),
  }),
  /** A fork of this session was made at `atSeq`: it is session `forkId`. */
  fork_created: z.strictObject({
    forkId: id(),
    atSeq: z.int().nonnegative(),
  }),
  /**
   * A command (`executeCommand`) is about to run: journaled (durable) BEFORE
   * its handler is called, so a crash in between leaves a known intent with
   * an unknown outcome, never a side effect nobody recorded.
   */
  command_started: z.strictObject({
    /** the caller's idempotency key, or a random id (a key of the state's `commandsInFlight`) */
    commandId: stateKey(),
    command: name(),
    args: z.array(json()).optional(),
  }),
  /**
   * A command ended: `ok` with its `result`, `error` (the handler threw; `error`
   * is its message, `errorCode` its ArborError code if it had one), or
   * `unknown` when recovery found it started and never finished.
   */
  command_finished: z.strictObject({
    commandId: stateKey(),
    command: name(),
    outcome: z.enum(['ok', 'error', 'unknown']),
    result: json().optional(),
    error: z.string().max(MAX_REASON_CHARS).optional(),
    errorCode: name().optional(),
    durationMs: z.number().nonnegative().optional(),
  }),
};

/**
 * Recoverable event schemas: memory and subscribers only. Their values never
 * reach the journal, so they are not held to JSON, but a required `unknown`
 * field must still be present.
 */
const RECOVERABLE_SCHEMAS = {
  llm_chunk_received: z.strictObject({
    messageId: id(),
    index: z.int().nonnegative(),
    text: z.string().max(MAX_CHUNK_CHARS),
  }),
  typing_indicator: z.strictObject({
    userId: id(),
    typing: z.boolean(),
  }),
  ui_state_changed: z.strictObject({
    component: name(),
    state: z.unknown(),
  }),
  cache_updated: z.strictObject({
    key: name(),
    value: z.unknown(),
    ttlMs: z.int().nonnegative().optional(),
  }),
};

/** Every event's data schema, by type. */
export const EVENT_SCHEMAS = Object.freeze({ ...CRITICAL_SCHEMAS, ...RECOVERABLE_SCHEMAS });

/** A journaled event type. */
export type CriticalEventType = keyof typeof CRITICAL_SCHEMAS;
/** A memory-only event type: never written to disk. */
export type RecoverableEventType = keyof typeof RECOVERABLE_SCHEMAS;
/** Any event type. */
export type EventType = CriticalEventType | RecoverableEventType;

/** The data of an event of type `T`, as its schema gives it back. */
export type EventData<T extends EventType> = z.infer<(typeof EVENT_SCHEMAS)[T]>;

/** One event with its type: a discriminated union over every event type. */
export type SessionEvent = { [T in EventType]: { type: T; data: EventData<T> } }[EventType];
/** One journaled event with its type. */
export type CriticalEvent = Extract<SessionEvent, { type: CriticalEventType }>;

/** Journaled event types, in a fixed order. */
export const CRITICAL_EVENT_TYPES: readonly CriticalEventType[] = Object.freeze(Object.keys(CRITICAL_SCHEMAS) as CriticalEventType[]);
/** Memory-only event types, in a fixed order. */
export const RECOVERABLE_EVENT_TYPES: readonly RecoverableEventType[] = Object.freeze(Object.keys(RECOVERABLE_SCHEMAS) as RecoverableEventType[]);

/**
 * The schema version new events of each type are written with. Bump a type's
 * version when its data changes shape, and register an upcaster from the old
 * version in `eventUpcasters` so journaled events keep replaying.
 */
export const CURRENT_EVENT_VERSION: Readonly<Record<EventType, number>> = Object.freeze({
  user_message_sent: 1,
  command_executed: 1,
  system_notice_added: 1,
  assistant_stream_started: 1,
  assistant_response_completed: 1,
  stream_interrupted: 1,
  mcp_server_connected: 1,
  mcp_tool_executed: 1,
  session_config_changed: 1,
  permission_decided: 1,
  forked_from: 1,
  fork_created: 1,
  tool_call_started: 1,
  tool_call_finished: 1,
  tool_approval_requested: 1,
  command_started: 1,
  command_finished: 1,
  llm_chunk_received: 1,
  typing_indicator: 1,
  ui_state_changed: 1,
  cache_updated: 1,
});

/** True for a journaled event type (own keys only: `toString` is not a type). */
export function isCriticalEventType(type: string): type is CriticalEventType {
  return Object.hasOwn(CRITICAL_SCHEMAS, type);
}

/** True for a memory-only event type. */
export function isRecoverableEventType(type: string): type is RecoverableEventType {
  return Object.hasOwn(RECOVERABLE_SCHEMAS, type);
}

/** True for any known event type. */
export function isEventType(type: string): type is EventType {
  return isCriticalEventType(type) || isRecoverableEventType(type);
}

/** Where validation was called from, for the error. */
export interface ParseContext {
  sessionId?: string;
}

/** One validation problem, as carried in `details.issues`. */
export interface EventIssue {
  field: string;
  code: string;
  message: string;
}

const MAX_REPORTED_ISSUES = 10;

/** `data.a.b` for the issue's path; an unknown key is named itself (`data.stats.bogus`), not its parent. */
function fieldOf(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) path.push(issue.keys[0]);
  return path.length === 0 ? 'data' : `data.${path.join('.')}`;
}

function sessionLabel(context: ParseContext | undefined): string {
  return context?.sessionId === undefined ? 'an unnamed session' : `session ${context.sessionId}`;
}

/**
 * Validates `data` against the schema of `type` and returns the parsed value
 * (a fresh object: journal that, not the input).
 *
 * Throws ARBOR_INVALID_INPUT with `details.field` naming the first failing field
 * (`data.content`, `data.stats.chunks`, or `data` when the whole value is
 * wrong), or `type` when the type is unknown; `details` also has `eventType`,
 * `sessionId` and `issues`.
 */
export function parseEventData<T extends EventType>(type: T, data: unknown, context?: ParseContext): EventData<T> {
  // `type` often comes from outside (HTTP, a journal record): check it at run time too.
  const raw: unknown = type;
  if (typeof raw !== 'string' || !isEventType(raw)) {
    const shown = typeof raw === 'string' ? JSON.stringify(raw.slice(0, 100)) : typeof raw;
    throw new ArborError(ErrorCodes.INVALID_INPUT, `unknown event type ${shown} in ${sessionLabel(context)}`, {
      field: 'type',
      eventType: raw,
      sessionId: context?.sessionId,
      issues: [],
    });
  }
  const schema: z.ZodType = EVENT_SCHEMAS[type];
  const result = schema.safeParse(data);
  if (result.success) {
    const unfaithful = isCriticalEventType(type) && !isFaithful(result.data) ? unfaithfulValuePath(result.data) : undefined;
    if (unfaithful === undefined) return result.data as EventData<T>;
    throw new ArborError(ErrorCodes.INVALID_INPUT, `invalid ${unfaithful} in ${type} event of ${sessionLabel(context)}: ${JSON_VALUE_ERROR}`, {
      field: unfaithful,
      eventType: type,
      sessionId: context?.sessionId,
      issues: [{ field: unfaithful, code: 'custom', message: JSON_VALUE_ERROR }],
    });
  }
  const issues: EventIssue[] = result.error.issues
    .slice(0, MAX_REPORTED_ISSUES)
    .map((issue) => ({ field: fieldOf(issue), code: issue.code, message: issue.message }));
  // Invariant: a failed parse has at least one issue.
  const first = issues[0] ?? { field: 'data', code: 'custom', message: 'invalid' };
  throw new ArborError(
    ErrorCodes.INVALID_INPUT,
    `invalid ${first.field} in ${type} event of ${sessionLabel(context)}: ${first.message}`,
    { field: first.field, eventType: type, sessionId: context?.sessionId, issues },
  );
}

/** As parseEventData, for a type only known at run time; returns the typed event. */
export function parseEvent(type: string, data: unknown, context?: ParseContext): SessionEvent {
  return { type, data: parseEventData(type as EventType, data, context) } as SessionEvent;
}

/** Rewrites one event's data from version `fromVersion` to `fromVersion + 1`. */
export type DataUpcaster = (data: unknown) => unknown;

/** Options of an EventUpcasters registry. */
export interface EventUpcastersOptions {
  /** The current version of every known type; defaults to CURRENT_EVENT_VERSION. */
  currentVersions?: Readonly<Record<string, number>>;
  /**
   * Checks the data an upcaster chain produced, against the current schema.
   * The reducer trusts its input, so a buggy upcaster must be caught here.
   */
  validate?: (type: string, data: unknown, record: JournalRecord) => unknown;
}

/**
 * A registry of per-type, one-step data upcasters. Recovery calls `upcast` on
 * every journal record before the reducer sees it.
 */
export class EventUpcasters {
  readonly #current: Readonly<Record<string, number>>;
  readonly #validate: EventUpcastersOptions['validate'];
  /** `${type}@${fromVersion}` → step */
  readonly #steps = new Map<string, DataUpcaster>();

  constructor(options: EventUpcastersOptions = {}) {
    this.#current = options.currentVersions ?? CURRENT_EVENT_VERSION;
    this.#validate = options.validate;
  }

  /**
   * Registers the step from `fromVersion` to `fromVersion + 1` for `type`.
   * Throws TypeError for an unknown type or a second step from the same
   * version, RangeError for a version that is not below the current one.
   */
  register(type: string, fromVersion: number, fn: DataUpcaster): this {
    const current = this.#currentOf(type);
    if (current === undefined) throw new TypeError(`cannot register an upcaster for unknown event type ${JSON.stringify(type)}`);
    if (!Number.isSafeInteger(fromVersion) || fromVersion < 1 || fromVersion >= current) {
      throw new RangeError(`upcaster for ${type} from version ${fromVersion}: expected an integer in 1..${current - 1} (current version is ${current})`);
    }
    if (typeof fn !== 'function') throw new TypeError(`upcaster for ${type} from version ${fromVersion} is not a function`);
    const key = `${type}@${fromVersion}`;
    if (this.#steps.has(key)) throw new TypeError(`an upcaster for ${type} from version ${fromVersion} is already registered`);
    this.#steps.set(key, fn);
    return this;
  }

  /**
   * The record at the current version of its type: the same object when it is
   * already current, otherwise a copy with the upcast `data` and the new `v`.
   *
   * Throws ARBOR_INVALID_INPUT (`details.field` = `type` or `v`) for an unknown
   * type, a version newer than this code knows (written by a newer Arbor), or
   * a missing step; an upcaster that throws is wrapped with the same code and
   * the original as `cause`.
   */
  upcast(record: JournalRecord): JournalRecord {
    const current = this.#currentOf(record.type);
    const where = { eventType: record.type, version: record.v, sessionId: record.sid, seq: record.seq };
    if (current === undefined) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `unknown event type ${JSON.stringify(record.type)} at seq ${record.seq} of session ${record.sid}`, {
        field: 'type',
        ...where,
      });
    }
    // Fast path: every record written by this version of the code.
    if (record.v === current) return record;
    if (!Number.isSafeInteger(record.v) || record.v < 1 || record.v > current) {
      // Written by a newer Arbor (or damaged): guessing its shape would corrupt the state.
      throw new ArborError(
        ErrorCodes.INVALID_INPUT,
        `${record.type} event version ${record.v} at seq ${record.seq} of session ${record.sid} is newer than this code understands (current version ${current})`,
        { field: 'v', currentVersion: current, ...where },
      );
    }
    let data = record.data;
    for (let v = record.v; v < current; v++) {
      const step = this.#steps.get(`${record.type}@${v}`);
      if (step === undefined) {
        throw new ArborError(
          ErrorCodes.INVALID_INPUT,
          `no upcaster for ${record.type} from version ${v} to ${v + 1} (seq ${record.seq} of session ${record.sid})`,
          { field: 'v', currentVersion: current, missingFrom: v, ...where },
        );
      }
      try {
        data = step(data);
      } catch (err) {
        throw new ArborError(
          ErrorCodes.INVALID_INPUT,
          `upcaster for ${record.type} from version ${v} failed at seq ${record.seq} of session ${record.sid}`,
          { field: 'data', currentVersion: current, failedFrom: v, ...where },
          { cause: err },
        );
      }
    }
    const upcast: JournalRecord = { ...record, v: current, data };
    if (this.#validate !== undefined) upcast.data = this.#validate(record.type, data, upcast);
    return upcast;
  }

  #currentOf(type: string): number | undefined {
    return Object.hasOwn(this.#current, type) ? this.#current[type] : undefined;
  }
}

/**
 * Arbor's own registry: empty while every type is at version 1. Upcast data is
 * checked against the current schema (rare: only records older than the code).
 */
export const eventUpcasters = new EventUpcasters({
  validate: (type, data, record) => parseEventData(type as EventType, data, { sessionId: record.sid }),
});

/** The recovery hook: `record` at the current version of its type (see EventUpcasters.upcast). */
export const upcastJournalRecord = (record: JournalRecord): JournalRecord => eventUpcasters.upcast(record);
