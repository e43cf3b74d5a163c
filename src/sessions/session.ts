import { ArborError, ErrorCodes } from '../core/errors.ts';
import { initialSessionState, type SessionState } from '../core/state.ts';
import type { EventData } from '../core/events.ts';
import type { JournalRecord } from '../core/record.ts';
import type { SessionBackend } from '../backend/backend.ts';
import type { SessionActor, SessionUpdate } from './session-actor.ts';
import type { Chunk } from './chunk-buffer.ts';
import { toUIMessage, type UIMessageShape } from '../core/ui-message.ts';
import { uiChunksOfAnswer, type TurnLog, type UIChunk } from './turn-log.ts';
import { INTERRUPTED_NOTICE_CONTENT } from '../core/state.ts';

/** What a session handle needs of the runtime that made it. */
export interface SessionHost {
  /** True once close() has begun: intake stops. */
  readonly closing: boolean;
  readonly backend: SessionBackend<SessionState>;
  fork(sid: string, options: { id?: string; atSeq?: number }): Promise<Session>;
  deleteSession(sid: string): Promise<void>;
}

/** Runtime-internal: tells a session handle the state its session was dropped from memory with. */
export const REMEMBER = Symbol('remember');

/**
 * A session as applications use it. Every method goes through the session's
 * mailbox; every write resolves only once its event is durable.
 */
export class Session {
  readonly id: string;
  readonly #arbor: SessionHost;
  readonly #actor: () => SessionActor;
  readonly #peek: () => SessionState | undefined;
  readonly #pending: () => boolean;
  #last: SessionState;

  /** Made by `arbor.session(id)`; not meant to be constructed by applications. */
  constructor(id: string, arbor: SessionHost, actor: () => SessionActor, peek: () => SessionState | undefined, pending: () => boolean) {
    this.id = id;
    this.#arbor = arbor;
    this.#actor = actor;
    this.#peek = peek;
    this.#pending = pending;
    this.#last = peek() ?? initialSessionState(id);
  }

  [REMEMBER](state: SessionState): void {
    this.#last = state;
  }

  /** Runs a command on the actor; intake stops when close() begins (ARBOR_CLOSED). */
  #command<T>(run: (actor: SessionActor) => Promise<T>): Promise<T> {
    if (this.#arbor.closing) return Promise.reject(new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new commands`, { sessionId: this.id }));
    return run(this.#actor());
  }

  /**
   * The committed state (immutable). A session dropped from memory shows the
   * state it was dropped with. Right after a restart, a session the
   * background pass has not reached yet throws ARBOR_NOT_LOADED: `await
   * session.load()` (or any command) recovers it at once.
   */
  get state(): SessionState {
    const hot = this.#peek();
    if (hot !== undefined) this.#last = hot;
    else if (this.#pending()) {
      throw new ArborError(ErrorCodes.NOT_LOADED, `session ${this.id} is still being recovered; await session.load() first`, { sessionId: this.id });
    }
    return this.#last;
  }

  /**
   * The history as the AI SDK's `UIMessage[]` (structurally; cast to your
   * `UIMessage` type), with parts: what `useChat({ messages })` takes. Reads
   * `state`, so the same rules apply (load() first after a restart).
   */
  uiMessages(): UIMessageShape[] {
    return this.state.messages.map(toUIMessage);
  }

  /**
   * The committed state, recovering the session first if needed (on first
   * access after a restart: its snapshot and journal records, and the
   * interrupted turns the last process death left). Works while closing.
   */
  async load(): Promise<SessionState> {
    await this.#actor().run('load', async () => undefined, true);
    return this.state;
  }

  /**
   * Sends the user's message. Resolves with `{ messageId, seq }` once the
   * message is durable, and starts the assistant's streamed answer. A retried
   * `clientMessageId` resolves with the original message and starts nothing.
   */
  async sendMessage(input: { content: string; clientMessageId?: string; metadata?: Record<string, unknown> }): Promise<{ messageId: string; seq: number; duplicate: boolean }> {
    const { messageId, seq, duplicate } = await this.#command((a) => a.sendMessage(input.content, input.clientMessageId, input.metadata));
    return { messageId, seq, duplicate };
  }

  /**
   * As sendMessage, for a message made of text parts (an AI SDK UIMessage's:
   * `content` is their text joined), and with the answer's UI message stream
   * (AI SDK protocol v1 chunks) from its first chunk, live until it ends. A
   * retried `clientMessageId` starts nothing: its stream is the original
   * answer's, live while it streams, else rebuilt from the state.
   */
  async sendMessageStream(input: {
    parts: readonly { type: 'text'; text: string }[];
    clientMessageId?: string;
    metadata?: Record<string, unknown>;
    signal?: AbortSignal;
  }): Promise<{ messageId: string; seq: number; duplicate: boolean; stream: AsyncIterable<UIChunk> }> {
    const content = input.parts.map((p) => p.text).join('');
    const r = await this.#command((a) => a.sendMessage(content, input.clientMessageId, input.metadata, input.parts));
    const stream = r.turn !== undefined && !r.turn.ended ? r.turn.read(input.signal) : this.#answerStream(r.messageId, input.signal);
    return { messageId: r.messageId, seq: r.seq, duplicate: r.duplicate, stream };
  }

  /**
   * The UI message stream of the answer to the user message
   * `requestMessageId`: live from its first chunk while it is queued or
   * streaming, else rebuilt from the state (its last answer, or its
   * interruption as an error); empty when it has none. What a client that
   * answered a tool approval reads the resumed turn with.
   */
  answerStream(requestMessageId: string, options: { signal?: AbortSignal } = {}): AsyncIterable<UIChunk> {
    return this.#answerStream(requestMessageId, options.signal);
  }

  /** The stream of the answer to `requestMessageId` already in the state: rebuilt from it (its interruption as an error). */
  async *#answerStream(requestMessageId: string, signal: AbortSignal | undefined): AsyncGenerator<UIChunk, void, undefined> {
    // Waits for a turn that is still being ended (its terminal event being journaled).
    const turn = this.#actor().currentTurn();
    if (turn !== undefined && turn.requestMessageId === requestMessageId) {
      yield* turn.read(signal);
      return;
    }
    const state = this.state;
    for (let i = state.messages.length - 1; i >= 0; i -= 1) {
      const m = state.messages[i]!;
      if (m.role === 'assistant' && m.metadata?.requestMessageId === requestMessageId) {
        yield* uiChunksOfAnswer(m);
        return;
      }
      const notice = m.role === 'system' && m.metadata?.interrupted === true ? m : undefined;
      if (notice !== undefined && (notice.metadata?.originalRequest as { messageId?: unknown } | undefined)?.messageId === requestMessageId) {
        yield { type: 'start', messageId: String(notice.metadata?.interruptedMessageId ?? notice.id) };
        yield { type: 'error', errorText: `${INTERRUPTED_NOTICE_CONTENT} (${String(notice.metadata?.reason ?? 'interrupted')})` };
        return;
      }
    }
    // Not answered yet and not queued here (e.g. the process restarted meanwhile): nothing to send.
  }

  /** Regenerates the last answer (the interrupted one first). */
  async retry(): Promise<{ requestMessageId: string; retryOf: string | undefined }> {
    const { requestMessageId, retryOf } = await this.#command((a) => a.retry());
    return { requestMessageId, retryOf };
  }

  /** As retry, with the new answer's UI message stream from its first chunk. */
  async retryStream(options: { signal?: AbortSignal } = {}): Promise<{ requestMessageId: string; retryOf: string | undefined; stream: AsyncIterable<UIChunk> }> {
    const { requestMessageId, retryOf, turn } = await this.#command((a) => a.retry());
    return { requestMessageId, retryOf, stream: turn.read(options.signal) };
  }

  /**
   * The UI message stream of the answer queued or streaming now, from its
   * first chunk, then live until it ends; undefined when there is none. What
   * a client that reloaded resumes with.
   */
  resumeStream(options: { signal?: AbortSignal } = {}): AsyncIterable<UIChunk> | undefined {
    if (this.#arbor.closing) return undefined;
    const turn: TurnLog | undefined = this.#actor().currentTurn();
    return turn === undefined ? undefined : turn.read(options.signal);
  }

  /**
   * Ends the answer streaming now on purpose: the provider request is
   * aborted, and the partial answer is kept as the final one with
   * `metadata.stopped: true` (one terminal event). Resolves once that is
   * durable; `stopped: false` when nothing was streaming.
   */
  stop(): Promise<{ stopped: boolean; messageId: string | undefined }> {
    return this.#command((a) => a.stop());
  }

  changeConfig(key: string, value: unknown): Promise<{ seq: number }> {
    return this.#command((a) => a.changeConfig(key, value));
  }

  /**
   * Journals a permission decision (`permission_decided`, with `decidedBy`,
   * `scope` once|session|always and `expiresAt`). With `approvalId` (or
   * `toolCallId`) it answers a pending tool approval and, once none of that
   * answer is pending, the paused turn continues (docs/tools.md).
   */
  decidePermission(decision: Omit<EventData<'permission_decided'>, 'permission'> & { permission?: string }): Promise<{ seq: number }> {
    return this.#command((a) => a.decidePermission(decision));
  }

  recordToolExecution(event: { type: 'mcp_server_connected'; data: EventData<'mcp_server_connected'> } | { type: 'mcp_tool_executed'; data: EventData<'mcp_tool_executed'> }): Promise<{ seq: number }> {
    return this.#command((a) => a.recordToolExecution(event));
  }

  /**
   * Runs the registered handler `command` with `args`, intent first:
   * `command_started` is durable before the handler is called, and
   * `command_finished` (ok, or error) after it; a process death in between
   * leaves the outcome unknown, and it is never re-run by itself
   * (docs/durability.md). `commandId` is an idempotency key: a command
   * already journaled under it is not run again: its recorded result comes
   * back (`duplicate: true`), or its recorded failure, or
   * ARBOR_COMMAND_OUTCOME_UNKNOWN; the same key with another command or other
   * arguments is ARBOR_IDEMPOTENCY_MISMATCH.
   */
  executeCommand(command: string, args: readonly unknown[] = [], options: { commandId?: string } = {}): Promise<{ commandId: string; seq: number; result: unknown; duplicate: boolean }> {
    return this.#command((a) => a.executeCommand(command, args, options));
  }

  /**
   * Sends a recoverable event (`typing_indicator`, `ui_state_changed`,
   * `cache_updated`) to this session's subscribers. Validated (ARBOR_INVALID_INPUT
   * naming the field), never written to disk, not part of the state.
   */
  publish<T extends 'typing_indicator' | 'ui_state_changed' | 'cache_updated'>(type: T, data: EventData<T>): void {
    if (this.#arbor.closing) throw new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new events`, { sessionId: this.id });
    this.#actor().publishRecoverable(type, data);
  }

  /** Committed events, stream chunks and recoverable events as they happen; returns the unsubscribe function. */
  subscribe(listener: (update: SessionUpdate) => void): () => void {
    return this.#actor().subscribe(listener);
  }

  /** Buffered chunks of a streaming message from `fromIndex`: what a reconnecting client missed. */
  chunks(messageId: string, fromIndex = 0): Chunk[] {
    return this.#actor().chunksSince(messageId, fromIndex);
  }

  /**
   * Journaled events with seq ≥ `fromSeq` that no snapshot has released yet,
   * in order (older ones are summarised by `state`).
   */
  events(options: { fromSeq?: number } = {}): Promise<JournalRecord[]> {
    return this.#arbor.backend.read(this.id, options.fromSeq ?? 1);
  }

  /**
   * A new session (same tenant) holding this one's state as it stood after
   * event `atSeq` (default: the last): see `arbor.fork`. `id` is the new
   * session's id (default: a random UUID).
   */
  fork(options: { id?: string; atSeq?: number } = {}): Promise<Session> {
    if (this.#arbor.closing) return Promise.reject(new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new commands`, { sessionId: this.id }));
    return this.#arbor.fork(this.id, options);
  }

  /**
   * Deletes the session (see `Arbor.deleteSession`): a streaming answer ends
   * first; resolves once the delete is durable. ARBOR_SESSION_NOT_FOUND when
   * it has no event.
   */
  delete(): Promise<void> {
    if (this.#arbor.closing) return Promise.reject(new ArborError(ErrorCodes.CLOSED, `arbor is closing; session ${this.id} takes no new commands`, { sessionId: this.id }));
    return this.#arbor.deleteSession(this.id);
  }

  /** Resolves when the commands queued so far and every answer they started have ended (completed or interrupted). */
  idle(): Promise<void> {
    return this.#actor().settled();
  }
}
