import { ArborError, ErrorCodes } from '../core/errors.ts';
import { initialSessionState, type SessionState } from '../core/state.ts';
import type { EventData } from '../core/events.ts';
import type { JournalRecord } from '../core/record.ts';
import type { SessionBackend } from '../backend/backend.ts';
import type { SessionActor, SessionUpdate } from './session-actor.ts';
import type { Chunk } from './chunk-buffer.ts';

/** What a session handle needs of the runtime that made it. */
export interface SessionHost {
  /** True once close() has begun: intake stops. */
  readonly closing: boolean;
  readonly backend: SessionBackend<SessionState>;
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
  sendMessage(input: { content: string; clientMessageId?: string; metadata?: Record<string, unknown> }): Promise<{ messageId: string; seq: number; duplicate: boolean }> {
    return this.#command((a) => a.sendMessage(input.content, input.clientMessageId, input.metadata));
  }

  /** Regenerates the last answer (the interrupted one first). */
  retry(): Promise<{ requestMessageId: string; retryOf: string | undefined }> {
    return this.#command((a) => a.retry());
  }

  changeConfig(key: string, value: unknown): Promise<{ seq: number }> {
    return this.#command((a) => a.changeConfig(key, value));
  }

  decidePermission(decision: EventData<'permission_decided'>): Promise<{ seq: number }> {
    return this.#command((a) => a.decidePermission(decision));
  }

  recordToolExecution(event: { type: 'mcp_server_connected'; data: EventData<'mcp_server_connected'> } | { type: 'mcp_tool_executed'; data: EventData<'mcp_tool_executed'> }): Promise<{ seq: number }> {
    return this.#command((a) => a.recordToolExecution(event));
  }

  executeCommand(command: string, args: readonly unknown[] = []): Promise<{ commandId: string; seq: number; result: unknown }> {
    return this.#command((a) => a.executeCommand(command, args));
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
