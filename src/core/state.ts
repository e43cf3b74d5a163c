import { ArborError, ErrorCodes } from './errors.ts';
import type { JournalRecord } from './record.ts';
import { CURRENT_EVENT_VERSION, isCriticalEventType, isRecoverableEventType, parseEventData } from './events.ts';
import type { CriticalEventType, EventData } from './events.ts';

/**
 * The state of one session and the pure reducer that builds it from journaled
 * events. The state is immutable: every object and array the reducer creates
 * is frozen, and a new state shares everything it did not change with the old
 * one. Values that came from event data and are typed `unknown` (config
 * values, tool args and results) are shared with the record, not copied.
 */

/**
 * Version of the SessionState shape, written into every snapshot; older
 * snapshots are rewritten by {@link upcastSessionState} when read.
 * - 1: the first shape;
 * - 2: adds `createdAt` and `updatedAt`;
 * - 3: every message holds `parts` (beside `content`, its text), and a stream
 *   in flight holds the `parts` journaled so far in its turn.
 */
export const SESSION_STATE_VERSION = 3;

/** Who a message is from; `system` is used for notices such as an interrupted answer. */
export type MessageRole = 'user' | 'assistant' | 'system';

// ---------------------------------------------------------------------------
// Message parts. Each maps 1:1 onto a part of the AI SDK's UIMessage (ai@6):
// text → TextUIPart, reasoning → ReasoningUIPart, step-start → StepStartUIPart,
// tool → ToolUIPart (`type: 'tool-<toolName>'`) or, when `dynamic`, a
// DynamicToolUIPart (`type: 'dynamic-tool'`, `toolName`). See core/ui-message.ts.
// ---------------------------------------------------------------------------

/** A run of text. */
export interface TextPart {
  readonly type: 'text';
  readonly text: string;
}

/** The model's reasoning, shown apart from the answer. */
export interface ReasoningPart {
  readonly type: 'reasoning';
  readonly text: string;
}

/** The boundary of a step of a multi-step turn (a model call after tool results). */
export interface StepStartPart {
  readonly type: 'step-start';
}

/**
 * Where a tool call is: the states of the AI SDK's ToolUIPart. `input-streaming`
 * is never stored (the input is only journaled whole); it exists on the wire only.
 */
export type ToolPartState =
  | 'input-available'
  | 'approval-requested'
  | 'approval-responded'
  | 'output-available'
  | 'output-error'
  | 'output-denied';

/** The approval of one tool call: requested (`approved` absent), then answered. */
export interface ToolApproval {
  /** the approval's id, as the SDK's `tool-approval-request` chunk and `addToolApprovalResponse` carry it */
  readonly id: string;
  readonly approved?: boolean;
  readonly reason?: string;
}

/** One tool call of an answer, with its input and outcome. */
export interface ToolPart {
  readonly type: 'tool';
  readonly toolCallId: string;
  readonly toolName: string;
  /** true: shown as the SDK's `dynamic-tool` part (a tool whose schema is only known at run time, e.g. MCP); else `tool-<toolName>`. */
  readonly dynamic?: boolean;
  readonly title?: string;
  /** JSON; absent only if the call failed before its input was known */
  readonly input?: unknown;
  readonly state: ToolPartState;
  /** with state 'output-available' */
  readonly output?: unknown;
  /** with state 'output-error' */
  readonly errorText?: string;
  /**
   * 'unknown': the process stopped after the call was journaled as started and
   * before its finish, so whether it ran is unknown; state is 'output-error'
   * and `errorText` says so. Such a call is never re-run blindly.
   */
  readonly outcome?: 'unknown';
  readonly approval?: ToolApproval;
  /** the provider ran it (not Arbor) */
  readonly providerExecuted?: boolean;
}

/** One part of a message. */
export type MessagePart = TextPart | ReasoningPart | StepStartPart | ToolPart;

/** One visible message of the conversation. */
export interface Message {
  readonly id: string;
  readonly role: MessageRole;
  /** The message's text: its text parts joined (what /v1/sessions clients read). */
  readonly content: string;
  /** Its parts, in order (state version 3). A user or system message has text parts only. */
  readonly parts: readonly MessagePart[];
  /** seq of the event that produced it */
  readonly seq: number;
  /** wall-clock milliseconds of that event */
  readonly ts: number;
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** The latest decision on one permission. */
export interface PermissionEntry {
  readonly decision: 'granted' | 'denied';
  readonly scope?: 'once' | 'session' | 'always';
  /** seq of the decision */
  readonly seq: number;
  /** the tool call it answered (a `once` grant is good for that call alone) */
  readonly toolCallId?: string;
  /** wall-clock ms after which it no longer answers */
  readonly expiresAt?: number;
  /** who decided: tenant and token id */
  readonly decidedBy?: { readonly tenant?: string; readonly tokenId?: string };
  /** a `once` grant a call has started under: used up */
  readonly used?: boolean;
}

/** A tool call journaled as started and not yet finished: what recovery turns into an unknown outcome. */
export interface ToolCallInFlight {
  readonly messageId: string;
  readonly tool: string;
  readonly input: unknown;
  readonly idempotent: boolean;
  /** seq of its tool_call_started */
  readonly startedSeq: number;
}

/** A tool call waiting for an approval (the turn paused on it). */
export interface PendingApproval {
  readonly approvalId: string;
  readonly toolCallId: string;
  readonly messageId: string;
  readonly tool: string;
  readonly input: unknown;
  readonly reason: 'needs-approval' | 'repeat-of-unknown-outcome' | 'repeat-in-retried-turn';
  /** seq of its tool_approval_requested */
  readonly seq: number;
}

/** An MCP server the session connected, with the config it used. */
export interface McpServerEntry {
  readonly config: Readonly<Record<string, unknown>>;
  readonly connectedSeq: number;
}

/** One MCP tool call and its outcome. */
export interface ToolExecution {
  readonly executionId: string;
  readonly server: string;
  readonly tool: string;
  readonly args: unknown;
  readonly result?: unknown;
  readonly isError?: boolean;
  readonly durationMs?: number;
  readonly seq: number;
  readonly ts: number;
}

/** One slash command and its outcome. */
export interface CommandExecution {
  readonly commandId: string;
  readonly command: string;
  readonly args?: readonly unknown[];
  readonly result?: unknown;
  readonly error?: string;
  /**
   * How it ended (commands journaled with `command_started`/`command_finished`;
   * absent for a `command_executed` of older histories): `unknown` when the
   * process stopped while its handler ran. Such a command is never re-run by itself.
   */
  readonly outcome?: 'ok' | 'error' | 'unknown';
  /** the ArborError code the handler threw, with outcome `error` */
  readonly errorCode?: string;
  /** seq of its `command_started` */
  readonly startedSeq?: number;
  readonly durationMs?: number;
  /** seq of the event that ended it */
  readonly seq: number;
  readonly ts: number;
}

/** A command journaled as started and not yet finished: what recovery turns into an unknown outcome. */
export interface CommandInFlight {
  readonly command: string;
  readonly args?: readonly unknown[];
  /** seq of its `command_started` */
  readonly startedSeq: number;
}

/** An answer being streamed: what recovery turns into `stream_interrupted` if the process died. */
export interface StreamingState {
  readonly status: 'streaming';
  readonly messageId: string;
  readonly requestMessageId: string;
  readonly provider: string;
  readonly model?: string;
  /** seq of its `assistant_stream_started` */
  readonly startedSeq: number;
  readonly retryOf?: string;
  /**
   * The answer's parts journaled so far in this turn (tool calls, and text or
   * reasoning that preceded them), in order; the completion appends its own.
   */
  readonly parts: readonly MessagePart[];
}

/** Whether an answer is being streamed. */
export type StreamState = { readonly status: 'idle' } | StreamingState;

/** Everything a session is, rebuilt from its journaled events. Frozen. */
export interface SessionState {
  readonly id: string;
  /** seq of the last event applied; 0 before the first */
  readonly seq: number;
  readonly messages: readonly Message[];
  readonly config: Readonly<Record<string, unknown>>;
  readonly permissions: Readonly<Record<string, PermissionEntry>>;
  readonly mcpServers: Readonly<Record<string, McpServerEntry>>;
  readonly toolExecutions: readonly ToolExecution[];
  readonly commands: readonly CommandExecution[];
  readonly stream: StreamState;
  /**
   * Wall-clock ms (the event's `ts`) of the session's first committed event;
   * 0 before it. For a session that began under state version 1 it is the
   * earliest time that state still held (see {@link upcastSessionState}).
   */
  readonly createdAt: number;
  /** Wall-clock ms (the event's `ts`) of the session's last committed event; 0 before the first. */
  readonly updatedAt: number;
  /** Tool calls started and not finished, by toolCallId (absent: none ever started). */
  readonly toolCallsInFlight?: Readonly<Record<string, ToolCallInFlight>>;
  /** Commands started and not finished, by commandId (absent: none ever started). */
  readonly commandsInFlight?: Readonly<Record<string, CommandInFlight>>;
  /** Tool calls waiting for an approval, by approvalId (absent: none ever asked). */
  readonly pendingApprovals?: Readonly<Record<string, PendingApproval>>;
  /** Set by `forked_from`: the session this one was forked from, at which of its seqs, and the seq of the link. Absent otherwise. */
  readonly forkedFrom?: ForkLink;
  /** Appended by `fork_created`: the forks made of this session. Absent until the first. */
  readonly forks?: readonly ForkLink[];
}

/** One end of a fork (see `forked_from` / `fork_created`): the other session, the seq of the source it was cut at, and the seq of this event. */
export interface ForkLink {
  readonly sessionId: string;
  readonly atSeq: number;
  readonly seq: number;
}

/** The text a call of unknown outcome shows (its part's errorText) and the model is told on the next step. */
export const UNKNOWN_OUTCOME_TEXT =
  'The outcome of this tool call is unknown: the server stopped after the call started and before it finished. It may or may not have taken effect, and it was not run again.';

/** Tool calls journaled as started without a finish: recovery journals `tool_call_finished { outcome: 'unknown' }` for each. */
export function toolCallsInFlight(state: SessionState): { toolCallId: string; call: ToolCallInFlight }[] {
  const m = state.toolCallsInFlight;
  return m === undefined ? [] : Object.keys(m).map((toolCallId) => ({ toolCallId, call: m[toolCallId]! }));
}

/** Commands journaled as started without a finish: recovery journals `command_finished { outcome: 'unknown' }` for each. */
export function commandsInFlight(state: SessionState): { commandId: string; call: CommandInFlight }[] {
  const m = state.commandsInFlight;
  return m === undefined ? [] : Object.keys(m).map((commandId) => ({ commandId, call: m[commandId]! }));
}

/** The error text of a command of unknown outcome. */
export const UNKNOWN_COMMAND_OUTCOME_TEXT = 'The outcome of this command is unknown: the server stopped while its handler ran. It may or may not have taken effect, and it was not run again.';

/** Approvals the session waits for, oldest first. */
export function pendingApprovals(state: SessionState): PendingApproval[] {
  const m = state.pendingApprovals;
  return m === undefined ? [] : Object.values(m).sort((a, b) => a.seq - b.seq);
}

/** The text of the notice shown in place of an interrupted answer. */
export const INTERRUPTED_NOTICE_CONTENT = '⚠️ Response was interrupted. Retry to regenerate it.';

/** The id of the notice for the interrupted assistant message `messageId`. */
export function interruptedNoticeId(messageId: string): string {
  return `${messageId}:interrupted`;
}

/** The metadata of an interruption notice: what a retry re-sends. */
export interface InterruptedNoticeMetadata {
  readonly interrupted: true;
  readonly retryEnabled: true;
  readonly interruptedMessageId: string;
  readonly reason: string;
  /** `content` is absent only when the request is not in the state (a history that lost it). */
  readonly originalRequest: { readonly messageId: string; readonly content?: string };
}

/** The notice's metadata when `message` is an interruption notice. */
export function interruptedNoticeMetadata(message: Message): InterruptedNoticeMetadata | undefined {
  if (message.role !== 'system' || message.metadata?.interrupted !== true) return undefined;
  return message.metadata as unknown as InterruptedNoticeMetadata;
}

const IDLE: StreamState = Object.freeze({ status: 'idle' });
const EMPTY: readonly never[] = Object.freeze([]);
const EMPTY_RECORD: Readonly<Record<string, never>> = Object.freeze({});

/** A frozen text part. */
export function textPart(text: string): TextPart {
  return Object.freeze({ type: 'text', text });
}

/** The parts of a text-only message: one text part, or none for empty text. */
export function textParts(text: string): readonly MessagePart[] {
  return text.length === 0 ? EMPTY : Object.freeze([textPart(text)]);
}

/** The text of `parts`: their text parts joined (a message's `content`). */
export function textOfParts(parts: readonly MessagePart[]): string {
  let out = '';
  for (const p of parts) if (p.type === 'text') out += p.text;
  return out;
}

/** The tool part with this call id in `parts`, if any. */
export function findToolPart(parts: readonly MessagePart[], toolCallId: string): ToolPart | undefined {
  for (const p of parts) if (p.type === 'tool' && p.toolCallId === toolCallId) return p;
  return undefined;
}

/**
 * The changes to `state` that append `parts` to the answer in flight for
 * `messageId` (its `stream.parts`), or undefined when that answer is not the
 * one streaming. For reducer cases of events journaled during a turn (e.g. a
 * tool call that starts: the text that preceded it, then its tool part).
 */
export function appendStreamParts(state: SessionState, messageId: string, parts: readonly MessagePart[]): Partial<SessionState> | undefined {
  const s = matchingStream(state, messageId);
  if (s === undefined) return undefined;
  return { stream: Object.freeze({ ...s, parts: Object.freeze([...s.parts, ...parts.map((p) => frozen(p))]) }) };
}

/**
 * The changes to `state` that replace the tool part `toolCallId` with
 * `update(part)`: in the answer in flight if it is there, else in the latest
 * message that holds it (a call finished or decided after its turn ended, e.g.
 * by recovery or an approval). Undefined when no part has that id.
 */
export function updateToolPart(state: SessionState, toolCallId: string, update: (part: ToolPart) => ToolPart): Partial<SessionState> | undefined {
  const replace = (parts: readonly MessagePart[]): readonly MessagePart[] | undefined => {
    const i = parts.findIndex((p) => p.type === 'tool' && p.toolCallId === toolCallId);
    if (i < 0) return undefined;
    const copy = [...parts];
    copy[i] = frozen(update(parts[i] as ToolPart));
    return Object.freeze(copy);
  };
  if (state.stream.status === 'streaming') {
    const parts = replace(state.stream.parts);
    if (parts !== undefined) return { stream: Object.freeze({ ...state.stream, parts }) };
  }
  // A draft knows which message holds a call (the scan below is O(messages) for a call none holds: every new call).
  const held = drafting?.lastMessageWith(state.messages, toolCallId);
  if (held === -1) return undefined;
  if (held !== undefined) {
    const m = state.messages[held]!;
    const parts = replace(m.parts);
    if (parts !== undefined) return { messages: replaceAt(state.messages, held, Object.freeze({ ...m, parts })) };
  }
  for (let i = state.messages.length - 1; i >= 0; i--) {
    const m = state.messages[i]!;
    const parts = replace(m.parts);
    if (parts === undefined) continue;
    return { messages: replaceAt(state.messages, i, Object.freeze({ ...m, parts })) };
  }
  return undefined;
}

/** The state of session `id` before its first event. */
export function initialSessionState(id: string): SessionState {
  return Object.freeze({
    id,
    seq: 0,
    messages: EMPTY,
    config: EMPTY_RECORD,
    permissions: EMPTY_RECORD,
    mcpServers: EMPTY_RECORD,
    toolExecutions: EMPTY,
    commands: EMPTY,
    stream: IDLE,
    createdAt: 0,
    updatedAt: 0,
  });
}

/** The stream in flight, or undefined when idle. Recovery journals `stream_interrupted` for it. */
export function pendingInterruption(state: SessionState): StreamingState | undefined {
  return state.stream.status === 'streaming' ? state.stream : undefined;
}

/** The `stream_interrupted` data recovery journals for a stream left in flight, or undefined when idle. */
export function interruptionEventData(state: SessionState, reason: string): EventData<'stream_interrupted'> | undefined {
  const s = pendingInterruption(state);
  return s === undefined ? undefined : { messageId: s.messageId, requestMessageId: s.requestMessageId, reason };
}

/** The most recent message with this id. A backward scan: the messages looked up are nearly always recent. */
export function findMessage(state: SessionState, messageId: string): Message | undefined {
  for (let i = state.messages.length - 1; i >= 0; i--) {
    const m = state.messages[i];
    if (m !== undefined && m.id === messageId) return m;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Guards
//
// Why the reducer does not run the zod schemas: every critical event is
// validated with parseEventData before it is journaled, and the journal gives
// back exactly the bytes it wrote (each record is checksummed), so on replay
// the schema would re-check data that is known good. That costs ~0.25 µs for a
// small event but grows with the data (~2 ms for a 1,000-item tool result),
// and it would make a schema tightened later without a version bump refuse
// history written under the old rule, failing whole sessions on recovery.
//
// What the reducer does check, in O(1) per event: the type is a known critical
// type, the version is current (an un-upcast record would be misread), the
// record belongs to this session and moves its seq forward, and every field
// the reducer reads has the primitive type it relies on. So a record that
// would put garbage into the state (a bug, a hand-edited log) throws
// ARBOR_INVALID_INPUT and recovery reports the session as failed, instead of
// recovering it wrong. reduceSessionValidated runs the full schema for tools
// and tests that want it.
// ---------------------------------------------------------------------------

type Data = Record<string, unknown>;

function refuse(record: JournalRecord, field: string, problem: string): never {
  throw new ArborError(
    ErrorCodes.INVALID_INPUT,
    `cannot apply ${record.type} at seq ${record.seq} to session ${record.sid}: ${field} ${problem}`,
    { field, eventType: record.type, sessionId: record.sid, seq: record.seq, version: record.v },
  );
}

function isPlainObject(v: unknown): v is Data {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function needString(record: JournalRecord, d: Data, key: string): void {
  if (typeof d[key] !== 'string') refuse(record, `data.${key}`, 'is not a string');
}

function allowString(record: JournalRecord, d: Data, key: string): void {
  if (d[key] !== undefined && typeof d[key] !== 'string') refuse(record, `data.${key}`, 'is not a string');
}

function allowObject(record: JournalRecord, d: Data, key: string): void {
  if (d[key] !== undefined && !isPlainObject(d[key])) refuse(record, `data.${key}`, 'is not an object');
}

function allowParts(record: JournalRecord, d: Data): void {
  const parts = d.parts;
  if (parts === undefined) return;
  if (!Array.isArray(parts)) refuse(record, 'data.parts', 'is not an array');
  for (let i = 0; i < parts.length; i++) {
    const p: unknown = parts[i];
    if (!isPlainObject(p) || typeof p.type !== 'string') refuse(record, `data.parts.${i}`, 'is not a part');
    if ((p.type === 'text' || p.type === 'reasoning') && typeof p.text !== 'string') refuse(record, `data.parts.${i}.text`, 'is not a string');
  }
}

function allowBefore(record: JournalRecord, d: Data): void {
  if (d.before === undefined) return;
  allowParts(record, { parts: d.before });
}

/** Checks what the reducer relies on for `type` (see the note above); returns the data typed. */
function checkShape<T extends CriticalEventType>(record: JournalRecord, type: T): EventData<T> {
  const d = record.data;
  if (!isPlainObject(d)) refuse(record, 'data', 'is not an object');
  switch (type) {
    case 'user_message_sent':
      needString(record, d, 'messageId');
      needString(record, d, 'content');
      allowString(record, d, 'clientMessageId');
      allowObject(record, d, 'metadata');
      allowParts(record, d);
      break;
    case 'assistant_stream_started':
      needString(record, d, 'messageId');
      needString(record, d, 'requestMessageId');
      needString(record, d, 'provider');
      allowString(record, d, 'model');
      allowString(record, d, 'retryOf');
      break;
    case 'assistant_response_completed':
      needString(record, d, 'messageId');
      needString(record, d, 'requestMessageId');
      needString(record, d, 'content');
      allowObject(record, d, 'stats');
      allowParts(record, d);
      if (d.stopped !== undefined && d.stopped !== true) refuse(record, 'data.stopped', 'is not true');
      break;
    case 'stream_interrupted':
      needString(record, d, 'messageId');
      needString(record, d, 'requestMessageId');
      needString(record, d, 'reason');
      break;
    case 'session_config_changed':
      needString(record, d, 'key');
      if (!Object.hasOwn(d, 'newValue')) refuse(record, 'data.newValue', 'is missing');
      break;
    case 'permission_decided':
      needString(record, d, 'permission');
      if (d.decision !== 'granted' && d.decision !== 'denied') refuse(record, 'data.decision', "is not 'granted' or 'denied'");
      allowString(record, d, 'scope');
      break;
    case 'mcp_server_connected':
      needString(record, d, 'server');
      if (!isPlainObject(d.config)) refuse(record, 'data.config', 'is not an object');
      break;
    case 'mcp_tool_executed':
      needString(record, d, 'executionId');
      needString(record, d, 'server');
      needString(record, d, 'tool');
      break;
    case 'system_notice_added':
      needString(record, d, 'noticeId');
      needString(record, d, 'content');
      allowObject(record, d, 'metadata');
      break;
    case 'forked_from':
      needString(record, d, 'sourceId');
      if (typeof d.atSeq !== 'number') refuse(record, 'data.atSeq', 'is not a number');
      break;
    case 'fork_created':
      needString(record, d, 'forkId');
      if (typeof d.atSeq !== 'number') refuse(record, 'data.atSeq', 'is not a number');
      break;
    case 'command_executed':
      needString(record, d, 'commandId');
      needString(record, d, 'command');
      if (d.args !== undefined && !Array.isArray(d.args)) refuse(record, 'data.args', 'is not an array');
      break;
    case 'command_started':
      needString(record, d, 'commandId');
      needString(record, d, 'command');
      if (d.args !== undefined && !Array.isArray(d.args)) refuse(record, 'data.args', 'is not an array');
      break;
    case 'command_finished':
      needString(record, d, 'commandId');
      needString(record, d, 'command');
      if (d.outcome !== 'ok' && d.outcome !== 'error' && d.outcome !== 'unknown') refuse(record, 'data.outcome', "is not 'ok', 'error' or 'unknown'");
      allowString(record, d, 'error');
      allowString(record, d, 'errorCode');
      break;
    case 'tool_call_started':
    case 'tool_approval_requested':
      needString(record, d, 'messageId');
      needString(record, d, 'toolCallId');
      needString(record, d, 'tool');
      if (!Object.hasOwn(d, 'input')) refuse(record, 'data.input', 'is missing');
      allowBefore(record, d);
      if (type === 'tool_approval_requested') needString(record, d, 'approvalId');
      if (type === 'tool_call_started') allowObject(record, d, 'grant');
      break;
    case 'tool_call_finished':
      needString(record, d, 'messageId');
      needString(record, d, 'toolCallId');
      allowString(record, d, 'error');
      allowString(record, d, 'tool');
      allowBefore(record, d);
      break;
  }
  return d as EventData<T>;
}

/** A frozen copy of `value` without its undefined properties (absent, not undefined: a snapshot round trip keeps it equal). */
function frozen<T extends object>(value: T): Readonly<T> {
  const out: Record<string, unknown> = {};
  // for…in + hasOwn rather than Object.entries: no [key, value] pair per property (replay builds millions).
  for (const k in value) {
    if (!Object.hasOwn(value, k)) continue;
    const v = (value as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return Object.freeze(out) as Readonly<T>;
}

/** The draft being applied to, while one is (see {@link beginSessionDraft}): its own arrays change in place. */
let drafting: Draft | undefined;

function append<T>(list: readonly T[], item: T): readonly T[] {
  if (drafting !== undefined) return drafting.push(list, item);
  return Object.freeze([...list, item]);
}

// ---------------------------------------------------------------------------
// History stamps: which messages arrays extend which
//
// A cache of something made per message of the history (the session actor's
// prompt turns) wants to know, at each answer, which messages are new since it
// last looked, without comparing the whole history (a frozen array's elements
// are slow to read one by one in optimized code, and the history is long). The
// live reducer stamps each messages array it makes by appending: the arrays
// that share a stamp's `lineage` form one chain, each a prefix of the next,
// element for element. A second array appended to one that was appended to
// already (two different successors of one state, as when a commit that was
// reduced is not adopted), or appended to one without a stamp, starts a
// lineage of its own. An array with a message replaced, a draft's arrays and
// arrays from anywhere else (a snapshot, a copy) carry no stamp.
// ---------------------------------------------------------------------------

/** Where a messages array stands in its lineage: see {@link historyStamp}. */
export interface HistoryStamp {
  /** compared by identity only */
  readonly lineage: object;
  readonly length: number;
}

/**
 * Where an array's stamp is: a non-enumerable property under a symbol of this
 * module, set before the array is frozen, so no copy, comparison or encoding
 * of the state sees it (spreading, JSON, msgpack, structuredClone and
 * deepStrictEqual all skip it). A WeakMap was the first home, and its `set`
 * cost ~1 µs per append on a large heap.
 */
const STAMP = Symbol('arbor.historyStamp');

type Stamped = readonly Message[] & { readonly [STAMP]?: HistoryStamp & { extended: boolean } };

/**
 * The stamp of a messages array the live reducer made by appending, if it
 * did. Two arrays whose stamps have the same lineage: the shorter one's
 * messages are the first messages of the longer one, the same objects.
 */
export function historyStamp(messages: readonly Message[]): HistoryStamp | undefined {
  return (messages as Stamped)[STAMP];
}

/** `list` with `a` (and `b`) appended, stamped as its successor (in place in a draft's own array, unstamped). */
function appendToHistory(list: readonly Message[], a: Message, b?: Message): readonly Message[] {
  if (drafting !== undefined) return b === undefined ? drafting.push(list, a) : drafting.push(drafting.push(list, a), b);
  const longer = b === undefined ? [...list, a] : [...list, a, b];
  // An array without a stamp (frozen before it could get one) cannot be marked as extended: each successor starts a lineage.
  const base = (list as Stamped)[STAMP];
  const lineage = base === undefined || base.extended ? {} : base.lineage;
  if (base !== undefined) base.extended = true;
  Object.defineProperty(longer, STAMP, { value: { lineage, length: longer.length, extended: false } });
  return Object.freeze(longer);
}

/** `list` with `item` at index `i` (a copy, frozen; in place in a draft's own array). */
function replaceAt<T>(list: readonly T[], i: number, item: T): readonly T[] {
  if (drafting !== undefined) return drafting.replace(list, i, item);
  const copy = [...list];
  copy[i] = item;
  return Object.freeze(copy);
}

function put<T>(map: Readonly<Record<string, T>>, key: string, value: T): Readonly<Record<string, T>> {
  // A computed key defines an own property even for "__proto__" (the schemas refuse it anyway).
  return Object.freeze({ ...map, [key]: value });
}

/**
 * The state after one journaled event: pure, deterministic, never mutates
 * `state` or `record`; everything it creates is frozen.
 *
 * Expects the record at its current version (run upcastJournalRecord first)
 * and data validated at write time. Throws ARBOR_INVALID_INPUT for a
 * recoverable or unknown type (`details.field` = `type`), an old version
 * (`v`), another session's record (`sid`), a seq that does not move forward
 * (`seq`), or data whose fields the reducer reads have the wrong type
 * (`data.…`). Recovery reports such a session as failed.
 */
export function reduceSession(state: SessionState, record: JournalRecord): SessionState {
  const type = record.type;
  if (!isCriticalEventType(type)) {
    refuse(record, 'type', isRecoverableEventType(type) ? 'is a recoverable event, which is never journaled' : 'is not a known event type');
  }
  if (record.v !== CURRENT_EVENT_VERSION[type]) refuse(record, 'v', `is not the current version ${CURRENT_EVENT_VERSION[type]} (upcast it first)`);
  if (record.sid !== state.id) refuse(record, 'sid', `is not this session (${state.id})`);
  if (!Number.isSafeInteger(record.seq) || record.seq <= state.seq) refuse(record, 'seq', `does not follow the session's seq ${state.seq}`);

  const { seq, ts } = record;
  switch (type) {
    case 'user_message_sent': {
      const d = checkShape(record, type);
      const metadata = d.metadata === undefined && d.clientMessageId === undefined ? undefined : frozen({ ...d.metadata, clientMessageId: d.clientMessageId });
      const parts = d.parts === undefined ? textParts(d.content) : Object.freeze(d.parts.map((p) => frozen(p)));
      const message: Message = frozen({ id: d.messageId, role: 'user', content: d.content, parts, seq, ts, metadata });
      return next(state, record, { messages: appendToHistory(state.messages, message) });
    }
    case 'assistant_stream_started': {
      const d = checkShape(record, type);
      // A start while another stream is in flight replaces it: one stream per session at a time.
      const stream: StreamingState = frozen({
        status: 'streaming',
        messageId: d.messageId,
        requestMessageId: d.requestMessageId,
        provider: d.provider,
        model: d.model,
        startedSeq: seq,
        retryOf: d.retryOf,
        parts: EMPTY,
      });
      return next(state, record, { stream });
    }
    case 'assistant_response_completed': {
      const d = checkShape(record, type);
      const s = matchingStream(state, d.messageId);
      const usage = usageOf(d);
      const metadata = frozen({
        requestMessageId: d.requestMessageId,
        stats: d.stats === undefined ? undefined : frozen(d.stats),
        provider: s?.provider,
        model: s?.model,
        retryOf: s?.retryOf,
        finishReason: d.stats?.finishReason,
        usage,
        stopped: d.stopped,
      });
      const earlier = s?.parts ?? EMPTY;
      const parts = Object.freeze([...earlier, ...(d.parts === undefined ? textParts(restOfText(d.content, earlier)) : d.parts.map((p) => frozen(p)))]);
      const message: Message = frozen({ id: d.messageId, role: 'assistant', content: d.content, parts, seq, ts, metadata });
      return next(state, record, { messages: appendToHistory(state.messages, message), stream: s === undefined ? state.stream : IDLE });
    }
    case 'stream_interrupted': {
      const d = checkShape(record, type);
      const s = matchingStream(state, d.messageId);
      // An answer that journaled parts (tool calls) before it was interrupted is kept, partial, before the notice.
      const partial: Message | undefined =
        s === undefined || s.parts.length === 0
          ? undefined
          : Object.freeze({
              id: d.messageId,
              role: 'assistant',
              content: textOfParts(s.parts),
              parts: s.parts,
              seq,
              ts,
              metadata: frozen({ requestMessageId: d.requestMessageId, provider: s.provider, model: s.model, retryOf: s.retryOf, interrupted: true }),
            });
      const request = findMessage(state, d.requestMessageId);
      const metadata: InterruptedNoticeMetadata = Object.freeze({
        interrupted: true,
        retryEnabled: true,
        interruptedMessageId: d.messageId,
        reason: d.reason,
        originalRequest: frozen({ messageId: d.requestMessageId, content: request?.role === 'user' ? request.content : undefined }),
      });
      const notice: Message = Object.freeze({
        id: interruptedNoticeId(d.messageId),
        role: 'system',
        content: INTERRUPTED_NOTICE_CONTENT,
        parts: INTERRUPTED_NOTICE_PARTS,
        seq,
        ts,
        metadata: metadata as unknown as Readonly<Record<string, unknown>>,
      });
      const messages = partial === undefined ? appendToHistory(state.messages, notice) : appendToHistory(state.messages, partial, notice);
      return next(state, record, { messages, stream: s === undefined ? state.stream : IDLE });
    }
    case 'session_config_changed': {
      const d = checkShape(record, type);
      return next(state, record, { config: put(state.config, d.key, d.newValue) });
    }
    case 'permission_decided': {
      const d = checkShape(record, type);
      const entry: PermissionEntry = frozen({ decision: d.decision, scope: d.scope, seq, toolCallId: d.toolCallId, expiresAt: d.expiresAt, decidedBy: d.decidedBy === undefined ? undefined : frozen(d.decidedBy) });
      let changes: Changes = { permissions: put(state.permissions, d.permission, entry) };
      // An answer to an approval request: the request is settled and its tool part shows the answer.
      const approvalId = d.approvalId ?? (d.toolCallId === undefined ? undefined : pendingApprovals(state).find((p) => p.toolCallId === d.toolCallId)?.approvalId);
      const pending = approvalId === undefined ? undefined : state.pendingApprovals?.[approvalId];
      if (pending !== undefined) {
        changes.pendingApprovals = without(state.pendingApprovals!, pending.approvalId);
        const approved = d.decision === 'granted';
        const part = updateToolPart({ ...state, ...changes } as SessionState, pending.toolCallId, (p) => ({
          ...p,
          state: approved ? 'approval-responded' : 'output-denied',
          approval: frozen({ id: pending.approvalId, approved, reason: d.reason }),
        }));
        changes = { ...changes, ...part };
      }
      return next(state, record, changes);
    }
    case 'tool_call_started': {
      const d = checkShape(record, type);
      const call: ToolCallInFlight = Object.freeze({ messageId: d.messageId, tool: d.tool, input: d.input, idempotent: d.idempotent === true, startedSeq: seq });
      let changes: Changes = { toolCallsInFlight: put(state.toolCallsInFlight ?? EMPTY_RECORD, d.toolCallId, call) };
      // A `once` grant is used up by the call that runs under it (re-checked on replay: the next call asks again).
      const grant = d.grant === undefined ? undefined : state.permissions[d.grant.permission];
      if (grant !== undefined && grant.seq === d.grant!.seq && (grant.scope ?? 'once') === 'once') {
        changes.permissions = put(state.permissions, d.grant!.permission, frozen({ ...grant, used: true }));
      }
      const merged = { ...state, ...changes } as SessionState;
      // A call that waited for an approval already has its part (state approval-responded): it keeps it.
      const existing = updateToolPart(merged, d.toolCallId, (p) => p);
      const parts = existing ?? appendStreamParts(merged, d.messageId, [...(d.before ?? []), toolPartOf(d, 'input-available')]);
      return next(state, record, { ...changes, ...parts });
    }
    case 'tool_call_finished': {
      const d = checkShape(record, type);
      const inFlight = state.toolCallsInFlight;
      let changes: Partial<SessionState> = inFlight !== undefined && Object.hasOwn(inFlight, d.toolCallId) ? { toolCallsInFlight: without(inFlight, d.toolCallId) } : {};
      const merged = { ...state, ...changes } as SessionState;
      const finish = (p: ToolPart): ToolPart => {
        if (d.outcome === 'unknown') return { ...p, state: 'output-error', errorText: UNKNOWN_OUTCOME_TEXT, outcome: 'unknown' };
        if (d.error !== undefined) return { ...p, state: d.refused === 'denied' && p.approval !== undefined ? 'output-denied' : 'output-error', errorText: d.error };
        return { ...p, state: 'output-available', output: d.output };
      };
      const updated = updateToolPart(merged, d.toolCallId, finish);
      const parts = updated ?? (d.tool === undefined ? undefined : appendStreamParts(merged, d.messageId, [...(d.before ?? []), finish(toolPartOf({ toolCallId: d.toolCallId, tool: d.tool, input: d.input, dynamic: d.dynamic }, 'input-available'))]));
      changes = { ...changes, ...parts };
      return next(state, record, changes);
    }
    case 'tool_approval_requested': {
      const d = checkShape(record, type);
      const pending: PendingApproval = Object.freeze({ approvalId: d.approvalId, toolCallId: d.toolCallId, messageId: d.messageId, tool: d.tool, input: d.input, reason: d.reason, seq });
      const changes: Partial<SessionState> = { pendingApprovals: put(state.pendingApprovals ?? EMPTY_RECORD, d.approvalId, pending) };
      const merged = { ...state, ...changes } as SessionState;
      const ask = (p: ToolPart): ToolPart => ({ ...p, state: 'approval-requested', approval: frozen({ id: d.approvalId }) });
      const parts = updateToolPart(merged, d.toolCallId, ask) ?? appendStreamParts(merged, d.messageId, [...(d.before ?? []), ask(toolPartOf(d, 'input-available'))]);
      return next(state, record, { ...changes, ...parts });
    }
    case 'mcp_server_connected': {
      const d = checkShape(record, type);
      const entry: McpServerEntry = Object.freeze({ config: frozen(d.config), connectedSeq: seq });
      return next(state, record, { mcpServers: put(state.mcpServers, d.server, entry) });
    }
    case 'mcp_tool_executed': {
      const d = checkShape(record, type);
      const execution: ToolExecution = frozen({
        executionId: d.executionId,
        server: d.server,
        tool: d.tool,
        args: d.args,
        result: d.result,
        isError: d.isError,
        durationMs: d.durationMs,
        seq,
        ts,
      });
      return next(state, record, { toolExecutions: append(state.toolExecutions, execution) });
    }
    case 'system_notice_added': {
      const d = checkShape(record, type);
      const notice: Message = frozen({ id: d.noticeId, role: 'system', content: d.content, parts: textParts(d.content), seq, ts, metadata: d.metadata === undefined ? undefined : frozen(d.metadata) });
      return next(state, record, { messages: appendToHistory(state.messages, notice) });
    }
    case 'command_executed': {
      const d = checkShape(record, type);
      const command: CommandExecution = frozen({
        commandId: d.commandId,
        command: d.command,
        args: d.args === undefined ? undefined : Object.freeze([...d.args]),
        result: d.result,
        error: d.error,
        seq,
        ts,
      });
      return next(state, record, { commands: append(state.commands, command) });
    }
    case 'command_started': {
      const d = checkShape(record, type);
      const call: CommandInFlight = frozen({ command: d.command, args: d.args === undefined ? undefined : Object.freeze([...d.args]), startedSeq: seq });
      return next(state, record, { commandsInFlight: put(state.commandsInFlight ?? EMPTY_RECORD, d.commandId, call) });
    }
    case 'command_finished': {
      const d = checkShape(record, type);
      const inFlight = state.commandsInFlight;
      const call = inFlight !== undefined && Object.hasOwn(inFlight, d.commandId) ? inFlight[d.commandId] : undefined;
      const command: CommandExecution = frozen({
        commandId: d.commandId,
        command: d.command,
        args: call?.args,
        result: d.result,
        error: d.outcome === 'unknown' ? (d.error ?? UNKNOWN_COMMAND_OUTCOME_TEXT) : d.error,
        outcome: d.outcome,
        errorCode: d.errorCode,
        startedSeq: call?.startedSeq,
        durationMs: d.durationMs,
        seq,
        ts,
      });
      return next(state, record, { commands: append(state.commands, command), ...(call === undefined ? {} : { commandsInFlight: without(inFlight!, d.commandId) }) });
    }
    case 'forked_from': {
      const d = checkShape(record, type);
      return next(state, record, { forkedFrom: Object.freeze({ sessionId: d.sourceId, atSeq: d.atSeq, seq }) });
    }
    case 'fork_created': {
      const d = checkShape(record, type);
      return next(state, record, { forks: append(state.forks ?? EMPTY, Object.freeze({ sessionId: d.forkId, atSeq: d.atSeq, seq })) });
    }
    default: {
      // Unreachable while every critical type has a case; the compiler checks it.
      const unhandled: never = type;
      return refuse(record, 'type', `has no reducer case (${String(unhandled)})`);
    }
  }
}

const INTERRUPTED_NOTICE_PARTS = textParts(INTERRUPTED_NOTICE_CONTENT);

/** Token usage of a completed answer, for its metadata; undefined when the provider reported none. */
function usageOf(d: EventData<'assistant_response_completed'>): Readonly<Record<string, number>> | undefined {
  const st = d.stats;
  if (st === undefined) return undefined;
  const u = frozen({ inputTokens: st.inputTokens, outputTokens: st.outputTokens, totalTokens: st.totalTokens, reasoningTokens: st.reasoningTokens, cachedInputTokens: st.cachedInputTokens });
  return Object.keys(u).length === 0 ? undefined : (u as Readonly<Record<string, number>>);
}

/** `content` less the text the answer's earlier parts already hold (when it starts with it). */
function restOfText(content: string, earlier: readonly MessagePart[]): string {
  const prior = textOfParts(earlier);
  return prior.length > 0 && content.startsWith(prior) ? content.slice(prior.length) : content;
}

/** Changes to a state, built up by a reducer case. */
type Changes = { -readonly [K in keyof SessionState]?: SessionState[K] };

/** A new tool part for a call. */
function toolPartOf(d: { toolCallId: string; tool: string; input?: unknown; dynamic?: boolean | undefined }, state: ToolPart['state']): ToolPart {
  return frozen({ type: 'tool', toolCallId: d.toolCallId, toolName: d.tool, input: d.input, state, dynamic: d.dynamic === true ? true : undefined });
}

/** A frozen copy of `map` without `key`. */
function without<T>(map: Readonly<Record<string, T>>, key: string): Readonly<Record<string, T>> {
  const copy = { ...map };
  delete copy[key];
  return Object.freeze(copy);
}

/** The stream in flight when it is the one for `messageId`. An end for another message leaves it in flight. */
function matchingStream(state: SessionState, messageId: string): StreamingState | undefined {
  return state.stream.status === 'streaming' && state.stream.messageId === messageId ? state.stream : undefined;
}

function next(state: SessionState, record: JournalRecord, changes: Partial<SessionState>): SessionState {
  const { seq, ts } = record;
  // createdAt is set by the first event; also by the next one for a v1 session whose upcast found no time (0).
  const createdAt = state.createdAt === 0 ? ts : state.createdAt;
  if (drafting !== undefined) return drafting.update(state, changes, seq, createdAt, ts);
  return Object.freeze({ ...state, ...changes, seq, createdAt, updatedAt: ts });
}

/**
 * As reduceSession, after checking `record.data` against the full schema of its
 * type (ARBOR_INVALID_INPUT naming the field). For verification tools and
 * tests; replay uses reduceSession (see the note on guards).
 */
export function reduceSessionValidated(state: SessionState, record: JournalRecord): SessionState {
  if (!isCriticalEventType(record.type)) return reduceSession(state, record); // refuses it, with the reason
  const data = parseEventData(record.type, record.data, { sessionId: record.sid });
  return reduceSession(state, { ...record, data });
}

// ---------------------------------------------------------------------------
// State upcasters: a snapshot written under an older SESSION_STATE_VERSION is
// rewritten, one version step at a time, into the current shape when read.
// Each step is pure and knows only what the older state holds.
// ---------------------------------------------------------------------------

/** The earliest and latest `ts` a v1 state still holds (messages, tool executions, commands); 0 when none. */
function knownTimes(state: Data): { first: number; last: number } {
  let first = 0;
  let last = 0;
  for (const key of ['messages', 'toolExecutions', 'commands']) {
    const list = state[key];
    if (!Array.isArray(list)) continue;
    for (const item of list) {
      const ts = isPlainObject(item) ? item.ts : undefined;
      if (typeof ts !== 'number' || !Number.isFinite(ts) || ts <= 0) continue;
      if (first === 0 || ts < first) first = ts;
      if (ts > last) last = ts;
    }
  }
  return { first, last };
}

/**
 * v1 → v2: adds `createdAt` and `updatedAt` from the timestamps the v1 state
 * holds. It cannot know the times of events that left no timestamp in the
 * state (config changes, permission decisions, MCP connections, the start of
 * a stream): so `createdAt` may be later than the true first event and
 * `updatedAt` earlier than the true last one, and both are 0 for a session
 * with no message, tool execution or command. The next event sets `updatedAt`
 * exactly (and `createdAt` when it is 0).
 */
function stateV1toV2(state: Data): Data {
  const { first, last } = knownTimes(state);
  return { ...state, createdAt: first, updatedAt: last };
}

/**
 * v2 → v3: every message gets `parts`: one text part holding its content (none
 * for an empty answer), which is all a v2 message could be; a stream in flight
 * gets `parts: []` (nothing but text existed, and text is only journaled on
 * completion). `content` stays as it was.
 */
function stateV2toV3(state: Data): Data {
  const messages = Array.isArray(state.messages)
    ? Object.freeze(
        state.messages.map((m: unknown) =>
          isPlainObject(m) && !Array.isArray(m.parts) ? Object.freeze({ ...m, parts: textParts(typeof m.content === 'string' ? m.content : '') }) : m,
        ),
      )
    : state.messages;
  const stream = isPlainObject(state.stream) && state.stream.status === 'streaming' && !Array.isArray(state.stream.parts) ? Object.freeze({ ...state.stream, parts: EMPTY }) : state.stream;
  return { ...state, messages, stream };
}

const STATE_UPCASTERS: Readonly<Record<number, (state: Data) => Data>> = Object.freeze({ 1: stateV1toV2, 2: stateV2toV3 });

/**
 * A session state stored under state version `fromVersion` (a snapshot), in
 * the current shape ({@link SESSION_STATE_VERSION}), frozen at the top level.
 * Throws ARBOR_INVALID_INPUT (`details.field` = `stateSchemaVersion`, or
 * `state` when it is not an object) for a version it has no way from;
 * recovery reports that session as failed.
 */
export function upcastSessionState(state: unknown, fromVersion: number): SessionState {
  if (!isPlainObject(state)) {
    throw new ArborError(ErrorCodes.INVALID_INPUT, `a session state of version ${fromVersion} is not an object`, { field: 'state', stateSchemaVersion: fromVersion });
  }
  const refuse = (why: string): never => {
    throw new ArborError(ErrorCodes.INVALID_INPUT, `session ${String(state.id)}: state version ${fromVersion} ${why}`, { field: 'stateSchemaVersion', sessionId: state.id, stateSchemaVersion: fromVersion });
  };
  if (!Number.isSafeInteger(fromVersion) || fromVersion < 1) refuse('is not a version');
  if (fromVersion > SESSION_STATE_VERSION) refuse(`is newer than this build's ${SESSION_STATE_VERSION}`);
  let s: Data = state;
  for (let v = fromVersion; v < SESSION_STATE_VERSION; v += 1) {
    const step = STATE_UPCASTERS[v] ?? refuse(`has no upcaster to ${v + 1}`);
    s = step(s);
  }
  return Object.freeze(s) as unknown as SessionState;
}

// ---------------------------------------------------------------------------
// Drafts: replay without copying the history at every event
//
// reduceSession copies `messages` (and the other lists that grow with the
// session) at every event, so folding it over n events copies ~n²/2 slots.
// Replay never shows its intermediate states to anyone, so a draft builds the
// state with the same reducer code but appends to, and replaces items in, the
// arrays it made itself, in place. Only those: an array it did not make (the
// start state's, a snapshot's, an EMPTY constant, a message's parts) is
// copied once, and the copy is its own from then on. `seal` freezes its
// arrays and hands out the state: equal to what folding reduceSession gives,
// and as frozen (every other object is made frozen by the reducer; values
// taken from event data are shared with the records, as reduceSession does).
//
// A throw cannot leave a half-applied draft: every in-place change of one
// `apply` is logged and undone when the reducer throws, so the draft is then
// exactly as it was before the record (today's reducer changes nothing in
// place before every check of the record has passed, but that is not relied on).
// ---------------------------------------------------------------------------

/** A session state being built in place by a replay: see {@link beginSessionDraft}. */
export interface SessionDraft {
  /**
   * Applies one record (at its current version) as {@link reduceSession}
   * would, and throws what it would throw; after a throw the draft is as it
   * was before the call.
   */
  apply(record: JournalRecord): void;
  /**
   * The state so far: deep-frozen, equal to folding reduceSession over the
   * same records. The draft may go on applying (its next change copies what
   * was sealed, once).
   */
  seal(): SessionState;
}

/**
 * A draft of `state` for replaying many records of one session at a cost
 * linear in their number: apply them, then seal. For replay only (nobody may
 * see a state until it is sealed); the live path uses reduceSession.
 */
export function beginSessionDraft(state: SessionState): SessionDraft {
  return new Draft(state);
}

/** An undo entry's old value for a property the state object did not have. */
const ABSENT = Symbol('absent');

class Draft implements SessionDraft {
  #state: SessionState;
  /** the state object this draft made (not frozen yet): the one it changes in place, as its arrays */
  #ownState: SessionState | undefined;
  /** the arrays this draft made: the only ones it changes in place */
  readonly #owned = new Set<unknown[]>();
  /**
   * The in-place changes of the current `apply`, as (array, index or -1 for a
   * push, old value or old length) or (state object, property, old value or
   * ABSENT).
   */
  readonly #undo: unknown[] = [];
  /** toolCallId → index of the latest message holding its part, over the first `#indexed` messages */
  readonly #byToolCall = new Map<string, number>();
  #indexed = 0;

  constructor(state: SessionState) {
    this.#state = state;
  }

  apply(record: JournalRecord): void {
    const outer = drafting;
    drafting = this;
    try {
      this.#state = reduceSession(this.#state, record);
    } catch (err) {
      this.#rollBack();
      throw err;
    } finally {
      drafting = outer;
      this.#undo.length = 0;
    }
  }

  seal(): SessionState {
    for (const list of this.#owned) Object.freeze(list);
    this.#owned.clear();
    if (this.#ownState !== undefined) Object.freeze(this.#ownState);
    this.#ownState = undefined;
    return this.#state;
  }

  /**
   * `state` with `changes` and the record's seq and times, as `next` makes it
   * on the live path: in place when the draft made `state` (no object spread
   * per event: ~7% of a replay's time), else a copy it owns from now on.
   */
  update(state: SessionState, changes: Partial<SessionState>, seq: number, createdAt: number, updatedAt: number): SessionState {
    if (state !== this.#ownState) {
      const copy: SessionState = { ...state, ...changes, seq, createdAt, updatedAt };
      this.#ownState = copy;
      return copy;
    }
    const target = state as unknown as Record<string, unknown>;
    for (const key in changes) this.#setProperty(target, key, (changes as Record<string, unknown>)[key]);
    this.#setProperty(target, 'seq', seq);
    this.#setProperty(target, 'createdAt', createdAt);
    this.#setProperty(target, 'updatedAt', updatedAt);
    return state;
  }

  #setProperty(target: Record<string, unknown>, key: string, value: unknown): void {
    this.#undo.push(target, key, Object.hasOwn(target, key) ? target[key] : ABSENT);
    target[key] = value;
  }

  /** `list` with `item` appended: in place when the draft made `list`, else a copy it owns from now on. */
  push<T>(list: readonly T[], item: T): readonly T[] {
    if (this.#owned.has(list as unknown[])) {
      this.#undo.push(list, -1, list.length);
      (list as T[]).push(item);
      return list;
    }
    const copy = [...list, item];
    this.#owned.add(copy);
    return copy;
  }

  /** `list` with `item` at `i`: in place when the draft made `list`, else a copy it owns from now on. */
  replace<T>(list: readonly T[], i: number, item: T): readonly T[] {
    if (this.#owned.has(list as unknown[])) {
      this.#undo.push(list, i, list[i]);
      (list as T[])[i] = item;
      return list;
    }
    const copy = [...list];
    copy[i] = item;
    this.#owned.add(copy);
    return copy;
  }

  /**
   * The index of the latest of `messages` (the draft's own, as the reducer
   * sees them) holding the tool part `toolCallId`, or -1. Messages are only
   * appended and their parts replaced by parts of the same call, so the index
   * only ever has to take in the messages appended since the last call.
   */
  lastMessageWith(messages: readonly Message[], toolCallId: string): number {
    if (messages.length < this.#indexed) this.#forgetIndex();
    for (let i = this.#indexed; i < messages.length; i++) {
      const parts = messages[i]?.parts;
      if (!Array.isArray(parts)) continue;
      for (const p of parts as readonly MessagePart[]) if (p.type === 'tool') this.#byToolCall.set(p.toolCallId, i);
    }
    this.#indexed = messages.length;
    return this.#byToolCall.get(toolCallId) ?? -1;
  }

  #forgetIndex(): void {
    this.#byToolCall.clear();
    this.#indexed = 0;
  }

  #rollBack(): void {
    this.#forgetIndex();
    const u = this.#undo;
    for (let k = u.length - 3; k >= 0; k -= 3) {
      const target = u[k] as Record<number | string, unknown> & { length: number };
      const at = u[k + 1] as number | string;
      const old = u[k + 2];
      if (at === -1) target.length = old as number;
      else if (old === ABSENT) delete target[at];
      else target[at] = old;
    }
  }
}
